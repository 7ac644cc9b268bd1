"""The producer pool: sharing, creation that never waits on another address, closing."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from tests.producer._util import closed_port, consume
from tests.producer.test_proxy import Reports
from tests.security._util import load_scaled
from trpc_kafka._config import discovery as discovery_mod
from trpc_kafka._config.address import register_discovery
from trpc_kafka._producer import (
    close_all_producers,
    close_all_producers_sync,
    new_client_proxy,
)
from trpc_kafka._producer import entry as entry_mod
from trpc_kafka._producer import pool as pool_mod
from trpc_kafka._runtime.errors import TrpcError

NewTopic = Callable[..., str]


class CountingFactory:
    """Builds real producers, counts them, and can be slow or fail for chosen addresses."""

    def __init__(
        self, slow: dict[str, float] | None = None, fail_first: set[str] | None = None
    ) -> None:
        self.built: list[str] = []
        self.slow = slow or {}
        self.fail_first = set(fail_first or ())
        self.lock = threading.Lock()
        pool_mod.set_producer_factory(self)

    def __call__(self, settings: dict[str, Any]) -> Producer:
        servers = str(settings["bootstrap.servers"])
        time.sleep(self.slow.get(servers, 0.0))
        with self.lock:
            if servers in self.fail_first:
                self.fail_first.discard(servers)
                raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "simulated failure"))
            self.built.append(servers)
        return Producer(settings)


@pytest.fixture
def discoveries() -> Iterator[None]:
    saved = dict(discovery_mod._discoveries)
    yield
    discovery_mod._discoveries.clear()
    discovery_mod._discoveries.update(saved)


# -- sharing ------------------------------------------------------------------------------


async def test_one_producer_per_address_shared_by_proxies(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    factory = CountingFactory()
    a = new_client_proxy("a", target=f"kafka://{kafka_bootstrap}?topic={topic}")
    b = new_client_proxy("b", target=f"kafka://{kafka_bootstrap}")  # same settings
    c = new_client_proxy("c", target=f"kafka://{kafka_bootstrap}?compression=none")
    await a.produce(None, b"a")
    await b.send_message(topic, None, b"b")
    await c.send_message(topic, None, b"c")
    assert a._entry is b._entry
    assert a._entry is not c._entry
    assert len(factory.built) == 2
    assert a._entry is not None and a._entry.refs == 2


async def test_concurrent_first_calls_share_one_creation(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    factory = CountingFactory(slow={kafka_bootstrap: 0.3})
    proxies = [new_client_proxy(f"p{i}", target=f"kafka://{kafka_bootstrap}") for i in range(20)]
    results = await asyncio.gather(*(p.send_message(topic, None, b"v") for p in proxies))
    assert len(results) == 20
    assert factory.built == [kafka_bootstrap]

    # Blocking callers on many threads, a fresh address spelling with the same settings.
    pool_mod.close_all_producers_sync(1.0)
    sync_proxies = [
        new_client_proxy(f"s{i}", target=f"{kafka_bootstrap}?compression=gzip") for i in range(8)
    ]
    threads = [
        threading.Thread(target=p.send_message_sync, args=(topic, None, b"s")) for p in sync_proxies
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert factory.built == [kafka_bootstrap, kafka_bootstrap]


async def test_a_failed_creation_is_not_cached(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic()
    CountingFactory(fail_first={kafka_bootstrap})
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}")
    with pytest.raises(TrpcError) as info:
        await proxy.send_message(topic, None, b"v")
    assert info.value.code == 141
    assert "simulated failure" in info.value.msg
    assert await proxy.send_message(topic, None, b"v") == (0, 0)


async def test_a_slow_address_does_not_delay_another(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """The seed's v0.2.18 story: a producer that takes long to connect must not make the
    healthy producers' calls time out.

    The bad target points at a port where nothing listens; its producer is slow to build (as
    a connecting Sarama producer was) and, with partitioner=hash, every call needs a metadata
    look-up that cannot succeed. Good sends meanwhile keep their latency.
    """
    topic = new_topic(partitions=3)
    bad_servers = f"127.0.0.1:{closed_port()}"
    CountingFactory(slow={bad_servers: 1.5})
    good = new_client_proxy("good", target=f"kafka://{kafka_bootstrap}?compression=none")
    await good.send_message(topic, None, b"warm")

    async def good_latencies(seconds: float) -> list[float]:
        out: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.monotonic()
            await good.send_message(topic, None, b"v")
            out.append(time.monotonic() - start)
        return out

    baseline = await good_latencies(1.0)
    bad_proxies = [
        new_client_proxy(f"bad{i}", target=f"kafka://{bad_servers}?partitioner=hash", timeout=1.0)
        for i in range(5)
    ]

    async def bad_call(proxy: Any, i: int) -> tuple[int, float]:
        start = time.monotonic()
        try:
            await proxy.send_message(topic, str(i), b"v")
        except TrpcError as exc:
            return exc.code, time.monotonic() - start
        return 0, time.monotonic() - start

    bad_task = asyncio.gather(*(bad_call(p, i) for i, p in enumerate(bad_proxies * 10)))
    during = await good_latencies(2.5)
    bad_results = await bad_task
    # A second wave, once the bad producer exists: its metadata look-ups are pending.
    second = asyncio.gather(*(bad_call(p, i) for i, p in enumerate(bad_proxies)))
    during += await good_latencies(1.2)
    bad_results += await second

    # 101 while the producer is being built, then the known cause (refused: 141).
    assert all(code in (101, 141) for code, _ in bad_results), bad_results
    assert any(code == 141 for code, _ in bad_results), bad_results
    assert max(took for _, took in bad_results) < load_scaled(1.6)
    p99_base = statistics.quantiles(baseline, n=100)[98]
    p99_during = statistics.quantiles(during, n=100)[98]
    assert p99_during < max(3 * p99_base, p99_base + 0.05), (p99_base, p99_during)
    assert len(during) > 50


# -- service discovery ---------------------------------------------------------------------


async def test_discovery_runs_off_the_loop(
    kafka_bootstrap: str, new_topic: NewTopic, discoveries: None
) -> None:
    topic = new_topic()
    calls: list[tuple[str, str]] = []

    def resolve(service: str, namespace: str) -> list[str]:
        calls.append((service, namespace))
        time.sleep(0.5)
        return [kafka_bootstrap]

    register_discovery("test-registry", resolve)
    proxy = new_client_proxy(
        "p", target="kafka://kafka.brokers?discover=test-registry&namespace=Production"
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    assert await proxy.send_message(topic, None, b"v") == (0, 0)
    tick_task.cancel()
    assert calls == [("kafka.brokers", "Production")]
    assert ticks >= 15  # the loop kept running while discovery slept


async def test_discovery_failure_is_131(discoveries: None) -> None:
    def resolve(service: str, namespace: str) -> list[str]:
        raise LookupError("registry down")

    register_discovery("broken", resolve)
    proxy = new_client_proxy("p", target="kafka://svc?discover=broken&namespace=ns")
    with pytest.raises(TrpcError) as info:
        await proxy.send_message("t", None, b"v")
    assert info.value.code == 131
    assert "registry down" in info.value.msg


# -- queue full -----------------------------------------------------------------------------


async def test_full_queue_waits_for_room(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=2)
    reports = Reports()
    proxy = new_client_proxy(
        "p", target=f"kafka://{kafka_bootstrap}?rdkafka.queue.buffering.max.messages=10"
    )
    for i in range(300):
        await proxy.async_send_message(topic, None, str(i))
    results = await asyncio.gather(*(proxy.send_message(topic, None, b"acked") for _ in range(50)))
    assert len(results) == 50
    for _ in range(50):
        proxy.async_send_message_sync(topic, None, b"sync")
    reports.wait(350)
    assert reports.failed == []
    assert len(consume(kafka_bootstrap, topic, 400)) == 400


async def test_full_queue_is_bounded_by_the_timeout(silent_port: int) -> None:
    reports = Reports()
    proxy = new_client_proxy(
        "p",
        target=f"kafka://127.0.0.1:{silent_port}?rdkafka.queue.buffering.max.messages=5",
        timeout=0.3,
    )
    for i in range(5):
        await proxy.async_send_message("t", None, str(i))
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        await proxy.async_send_message("t", None, b"6")
    assert info.value.code == 101
    assert "room" in info.value.msg
    assert 0.25 < time.monotonic() - start < load_scaled(1.0)
    with pytest.raises(TrpcError) as info:
        proxy.async_send_message_sync("t", None, b"7")
    assert info.value.code == 101
    await proxy.close(0.2)
    assert len(reports.failed) == 5  # purged at close, each reported once


# -- closing --------------------------------------------------------------------------------


async def test_close_flushes_queued_async_sends(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=3)
    reports = Reports()
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?flushFrequency=200")
    for i in range(500):
        await proxy.async_send_message(topic, None, str(i))
    entry = proxy._entry
    assert entry is not None
    await proxy.close()
    assert len(reports.ok) == 500  # all reported by the time close returns
    assert entry.finished.is_set()  # last proxy: the producer and its thread are gone


async def test_close_reports_what_could_not_be_delivered(silent_port: int) -> None:
    reports = Reports()
    proxy = new_client_proxy("p", target=f"kafka://127.0.0.1:{silent_port}")
    for i in range(20):
        await proxy.async_send_message("t", str(i), b"v")
    acked = asyncio.create_task(proxy.send_message("t", b"acked", b"v"))
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await proxy.close(timeout=0.5)
    assert time.monotonic() - start < 0.5 + pool_mod.PURGE_GRACE
    assert reports.ok == []
    assert sorted(int(f[2] or b"0") for f in reports.failed) == list(range(20))
    assert all(isinstance(f[0], TrpcError) and f[0].code == 141 for f in reports.failed)
    assert "Purged" in str(reports.failed[0][0])  # no cause known: the broker is silent
    with pytest.raises(TrpcError) as info:
        await acked
    assert info.value.code == 141


@pytest.mark.parametrize("blocking", [False, True])
async def test_close_with_nothing_deliverable_is_prompt_and_reports_the_cause(
    blocking: bool,
) -> None:
    """Issue 9: after sends to a refusing address, close() blocked its whole 10 s bound."""
    reports = Reports()
    proxy = new_client_proxy("p", target=f"kafka://127.0.0.1:{closed_port()}")
    for i in range(20):
        await proxy.async_send_message("t", str(i), b"v")
    start = time.monotonic()
    if blocking:
        await asyncio.to_thread(proxy.close_sync)  # the default bound: 10 s
    else:
        await proxy.close()
    took = time.monotonic() - start
    assert took < entry_mod.UNREACHABLE_GRACE + entry_mod.PROBE_TIMEOUT + 2.0, took
    assert reports.ok == []
    # One error callback per dropped message, naming the cause.
    assert sorted(int(f[2] or b"0") for f in reports.failed) == list(range(20))
    for err, *_ in reports.failed:
        assert isinstance(err, TrpcError) and err.code == 141
        assert "Is your cluster reachable?" in err.msg and "Connection refused" in err.msg


async def test_closing_one_of_two_proxies_keeps_the_producer(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    a = new_client_proxy("a", target=f"kafka://{kafka_bootstrap}")
    b = new_client_proxy("b", target=f"kafka://{kafka_bootstrap}")
    await a.send_message(topic, None, b"a")
    await b.send_message(topic, None, b"b")
    entry = a._entry
    assert entry is not None
    await a.close()
    assert not entry.closed
    assert await b.send_message(topic, None, b"b2") == (0, 2)
    b.close_sync()
    assert entry.closed and entry.finished.wait(2)


async def test_close_all_producers_flushes_and_proxies_stay_usable(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    reports = Reports()
    a = new_client_proxy("a", target=f"kafka://{kafka_bootstrap}?flushFrequency=100")
    b = new_client_proxy("b", target=f"kafka://{kafka_bootstrap}?compression=lz4")
    for _ in range(100):
        await a.async_send_message(topic, None, b"a")
        await b.async_send_message(topic, None, b"b")
    entries = pool_mod.live_entries()
    assert len(entries) == 2
    await close_all_producers(5.0)
    assert len(reports.ok) == 200
    assert all(e.closed and e.finished.is_set() for e in entries)
    assert pool_mod.live_entries() == []
    # A later call opens a new producer.
    await a.send_message(topic, None, b"again")
    assert a._entry is not None and a._entry not in entries
    a.async_send_message_sync(topic, None, b"sync")
    close_all_producers_sync(5.0)
    assert len(reports.ok) == 201


def test_blocking_twins_from_many_threads(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=1)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}")
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(25):
            r = proxy.send_message_sync(topic, None, b"v")
            with lock:
                results.append(r)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(offset for _, offset in results) == list(range(200))
    proxy.close_sync()


def test_one_proxy_used_from_two_event_loops(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=1)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}")
    results: list[list[tuple[int, int]]] = []

    def run_loop() -> None:
        async def main() -> list[tuple[int, int]]:
            return list(
                await asyncio.gather(*(proxy.send_message(topic, None, b"v") for _ in range(100)))
            )

        results.append(asyncio.run(main()))

    threads = [threading.Thread(target=run_loop) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    offsets = sorted(o for batch in results for _, o in batch)
    assert offsets == list(range(300))


# -- interpreter exit -----------------------------------------------------------------------

_SCRIPT = """
import atexit, asyncio, sys

