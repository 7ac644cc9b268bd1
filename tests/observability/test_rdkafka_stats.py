"""librdkafka statistics: the settings hook and the metrics made of a statistics document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from trpc_kafka import _rdkafka_stats as stats_mod
from trpc_kafka import parse_address
from trpc_kafka import prometheus as prometheus_mod
from trpc_kafka._config.rdkafka import consumer_settings, producer_settings
from trpc_kafka.prometheus import KafkaMetrics, rdkafka_stats_metrics


@pytest.fixture(autouse=True)
def default_interval_off() -> Iterator[None]:
    yield
    stats_mod.set_default_interval(0)


def test_no_statistics_no_callback_nothing_changes() -> None:
    cfg = parse_address("kafka://127.0.0.1:9092?topic=t&group=g")
    for settings in (producer_settings(cfg), consumer_settings(cfg)):
        assert "stats_cb" not in settings
        assert "statistics.interval.ms" not in settings


def test_an_address_interval_gets_the_callback_and_wins_over_the_default() -> None:
    stats_mod.set_default_interval(15000)
    cfg = parse_address("kafka://127.0.0.1:9092?topic=t&rdkafka.statistics.interval.ms=500")
    settings = producer_settings(cfg)
    assert settings["statistics.interval.ms"] in ("500", 500)
    assert settings["stats_cb"] is stats_mod._dispatch
    plain = consumer_settings(parse_address("127.0.0.1:9092?topics=t&group=g"))
    assert plain["statistics.interval.ms"] == 15000 and plain["stats_cb"] is stats_mod._dispatch
    off = producer_settings(parse_address("kafka://h:1?rdkafka.statistics.interval.ms=0"))
    assert "stats_cb" not in off


def test_bad_default_intervals_are_refused() -> None:
    for bad in (-1, 1.5, True, "100", 86_400_001):
        with pytest.raises(ValueError, match="statistics interval"):
            stats_mod.set_default_interval(bad)  # type: ignore[arg-type]


def test_listeners_get_parsed_documents_and_a_failing_one_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[dict[str, Any]] = []

    def bad(doc: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    stats_mod.add_stats_listener(bad)
    stats_mod.add_stats_listener(got.append)
    try:
        stats_mod._dispatch(json.dumps({"name": "c#producer-1"}))
        stats_mod._dispatch("{not json")
    finally:
        stats_mod.remove_stats_listener(bad)
        stats_mod.remove_stats_listener(got.append)
    assert got == [{"name": "c#producer-1"}]
    assert "listener bug" in caplog.text and "not JSON" in caplog.text


DOC: dict[str, Any] = {
    "name": "svc#consumer-2",
    "type": "consumer",
    "msg_cnt": 7,
    "msg_size": 700,
    "replyq": 1,
    "brokers": {
        "127.0.0.1:9092/bootstrap": {"name": "127.0.0.1:9092/bootstrap", "nodeid": -1},
        "127.0.0.1:9092/1": {
            "name": "127.0.0.1:9092/1",
            "nodeid": 1,
            "state": "UP",
            "outbuf_cnt": 2,
            "waitresp_cnt": 3,
            "txerrs": 4,
            "req_timeouts": 5,
            "rtt": {"cnt": 10, "avg": 1500, "p50": 1000, "p99": 9000},
        },
        "127.0.0.1:9093/2": {
            "name": "127.0.0.1:9093/2",
            "nodeid": 2,
            "state": "DOWN",
            "rtt": {"cnt": 0, "avg": 0},
        },
    },
    "topics": {
        "orders": {
            "partitions": {
                "0": {"consumer_lag": 12, "fetchq_cnt": 30},
                "1": {"consumer_lag": -1, "fetchq_cnt": 0},
                "-1": {"consumer_lag": -1},
            }
        }
    },
    "cgrp": {"rebalance_cnt": 3},
}


def test_metrics_of_a_consumer_document() -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in rdkafka_stats_metrics([DOC])
        for s in family.samples
    }
    client = (("client", "svc#consumer-2"), ("type", "consumer"))
    b1 = (("broker", "127.0.0.1:9092/1"), *client)
    b2 = (("broker", "127.0.0.1:9093/2"), *client)
    assert samples == {
        ("trpc_kafka_rdkafka_queue_messages", client): 7,
        ("trpc_kafka_rdkafka_queue_bytes", client): 700,
        ("trpc_kafka_rdkafka_replyq", client): 1,
        ("trpc_kafka_rdkafka_broker_rtt_seconds", tuple(sorted((*b1, ("stat", "avg"))))): 0.0015,
        ("trpc_kafka_rdkafka_broker_rtt_seconds", tuple(sorted((*b1, ("stat", "p50"))))): 0.001,
        ("trpc_kafka_rdkafka_broker_rtt_seconds", tuple(sorted((*b1, ("stat", "p99"))))): 0.009,
        ("trpc_kafka_rdkafka_broker_outbuf_requests", b1): 2,
        ("trpc_kafka_rdkafka_broker_waitresp_requests", b1): 3,
        ("trpc_kafka_rdkafka_broker_up", b1): 1,
        ("trpc_kafka_rdkafka_broker_tx_errors_total", b1): 4,
        ("trpc_kafka_rdkafka_broker_request_timeouts_total", b1): 5,
        # A broker without requests in the interval has no RTT sample, and is down.
        ("trpc_kafka_rdkafka_broker_outbuf_requests", b2): 0,
        ("trpc_kafka_rdkafka_broker_waitresp_requests", b2): 0,
        ("trpc_kafka_rdkafka_broker_up", b2): 0,
        ("trpc_kafka_rdkafka_broker_tx_errors_total", b2): 0,
        ("trpc_kafka_rdkafka_broker_request_timeouts_total", b2): 0,
        (
            "trpc_kafka_rdkafka_consumer_lag",
            (*client[:1], ("partition", "0"), ("topic", "orders"), client[1]),
        ): 12,
        (
            "trpc_kafka_rdkafka_fetch_queue_messages",
            (*client[:1], ("partition", "0"), ("topic", "orders"), client[1]),
        ): 30,
        ("trpc_kafka_rdkafka_rebalances_total", client): 3,
    }


def test_a_malformed_document_gives_what_it_can() -> None:
    odd: dict[str, Any] = {
        "name": "x",
        "type": "producer",
        "msg_cnt": "many",
        "brokers": [],
        "topics": None,
    }
    samples = [s for f in rdkafka_stats_metrics([odd]) for s in f.samples]
    assert {s.name for s in samples} == {
        "trpc_kafka_rdkafka_queue_messages",
        "trpc_kafka_rdkafka_queue_bytes",
        "trpc_kafka_rdkafka_replyq",
    }
    assert all(s.value == 0 for s in samples)


def test_a_client_that_stopped_reporting_disappears(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(prometheus_mod, "_monotonic", lambda: now[0])
    registry = CollectorRegistry()
    metrics = KafkaMetrics(registry, rdkafka_stats=False)
    try:

        def clients() -> set[str]:
            return {
                sample.labels["client"]
                for family in registry.collect()
                for sample in family.samples
                if sample.name == "trpc_kafka_rdkafka_replyq"
            }

        for name in ("a", "b"):
            metrics._on_stats({"name": name, "type": "producer"})
        now[0] += 5
        metrics._on_stats({"name": "a", "type": "producer"})  # a reports every 5 s
        assert clients() == {"a", "b"}
        now[0] += 14  # a: 14 s since its last (< 3 intervals); b: 19 s, interval unknown
        assert clients() == {"a", "b"}
        now[0] += 2  # a: 16 s > 3 x 5 s
        assert clients() == {"b"}
        now[0] += 60  # b: beyond the 60 s given to a client with one document
        assert clients() == set()
    finally:
        metrics.close()


def test_enable_rdkafka_stats_sets_the_default_for_new_clients() -> None:
    prometheus_mod.enable_rdkafka_stats(0.5)
    settings = producer_settings(parse_address("kafka://127.0.0.1:9092?topic=t"))
    assert settings["statistics.interval.ms"] == 500
    assert settings["stats_cb"] is stats_mod._dispatch
    for bad in (-1, True, "15"):
        with pytest.raises(ValueError, match="interval must be seconds >= 0"):
            prometheus_mod.enable_rdkafka_stats(bad)  # type: ignore[arg-type]
    prometheus_mod.enable_rdkafka_stats(0)
    assert "stats_cb" not in producer_settings(parse_address("kafka://127.0.0.1:9092?topic=t"))
