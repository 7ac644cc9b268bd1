"""Each producer key of the address takes effect: in the settings librdkafka gets, and on the
real broker wherever the effect is observable."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions

from tests.producer._util import consume
from tests.security._util import load_scaled
from trpc_kafka._producer import new_client_proxy
from trpc_kafka._producer import pool as pool_mod
from trpc_kafka._producer.entry import ERRORS_ONLY
from trpc_kafka._runtime.errors import TrpcError

NewTopic = Callable[..., str]


class Capture:
    """A producer factory that records the settings and collects librdkafka statistics."""

    def __init__(self, stats_interval_ms: int = 0) -> None:
        self.settings: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.got_stats = threading.Event()
        self.stats_interval_ms = stats_interval_ms
        pool_mod.set_producer_factory(self.build)

    def build(self, settings: dict[str, Any]) -> Producer:
        # Our logger and error callback ride along; the rest is the mapping of the address.
        self.settings.append({k: v for k, v in settings.items() if k not in ("logger", "error_cb")})
        if self.stats_interval_ms:
            settings = {
                **settings,
                "statistics.interval.ms": self.stats_interval_ms,
                "stats_cb": self.on_stats,
            }
        return Producer(settings)

    def on_stats(self, text: str) -> None:
        self.stats.append(json.loads(text))
        self.got_stats.set()

    def latest_stats(self) -> dict[str, Any]:
        """Statistics emitted after this call (so they see everything sent before it)."""
        seen = len(self.stats)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if len(self.stats) > seen:
                return self.stats[-1]
            time.sleep(0.02)
        raise AssertionError("no librdkafka statistics arrived")


def _settings_for(bootstrap: str, query: str) -> dict[str, Any]:
    capture = Capture()
    proxy = new_client_proxy("p", target=f"kafka://{bootstrap}?{query}")
    proxy._bind(None)
    (settings,) = capture.settings
    proxy.close_sync(0.5)
    return settings


DEFAULTS = {
    "compression.type": "gzip",
    "acks": -1,
    "retries": 3,
    "retry.backoff.ms": 100,
    "enable.idempotence": False,
    "message.max.bytes": 131072,
    "client.id": "trpcgo",
    "max.in.flight.requests.per.connection": 5,
    "socket.connection.setup.timeout.ms": 30000,
    "socket.timeout.ms": 30000,
    "topic.metadata.refresh.interval.ms": 120000,
    "topic.metadata.refresh.sparse": True,
    "allow.auto.create.topics": True,
    "partitioner": "random",
}


def test_reference_defaults_reach_librdkafka(kafka_bootstrap: str) -> None:
    settings = _settings_for(kafka_bootstrap, "topic=t")
    for key, value in DEFAULTS.items():
        assert settings[key] == value, key
    assert settings["linger.ms"] == 0  # Sarama's flushFrequency=0: send at once
    assert "batch.num.messages" not in settings


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("requiredAcks=0", {"acks": 0}),
        ("requiredAcks=1", {"acks": 1}),
        ("maxRetry=7", {"retries": 7}),
        ("retryInterval=250", {"retry.backoff.ms": 250}),
        ("idempotent=true", {"enable.idempotence": True, "acks": -1}),
        ("maxMessageBytes=2000", {"message.max.bytes": 2000}),
        ("flushMessages=50", {"batch.num.messages": 50}),
        ("flushMaxMessages=20&flushMessages=50", {"batch.num.messages": 20}),
        ("flushBytes=65536", {"batch.size": 65536}),
        ("flushFrequency=25", {"linger.ms": 25}),
        ("clientid=orders-producer", {"client.id": "orders-producer"}),
        ("netDailTimeout=5000", {"socket.connection.setup.timeout.ms": 5000}),
        ("netReadTimeout=7000&netWriteTimeout=9000", {"socket.timeout.ms": 9000}),
        ("netMaxOpenRequests=1", {"max.in.flight.requests.per.connection": 1}),
        ("metadataRefreshFrequency=30", {"topic.metadata.refresh.interval.ms": 30000}),
        ("metadataFull=true", {"topic.metadata.refresh.sparse": False}),
        ("metadataAllowAutoTopicCreation=false", {"allow.auto.create.topics": False}),
        ("metadataRetryBackoff=250", {"topic.metadata.refresh.fast.interval.ms": 250}),
        ("compression=zstd", {"compression.type": "zstd"}),
        (
            "rdkafka.linger.ms=3&rdkafka.queue.buffering.max.messages=5000",
            {"linger.ms": "3", "queue.buffering.max.messages": "5000"},
        ),
    ],
)
def test_key_maps_to_librdkafka_setting(
    kafka_bootstrap: str, query: str, expected: dict[str, Any]
) -> None:
    settings = _settings_for(kafka_bootstrap, query)
    for key, value in expected.items():
        assert settings[key] == value, key


def test_version_needs_no_setting(kafka_bootstrap: str) -> None:
    # librdkafka asks the broker which protocol versions it speaks (ApiVersionRequest).
    assert _settings_for(kafka_bootstrap, "version=0.10.2.0") == _settings_for(
        kafka_bootstrap, "version=2.8.0"
    )


def test_our_own_keys_do_not_reach_librdkafka(kafka_bootstrap: str) -> None:
    plain = _settings_for(kafka_bootstrap, "topic=a")
    ours = _settings_for(
        kafka_bootstrap, "topic=b&partitioner=hash&async=1&trpcMeta=true&metadataRetryMax=4"
    )
    # topic, partitioner, async, trpcMeta, metadataRetryMax: our logic. async=1 with no success
    # callback anywhere only asks for failure reports (pool.acquire).
    assert ours.pop(ERRORS_ONLY) is True
    assert plain == ours


# -- observable on the real broker --------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_compression_round_trips(
    kafka_bootstrap: str, new_topic: NewTopic, codec: str
) -> None:
    topic = new_topic(partitions=2)
    capture = Capture()
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?compression={codec}")
    values = [(f"{codec}-{i}-" * 20).encode() for i in range(50)]
    for i, value in enumerate(values):
        await proxy.async_send_message(topic, str(i), value, [("codec", codec)])
    await proxy.send_message(topic, b"last", b"end")
    assert capture.settings[0]["compression.type"] == codec
    records = consume(kafka_bootstrap, topic, 51)
    assert sorted(r.value or b"" for r in records) == sorted([*values, b"end"])
    assert all(r.headers == [("codec", codec.encode())] for r in records if r.key != b"last")


async def test_required_acks_0_returns_without_offset(
    kafka_bootstrap: str, new_topic: NewTopic, caplog: pytest.LogCaptureFixture
) -> None:
    topic = new_topic(partitions=1)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?requiredAcks=0")
    with caplog.at_level(logging.DEBUG, logger="trpc_kafka.producer"):
        results = [await proxy.send_message(topic, None, str(i)) for i in range(3)]
    assert "no offset is known" in caplog.text
    assert results == [(0, -1)] * 3  # partition known, offset not: the broker never answered
    assert proxy.send_message_sync(topic, None, b"3") == (0, -1)
    assert len(consume(kafka_bootstrap, topic, 4)) == 4


async def test_required_acks_1_knows_the_offset(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=1)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?requiredAcks=1")
    assert [await proxy.send_message(topic, None, b"v") for _ in range(2)] == [(0, 0), (0, 1)]


async def test_clientid_is_what_the_client_reports(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    capture = Capture(stats_interval_ms=100)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?clientid=orders-svc")
    await proxy.send_message(topic, None, b"v")
    assert capture.latest_stats()["client_id"] == "orders-svc"


async def test_idempotent_producer_gets_a_producer_id(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    capture = Capture(stats_interval_ms=100)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?idempotent=true")
    await proxy.send_message(topic, None, b"v")
    eos = capture.latest_stats()["eos"]
    assert eos["idemp_state"] == "Assigned"
    assert eos["producer_id"] >= 0


async def test_flush_frequency_holds_messages_back(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    fast = new_client_proxy("fast", target=f"kafka://{kafka_bootstrap}?flushFrequency=1")
    slow = new_client_proxy("slow", target=f"kafka://{kafka_bootstrap}?flushFrequency=400")
    await fast.send_message(topic, None, b"warm")
    await slow.send_message(topic, None, b"warm")
    start = time.monotonic()
    await fast.send_message(topic, None, b"v")
    fast_took = time.monotonic() - start
    start = time.monotonic()
    await slow.send_message(topic, None, b"v")
    slow_took = time.monotonic() - start
    assert slow_took >= 0.35
    assert fast_took < load_scaled(0.3)


async def test_flush_messages_caps_batches(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=1)

    async def produce_requests(query: str) -> int:
        capture = Capture(stats_interval_ms=100)
        proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?{query}")
        await proxy.send_message(topic, None, b"warm")
        before = _produce_requests(capture.latest_stats())
        for i in range(40):
            await proxy.async_send_message(topic, None, str(i))
        await proxy.send_message(topic, None, b"last")
        after = _produce_requests(capture.latest_stats())
        await proxy.close()
        return after - before

    # One partition, 41 messages held back 200 ms: one request carries them all, unless a batch
    # may hold at most 5 messages.
    assert await produce_requests("flushFrequency=200") <= 2
    assert await produce_requests("flushFrequency=200&flushMessages=5") >= 8


def _produce_requests(stats: dict[str, Any]) -> int:
    return sum(int(b["req"].get("Produce", 0)) for b in stats["brokers"].values())


async def test_metadata_retry_policy_of_partition_lookups(kafka_bootstrap: str) -> None:
    base = f"kafka://{kafka_bootstrap}?partitioner=roundrobin&metadataAllowAutoTopicCreation=false"
    once = new_client_proxy("once", target=f"{base}&metadataRetryMax=0", timeout=20)
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        await once.send_message("no-such-topic-rr", None, b"v")
    quick = time.monotonic() - start
    assert info.value.code == 141
    assert "no-such-topic-rr" in info.value.msg

    retried = new_client_proxy(
        "retried", target=f"{base}&metadataRetryMax=2&metadataRetryBackoff=400", timeout=20
    )
    start = time.monotonic()
    with pytest.raises(TrpcError):
        await retried.send_message("no-such-topic-rr", None, b"v")
    slow = time.monotonic() - start
    assert slow >= 0.8  # two retries, 400 ms apart
    assert slow > quick + 0.6


async def test_metadata_refresh_picks_up_new_partitions(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=2)
    proxy = new_client_proxy(
        "p",
        target=f"kafka://{kafka_bootstrap}?partitioner=roundrobin&metadataRefreshFrequency=1",
    )
    first = {(await proxy.send_message(topic, None, b"v"))[0] for _ in range(4)}
    assert first == {0, 1}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_partitions([NewPartitions(topic, 4)]).values():
        future.result(10)
    seen: set[int] = set()
    deadline = time.monotonic() + 15
    while seen != {0, 1, 2, 3} and time.monotonic() < deadline:
        seen.add((await proxy.send_message(topic, None, b"v"))[0])
        await __import__("asyncio").sleep(0.05)
    assert seen == {0, 1, 2, 3}