failed = []
# Registered before trpc_kafka is imported: atexit runs it after the library's flush hook.
atexit.register(lambda: print(f"failed={len(failed)}", flush=True))

import trpc_kafka
from trpc_kafka._producer import new_client_proxy

trpc_kafka.async_producer_error_callback = lambda err, *a: failed.append(err)

async def main() -> None:
    proxy = new_client_proxy("script", target=sys.argv[1])
    for i in range(int(sys.argv[3])):
        await proxy.async_send_message(sys.argv[2], None, str(i))

asyncio.run(main())
"""


def _run_script(target: str, topic: str, count: int) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), target, topic, str(count)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    return out.stdout, time.monotonic() - start


def test_script_exit_flushes_async_sends(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=2)
    stdout, _ = _run_script(f"kafka://{kafka_bootstrap}?flushFrequency=300", topic, 200)
    assert "failed=0" in stdout
    assert len(consume(kafka_bootstrap, topic, 200)) == 200


def test_script_exit_is_bounded_and_reports_the_undelivered() -> None:
    stdout, took = _run_script(f"kafka://127.0.0.1:{closed_port()}", "t", 30)
    # The exit hook waits ATEXIT_FLUSH_TIMEOUT, then purges and reports each message.
    assert "failed=30" in stdout
    assert took < pool_mod.ATEXIT_FLUSH_TIMEOUT + pool_mod.PURGE_GRACE + 5


async def test_a_non_last_close_waits_for_the_queue_without_polling(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """An earlier proxy's close returns once the shared producer's queue was empty at a poll:
    woken by the delivery thread, not by a sleep loop; the producer stays open for the other."""
    topic = new_topic()
    reports = Reports()
    target = f"kafka://{kafka_bootstrap}?flushFrequency=200"
    first, second = new_client_proxy("a", target=target), new_client_proxy("b", target=target)
    await second.send_message(topic, None, b"bind")
    for _ in range(50):
        await first.async_send_message(topic, None, b"a")
    entry = first._entry
    assert entry is not None and entry.queued() > 0  # held back by the 200 ms linger
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def counting_sleep(delay: float, *args: Any) -> Any:
        sleeps.append(delay)
        return await real_sleep(delay, *args)

    with mock.patch("asyncio.sleep", counting_sleep):
        await first.close(timeout=load_scaled(20))
    assert sleeps == []
    assert len(reports.ok) == 50 and entry.queued() == 0
    assert not entry.closed and pool_mod.live_entries() == [entry]
    assert (await second.send_message(topic, None, b"still open"))[1] >= 0
    await second.close()
    assert entry.closed


async def test_the_pool_executor_is_one_and_stops_with_the_pool(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=2)
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}?partitioner=roundrobin")
    await proxy.send_message(topic, None, b"v")  # creation and a look-up: on the executor
    [executor] = pool_mod._executor
    workers = list(executor._threads)
    assert workers and all(t.name.startswith("trpc-kafka-producer-bg") for t in workers)
    assert all(t.daemon for t in workers)
    await close_all_producers(5.0)
    assert pool_mod._executor == []
    for thread in workers:
        thread.join(load_scaled(5))
        assert not thread.is_alive()
    await proxy.send_message(topic, None, b"again")  # a new executor on demand
    assert len(pool_mod._executor) == 1


# -- producers that report failures only (async=1, nothing observes success) --------------


def _high_watermarks(bootstrap: str, topic: str) -> int:
    """Messages on the broker in ``topic`` now (the sum of its partitions' high watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()


class Failures:
    """A proxy's own error callback: every failed value, in arrival order (thread-safe)."""

    def __init__(self) -> None:
        self.values: list[bytes | None] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()

    def __call__(
        self, err: BaseException, topic: str, key: bytes | None, value: bytes | None, headers: Any
    ) -> None:
        with self.lock:
            self.values.append(value)
            self.errors.append(err)


async def test_async_1_errors_only_producer_close_waits_for_every_message(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    failures = Failures()
    proxy = new_client_proxy(
        "errors-only", target=f"kafka://{kafka_bootstrap}?async=1", error_callback=failures
    )
    n = 3000
    for i in range(n):
        await proxy.async_send_message(topic, None, b"%d" % i)
    assert await proxy.send_message(topic, None, b"last") == (-1, -1)  # async=1: queued only
    entry = proxy._entry
    assert entry is not None and entry.errors_only
    await proxy.close()
    # close() returned: every message is on the broker, none failed.
    assert _high_watermarks(kafka_bootstrap, topic) == n + 1
    assert failures.values == []
    assert entry.finished.is_set()


async def test_errors_only_producer_reports_each_failure_exactly_once(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    failures = Failures()
    proxy = new_client_proxy(
        "errors-only",
        target=(
            f"kafka://{kafka_bootstrap}?async=1&metadataAllowAutoTopicCreation=false"
            "&rdkafka.message.timeout.ms=1000"
        ),
        error_callback=failures,
    )
    for i in range(5):
        await proxy.async_send_message("no-such-topic-for-errors-only", None, b"bad%d" % i)
        await proxy.async_send_message(topic, None, b"good%d" % i)
    entry = proxy._entry
    assert entry is not None and entry.errors_only
    await proxy.close()
    assert sorted(v or b"" for v in failures.values) == [b"bad%d" % i for i in range(5)]
    assert all(isinstance(e, TrpcError) and e.code in (101, 141) for e in failures.errors)
    assert _high_watermarks(kafka_bootstrap, topic) == 5


async def test_acked_sends_on_the_same_address_never_share_an_errors_only_producer(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    target = f"kafka://{kafka_bootstrap}?compression=none"
    fire_and_forget = new_client_proxy("ff", target=target + "&async=1")
    acked = new_client_proxy("acked", target=target, timeout=15.0)
    await fire_and_forget.async_send_message(topic, None, b"ff")
    # A report that never came would be a timeout (code 101) here.
    assert (await acked.send_message(topic, None, b"acked"))[1] >= 0
    assert acked.send_message_sync(topic, None, b"acked-sync")[1] >= 0
    # async=0: its async_send_message shares the acked sends' producer, which reports all.
    await acked.async_send_message(topic, None, b"acked-async")
    ff_entry, acked_entry = fire_and_forget._entry, acked._entry
    assert ff_entry is not None and acked_entry is not None
    assert ff_entry is not acked_entry
    assert ff_entry.errors_only and not acked_entry.errors_only
    await fire_and_forget.close()
    await acked.close()
    assert _high_watermarks(kafka_bootstrap, topic) == 4


async def test_a_success_callback_given_or_assigned_gets_every_later_success(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    mine: list[bytes | None] = []
    own = new_client_proxy(
        "own",
        target=f"kafka://{kafka_bootstrap}?async=1",
        success_callback=lambda t, k, v, h: mine.append(v),
    )
    quiet = new_client_proxy("quiet", target=f"kafka://{kafka_bootstrap}?async=1")
    await own.async_send_message(topic, None, b"own")
    for i in range(10):
        await quiet.async_send_message(topic, None, b"before%d" % i)
    own_entry, first = own._entry, quiet._entry
    assert own_entry is not None and not own_entry.errors_only
    assert first is not None and first.errors_only
    reports = Reports()  # assigns the package success callback: the quiet producer retires
    assert first.closed
    for i in range(10):
        await quiet.async_send_message(topic, None, b"after%d" % i)
    second = quiet._entry
    assert second is not None and second is not first and not second.errors_only
    await quiet.close()
    await own.close()
    assert first.wait_closed(30)  # drained, not purged: all 21 are on the broker
    assert sorted(r[2] or b"" for r in reports.ok) == [b"after%d" % i for i in range(10)]
    assert mine == [b"own"]
    assert reports.failed == []
    assert _high_watermarks(kafka_bootstrap, topic) == 21


async def test_a_success_callback_assigned_while_the_producer_is_built(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    built: list[dict[str, Any]] = []
    reports: list[Reports] = []

    def factory(settings: dict[str, Any]) -> Producer:
        built.append(settings)
        if settings.get(entry_mod.ERRORS_ONLY) and not reports:
            reports.append(Reports())  # assigned between the pool's decision and publishing
        return Producer(settings)

    pool_mod.set_producer_factory(factory)
    proxy = new_client_proxy("quiet", target=f"kafka://{kafka_bootstrap}?async=1")
    await proxy.async_send_message(topic, None, b"v")
    entry = proxy._entry
    assert entry is not None and not entry.errors_only
    assert [bool(s.get(entry_mod.ERRORS_ONLY)) for s in built] == [True, False]
    await proxy.close()
    assert [r[2] for r in reports[0].ok] == [b"v"]


@pytest.mark.parametrize("blocking", [False, True])
async def test_a_send_waiting_for_room_when_its_producer_retires_moves_to_the_new_one(
    kafka_bootstrap: str, new_topic: NewTopic, blocking: bool
) -> None:
    topic = new_topic()
    # Room for 5 messages, each held 300 ms before it is sent: the 6th waits for room.
    proxy = new_client_proxy(
        "quiet",
        target=(
            f"kafka://{kafka_bootstrap}?async=1&flushFrequency=300"
            "&rdkafka.queue.buffering.max.messages=5"
        ),
    )
    for i in range(5):
        await proxy.async_send_message(topic, None, b"%d" % i)
    first = proxy._entry
    assert first is not None and first.errors_only
    if blocking:
        waiting = asyncio.ensure_future(
            asyncio.to_thread(proxy.async_send_message_sync, topic, None, b"waiting")
        )
    else:
        waiting = asyncio.ensure_future(proxy.async_send_message(topic, None, b"waiting"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # still waiting for room
    reports = Reports()  # the quiet producer retires while the send waits
    await asyncio.wait_for(waiting, 10)  # not "producer closed": sent by the new producer
    assert proxy._entry is not first
    reports.wait(1)
    await proxy.close()
    assert first.wait_closed(30)
    assert [r[2] for r in reports.ok] == [b"waiting"]
    assert _high_watermarks(kafka_bootstrap, topic) == 6
