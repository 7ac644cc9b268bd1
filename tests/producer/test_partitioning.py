"""Partitioners on the real broker: roundrobin, hash (as Sarama picks), random."""

from __future__ import annotations

import collections
from collections.abc import Callable

from tests.producer._util import consume
from tests.producer.test_partitioner import TABLE
from trpc_kafka._producer import ProducerMessage, new_client_proxy

NewTopic = Callable[..., str]


async def test_roundrobin_cycles_the_partitions_evenly(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=4)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?partitioner=roundrobin")
    partitions = [(await proxy.send_message(topic, b"same-key", b"v"))[0] for _ in range(12)]
    assert partitions == [0, 1, 2, 3] * 3
    await proxy.async_send_message(topic, None, b"async")
    (p, _) = await proxy.send_message(topic, None, b"v")
    assert p == 1  # the async send took partition 0 of the next cycle
    assert proxy.send_message_sync(topic, None, b"sync")[0] == 2


async def test_hash_picks_saramas_partition(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=6)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?partitioner=hash")
    rows = [r for r in TABLE if r["partitions"] == 6]
    assert len(rows) > 50
    for row in rows:
        key = bytes.fromhex(str(row["key_hex"]))
        partition, _ = await proxy.send_message(topic, key, b"v")
        assert partition == row["partition"], row
    # Equal keys, equal partitions, whichever call sends them.
    key = bytes.fromhex(str(rows[7]["key_hex"]))
    await proxy.async_send_message(topic, key, b"async")
    assert proxy.send_message_sync(topic, key, b"sync")[0] == rows[7]["partition"]
    raw = await proxy.send_raw_message(ProducerMessage(topic, b"raw", key))
    assert raw[0] == rows[7]["partition"]
    records = consume(kafka_bootstrap, topic, len(rows) + 3)
    assert {r.partition for r in records if r.key == key} == {rows[7]["partition"]}


async def test_hash_without_key_spreads_randomly(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=6)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?partitioner=hash")
    counts = collections.Counter(
        [(await proxy.send_message(topic, None, b"v"))[0] for _ in range(120)]
    )
    assert len(counts) >= 4
    assert max(counts.values()) < 60


async def test_random_spreads_keyed_messages(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=6)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}")
    counts = collections.Counter(
        [(await proxy.send_message(topic, b"one-key", b"v"))[0] for _ in range(120)]
    )
    assert len(counts) >= 4  # random ignores the key, as the reference's default
