"""Prometheus filters against the real broker, read by scraping /metrics over HTTP."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.consumer._util import address, new_group, one_service, produce, serving, wait_until
from trpc_kafka import (
    ConsumerMessage,
    Context,
    ContinueWithoutCommit,
    TrpcError,
    new_client_proxy,
    register_kafka_handler_service,
)
from trpc_kafka._runtime.errors import business_error
from trpc_kafka.prometheus import KafkaMetrics, start_http_server

NewTopic = Callable[..., str]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scraper:
    """A registry of the test's own with its metrics, served on a free port."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = KafkaMetrics(self.registry)
        self.server, self.thread = start_http_server(0, "127.0.0.1", self.registry)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.url, timeout=10) as rsp:
            text = rsp.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.metrics.close()


@pytest.fixture
def scraper() -> Iterator[Scraper]:
    s = Scraper()
    yield s
    s.close()


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def matching(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {k: v for (n, k), v in samples.items() if n == name and want <= k}


async def scrape(scraper: Scraper) -> Samples:
    return await asyncio.to_thread(scraper.scrape)


async def test_sends_handlings_retries_dead_letters_by_outcome_and_code(
    kafka_bootstrap: str, new_topic: NewTopic, scraper: Scraper
) -> None:
    topic, dead = new_topic(), new_topic()
    m = scraper.metrics
    proxy = new_client_proxy(
        "orders.producer",
        target=f"kafka://{kafka_bootstrap}?topic={topic}",
        filters=[m.client_filter],
        timeout=10,
    )
    for value_ in (b"ok-1", b"fail", b"skip"):
        await proxy.send_message(topic, b"k", value_)
    # From another thread (the blocking twin runs on the sync-call loop): counted in the same
    # series as the ones from the event loop.
    await asyncio.to_thread(proxy.send_message_sync, topic, b"k", b"ok-2")
    await proxy.async_send_message(topic, b"k", b"ok-3")
    with pytest.raises(TrpcError):
        await proxy.send_message(topic, 12, b"v")  # type: ignore[arg-type]
    await proxy.close()

    server = one_service(
        address(
            kafka_bootstrap, topic, extra=f"maxRetry=2&retryInterval=10&deadLetterTopic={dead}"
        ),
        name="orders.consumer",
    )
    server.service("orders.consumer").add_filter(m.server_filter)
    done: list[bytes | None] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.value == b"fail":
            raise business_error(1234, "no such order")
        done.append(msg.value)
        if msg.value == b"skip":
            raise ContinueWithoutCommit

    register_kafka_handler_service(server, handle)
    handled = {"service": "orders.consumer", "topic": topic}
    async with serving(server):
        await wait_until(lambda: b"ok-3" in done)
        # Scraped while the service runs; the lag once librdkafka knows the high watermark.
        for _ in range(300):
            samples = await scrape(scraper)
            if matching(samples, "trpc_kafka_consumer_lag", **handled):
                break
            await asyncio.sleep(0.1)

    send = {"service": "orders.producer", "topic": topic}
    assert (
        value(
            samples, "trpc_kafka_sent_messages_total", **send, method="send", outcome="ok", code="0"
        )
        == 4
    )
    assert (
        value(
            samples,
            "trpc_kafka_sent_messages_total",
            **send,
            method="asyncSend",
            outcome="ok",
            code="0",
        )
        == 1
    )
    assert (
        value(
            samples,
            "trpc_kafka_sent_messages_total",
            **send,
            method="send",
            outcome="error",
            code="121",
        )
        == 1
    )
    assert value(samples, "trpc_kafka_send_duration_seconds_count", **send, method="send") == 5
    assert value(samples, "trpc_kafka_send_duration_seconds_count", **send, method="asyncSend") == 1

    handled = {"service": "orders.consumer", "topic": topic}
    assert (
        value(samples, "trpc_kafka_handled_messages_total", **handled, outcome="ok", code="0") == 3
    )
    assert (
        value(samples, "trpc_kafka_handled_messages_total", **handled, outcome="skipped", code="0")
        == 1
    )
    # maxRetry=2: three attempts, two retries, then the dead letter topic.
    assert (
        value(samples, "trpc_kafka_handled_messages_total", **handled, outcome="error", code="1234")
        == 3
    )
    assert value(samples, "trpc_kafka_handler_retries_total", **handled) == 2
    assert value(samples, "trpc_kafka_dead_letters_total", **handled, dead_letter_topic=dead) == 1
    assert value(samples, "trpc_kafka_dropped_messages_total", **handled) is None
    assert value(samples, "trpc_kafka_handle_duration_seconds_count", **handled) == 7
    # Every message of the partition handled: no lag.
    (lag,) = matching(samples, "trpc_kafka_consumer_lag", **handled).values()
    assert lag == 0


async def test_retries_without_a_dead_letter_topic_count_as_dropped(
    kafka_bootstrap: str, topic: str, scraper: Scraper
) -> None:
    produce(kafka_bootstrap, topic, [b"fail", b"ok"])
    server = one_service(address(kafka_bootstrap, topic, extra="maxRetry=1&retryInterval=10"))
    server.service("consumer").add_filter(scraper.metrics.server_filter)
    done: list[bytes | None] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.value == b"fail":
            raise ValueError("boom")
        done.append(msg.value)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: bool(done))
        samples = await scrape(scraper)
    labels = {"service": "consumer", "topic": topic}
    assert value(samples, "trpc_kafka_dropped_messages_total", **labels) == 1
    assert value(samples, "trpc_kafka_handler_retries_total", **labels) == 1
    # A plain exception is tRPC's unknown error, 999.
    assert (
        value(samples, "trpc_kafka_handled_messages_total", **labels, outcome="error", code="999")
        == 2
    )


