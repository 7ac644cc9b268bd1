"""The mapping from address keys to librdkafka settings, checked against librdkafka itself."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer

from trpc_kafka._config.address import parse_address
from trpc_kafka._config.rdkafka import consumer_settings, producer_settings

# A port nothing listens on: the instances below never connect anywhere useful.
HOST = "127.0.0.1:1"


def test_producer_defaults_follow_the_reference() -> None:
    s = producer_settings(parse_address(f"kafka://{HOST}"))
    assert s["bootstrap.servers"] == HOST
    assert s["client.id"] == "trpcgo"
    assert s["compression.type"] == "gzip"
    assert s["acks"] == -1
    assert (s["retries"], s["retry.backoff.ms"]) == (3, 100)
    assert s["enable.idempotence"] is False
    assert s["message.max.bytes"] == 131072
    assert s["max.in.flight.requests.per.connection"] == 5
    assert s["socket.connection.setup.timeout.ms"] == 30000
    assert s["socket.timeout.ms"] == 30000
    assert s["topic.metadata.refresh.interval.ms"] == 120_000
    assert s["topic.metadata.refresh.sparse"] is True
    assert s["allow.auto.create.topics"] is True
    # Sarama sends at once by default: no linger. Batch sizes keep librdkafka's defaults.
    assert s["linger.ms"] == 0
    assert "batch.size" not in s and "batch.num.messages" not in s


def test_producer_keys_map() -> None:
    cfg = parse_address(
        f"kafka://{HOST}?compression=lz4&requiredAcks=1&maxRetry=9&retryInterval=250"
        "&maxMessageBytes=2000&flushMessages=50&flushMaxMessages=80&flushBytes=4096"
        "&flushFrequency=7&clientid=me&netDailTimeout=2000&netReadTimeout=3000"
        "&netWriteTimeout=4000&netMaxOpenRequests=2&metadataRefreshFrequency=0"
        "&metadataFull=true&metadataAllowAutoTopicCreation=false&metadataRetryBackoff=300"
    )
    s = producer_settings(cfg)
    assert s["compression.type"] == "lz4"
    assert s["acks"] == 1
    assert (s["retries"], s["retry.backoff.ms"]) == (9, 250)
    assert s["message.max.bytes"] == 2000
    assert s["batch.num.messages"] == 50  # the smaller of flushMessages / flushMaxMessages
    assert s["batch.size"] == 4096
    assert s["linger.ms"] == 7
    assert s["client.id"] == "me"
    assert s["socket.connection.setup.timeout.ms"] == 2000
    assert s["socket.timeout.ms"] == 4000
    assert s["max.in.flight.requests.per.connection"] == 2
    assert s["topic.metadata.refresh.interval.ms"] == -1  # 0 = never, as Sarama
    assert s["topic.metadata.refresh.sparse"] is False
    assert s["allow.auto.create.topics"] is False
    assert s["topic.metadata.refresh.fast.interval.ms"] == 300
    Producer(s)  # librdkafka accepts every value


def test_idempotent_producer() -> None:
    s = producer_settings(parse_address(f"kafka://{HOST}?idempotent=true"))
    assert s["enable.idempotence"] is True
    Producer(s)


def test_rdkafka_pass_through_overrides_last() -> None:
    s = producer_settings(parse_address(f"kafka://{HOST}?rdkafka.compression.type=zstd"))
    assert s["compression.type"] == "zstd"


@pytest.mark.parametrize(
    ("strategy", "assignor"),
    [("sticky", "cooperative-sticky"), ("range", "range"), ("roundrobin", "roundrobin")],
)
def test_consumer_strategies(strategy: str, assignor: str) -> None:
    s = consumer_settings(parse_address(f"{HOST}?topics=t&group=g&strategy={strategy}"))
    assert s["partition.assignment.strategy"] == assignor
    Consumer(s).close()


def test_consumer_keys_map() -> None:
    cfg = parse_address(
        f"{HOST}?topics=t&group=grp&initial=oldest&isolationLevel=ReadCommitted"
        "&fetchDefault=1000&fetchMax=200000000&maxWaitTime=250&groupSessionTimeout=6000"
        "&groupRebalanceTimeout=30000"
    )
    s = consumer_settings(cfg)
    assert s["group.id"] == "grp"
    assert s["client.id"] == "grp"
    assert s["auto.offset.reset"] == "earliest"
    assert s["isolation.level"] == "read_committed"
    assert s["max.partition.fetch.bytes"] == 1000
    assert s["fetch.max.bytes"] == 200_000_000
    # librdkafka needs room for a whole fetch response.
    assert s["receive.message.max.bytes"] >= 200_000_000 + 512
    assert s["fetch.wait.max.ms"] == 250
    assert s["session.timeout.ms"] == 6000
    assert s["max.poll.interval.ms"] == 30000
    # At-least-once: offsets are stored by us after handling; librdkafka commits them.
    assert s["enable.auto.offset.store"] is False
    assert s["enable.auto.commit"] is True
    assert s["auto.commit.interval.ms"] == 3000
    Consumer(s).close()


def test_consumer_defaults() -> None:
    s = consumer_settings(parse_address(f"{HOST}?topics=t&group=g"))
    assert s["auto.offset.reset"] == "latest"
    assert s["isolation.level"] == "read_uncommitted"
    assert s["partition.assignment.strategy"] == "cooperative-sticky"
    assert s["session.timeout.ms"] == 10000
    assert s["max.poll.interval.ms"] == 60000


def test_sasl_keys() -> None:
    cfg = parse_address(f"{HOST}?mechanism=SCRAM-SHA-512&user=alice&password=pw")
    s = producer_settings(cfg)
    assert s["security.protocol"] == "SASL_PLAINTEXT"
    assert (s["sasl.mechanism"], s["sasl.username"], s["sasl.password"]) == (
        "SCRAM-SHA-512",
        "alice",
        "pw",
    )
    cfg = parse_address(f"{HOST}?mechanism=PLAIN&user=a&password=b&protocol=SASL_SSL")
    assert producer_settings(cfg)["security.protocol"] == "SASL_SSL"