async def test_lag_grows_while_a_handler_is_stuck_and_goes_back_to_zero(
    kafka_bootstrap: str, topic: str, scraper: Scraper
) -> None:
    produce(kafka_bootstrap, topic, [b"%d" % i for i in range(10)])
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group), name="slow")
    server.service("slow").add_filter(scraper.metrics.server_filter)
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.offset == 0:
            await release.wait()
        handled.append(msg.offset)

    register_kafka_handler_service(server, handle)
    labels = {"service": "slow", "group": group, "topic": topic, "partition": "0"}
    lags: list[float | None] = []

    async def lag_is(expected: float) -> None:
        async def poll() -> None:
            while True:
                lags.append(value(await scrape(scraper), "trpc_kafka_consumer_lag", **labels))
                if lags[-1] == expected:
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(poll(), 30)

    async with serving(server):
        await lag_is(10)  # stuck on offset 0: all ten are behind
        produce(kafka_bootstrap, topic, [b"more"] * 5)
        await lag_is(15)  # the lag follows the high watermark while the handler is stuck
        release.set()
        await lag_is(0)
    assert handled == list(range(15))
    # Once the service stopped (its partition revoked), its lag series is gone.
    assert value(await scrape(scraper), "trpc_kafka_consumer_lag", **labels) is None


async def test_rdkafka_statistics_of_producers_and_consumers(
    kafka_bootstrap: str, topic: str, scraper: Scraper
) -> None:
    stats = "rdkafka.statistics.interval.ms=200"
    proxy = new_client_proxy(
        "p", target=f"kafka://{kafka_bootstrap}?topic={topic}&clientid=stats-producer&{stats}"
    )
    await proxy.send_message(topic, b"k", b"v")
    server = one_service(address(kafka_bootstrap, topic, extra=stats), name="stats-consumer")
    handled: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        handled.append(msg.offset)

    register_kafka_handler_service(server, handle)

    def has(samples: Samples, name: str, **labels: str) -> bool:
        return bool(matching(samples, name, **labels))

    async with serving(server):
        await wait_until(lambda: bool(handled))
        samples: Samples = {}
        for _ in range(300):
            samples = await scrape(scraper)
            if has(
                samples, "trpc_kafka_rdkafka_consumer_lag", topic=topic, type="consumer"
            ) and has(
                samples, "trpc_kafka_rdkafka_broker_rtt_seconds", type="producer", stat="avg"
            ):
                break
            await proxy.send_message(topic, b"k", b"v")  # requests for the RTT window
            await asyncio.sleep(0.1)
    await proxy.close()
    (lag,) = matching(samples, "trpc_kafka_rdkafka_consumer_lag", topic=topic).values()
    assert 0 <= lag <= len(handled) + 300  # sends go on meanwhile: a few may be behind
    rtt = matching(samples, "trpc_kafka_rdkafka_broker_rtt_seconds", type="producer", stat="avg")
    clients = {dict(k)["client"] for k in rtt}
    assert any(c.startswith("stats-producer#producer-") for c in clients), clients
    assert all(0 < v < 5 for v in rtt.values()), rtt
    assert matching(samples, "trpc_kafka_rdkafka_broker_up", type="producer")
    assert set(matching(samples, "trpc_kafka_rdkafka_queue_messages").values()) <= {0.0, 1.0}


def test_start_http_server_serves_the_default_registry() -> None:
    from trpc_kafka import prometheus

    server, thread = prometheus.start_http_server(0, "127.0.0.1")
    try:
        assert isinstance(thread, threading.Thread) and thread.daemon
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as rsp:
            text = rsp.read().decode()
        assert "# TYPE trpc_kafka_sent_messages_total counter" in text
        assert "# TYPE trpc_kafka_handle_duration_seconds histogram" in text
    finally:
        server.shutdown()
        server.server_close()


def test_a_second_set_in_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    first = KafkaMetrics(registry, rdkafka_stats=False)
    try:
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            KafkaMetrics(registry, rdkafka_stats=False)
    finally:
        first.close()
    KafkaMetrics(registry, rdkafka_stats=False).close()  # once closed, the names are free


async def test_failed_asynchronous_deliveries_are_counted(scraper: Scraper) -> None:
    """An asynchronous send returns once queued (``ok``); its delivery failing later (here: no
    broker answers, 141) is counted too, and the error callback still gets it."""
    failed: list[TrpcError] = []
    proxy = new_client_proxy(
        "unreachable.producer",
        target="kafka://127.0.0.1:1?topic=nowhere",
        filters=[scraper.metrics.client_filter],
        error_callback=lambda err, *_: failed.append(err),
    )
    await proxy.async_send_message("nowhere", b"k", b"v")
    await wait_until(lambda: bool(failed), timeout=60, what="the delivery failure")
    await proxy.close(timeout=5)
    samples = await scrape(scraper)
    labels = {"service": "unreachable.producer", "topic": "nowhere"}
    assert failed[0].code == 141
    assert (
        value(
            samples,
            "trpc_kafka_sent_messages_total",
            **labels,
            method="asyncSend",
            outcome="ok",
            code="0",
        )
        == 1
    )
    assert value(samples, "trpc_kafka_async_delivery_failures_total", **labels, code="141") == 1
