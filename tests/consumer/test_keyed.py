"""``keyConcurrency`` (keyed.py): keys of a partition handled concurrently, each key in order,
commits at the watermark; retries, dead letters, stops and revocations keep both."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tests.consumer._util import (
    address,
    assignment,
    committed,
    load_factor,
    new_group,
    one_service,
    serving,
    transport_of,
    wait_assigned,
    wait_until,
)
from tests.consumer.test_process import App, _config, _done
from trpc_kafka._consumer import (
    ConsumerMessage,
    ContinueWithoutCommit,
    get_raw_kafka_context,
    register_kafka_handler_service,
)
from trpc_kafka._consumer.keyed import KeyedWorker, Watermark
from trpc_kafka._consumer.partition import PartitionWorker
from trpc_kafka._runtime.context import Context, current_context
from trpc_kafka._runtime.filters import Handler
from trpc_kafka._runtime.server import Server, Service
from trpc_kafka.testing import InMemoryKafka

NewTopic = Callable[..., str]
Key = bytes | None


def produce_keyed(
    bootstrap: str, topic: str, keys: Sequence[Key], partition: int | None = 0
) -> None:
    """One record per entry of ``keys`` (value ``b"<i>"``), in order, acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, key in enumerate(keys):
        kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, str(i).encode(), key, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def assert_each_key_in_order(seen: Sequence[tuple[Key, int]]) -> None:
    last: dict[Key, int] = {}
    for key, offset in seen:
        assert offset > last.get(key, -1), f"key {key!r}: offset {offset} after {last[key]}"
        last[key] = offset


# -- the watermark (unit) ----------------------------------------------------------------------


def test_watermark_is_the_first_unfinished_offset() -> None:
    wm = Watermark()
    for offset in (10, 11, 12, 14, 15):  # 13: a gap (compaction, a transaction marker)
        wm.add(offset)
    assert wm.finish(12, True) == -1
    assert wm.finish(15, True) == -1
    assert wm.finish(10, True) == 10
    assert len(wm) == 4
    assert wm.finish(11, True) == 12  # 11, then 12 finished earlier
    assert wm.finish(14, True) == 15
    assert len(wm) == 0
    wm.add(16)
    assert wm.finish(16, True) == 16


def test_watermark_passes_but_never_lands_on_an_unmarked_record() -> None:
    """ContinueWithoutCommit, as in single mode: not committed itself, passed by the next."""
    wm = Watermark(handled=4)
    for offset in (5, 6, 7):
        wm.add(offset)
    assert wm.finish(5, False) == 4
    assert wm.finish(7, False) == 4
    assert wm.finish(6, True) == 6  # 7 unmarked: the commit stays after 6
    wm.add(8)
    assert wm.finish(8, True) == 8


def test_watermark_random_completion_orders() -> None:
    rng = random.Random(7)
    for _ in range(50):
        offsets = sorted(rng.sample(range(1000), 60))
        wm = Watermark()
        for offset in offsets:
            wm.add(offset)
        finished: set[int] = set()
        for offset in rng.sample(offsets, len(offsets)):
            handled = wm.finish(offset, True)
            finished.add(offset)
            prefix = -1
            for o in offsets:
                if o not in finished:
                    break
                prefix = o
            assert handled == prefix


# -- on the broker -----------------------------------------------------------------------------


async def test_each_key_in_order_under_random_delays_with_real_concurrency(
    kafka_bootstrap: str, topic: str
) -> None:
    rng = random.Random(14)
    keys: list[Key] = [f"k{rng.randrange(50)}".encode() for _ in range(2000)]
    for i in range(0, 2000, 97):  # keyless records and the empty key are ordering groups too
        keys[i] = None
        keys[i + 1] = b""
    produce_keyed(kafka_bootstrap, topic, keys)
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, "keyConcurrency=16"))
    seen: list[tuple[Key, int]] = []
    in_flight = max_in_flight = 0
    busy: set[Key] = set()

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        nonlocal in_flight, max_in_flight
        key = msg.key
        assert key not in busy, f"two records of key {key!r} at once"
        busy.add(key)
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        await asyncio.sleep(rng.random() * 0.005)
        seen.append((key, msg.offset))
        in_flight -= 1
        busy.discard(key)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(seen) >= 2000, 120, "every record handled")
        (worker,) = transport_of(server.service("consumer"))._workers.values()
        assert isinstance(worker, KeyedWorker)
        assert 1 < len(worker.slots) <= 16  # tasks reused, at most N
    assert sorted(o for _, o in seen) == list(range(2000))
    assert_each_key_in_order(seen)
    assert [k for k, _ in sorted(seen, key=lambda s: s[1])] == keys
    assert 1 < max_in_flight <= 16, max_in_flight
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 2000}


async def test_plain_def_handlers_run_concurrently_in_threads(
    kafka_bootstrap: str, topic: str
) -> None:
    keys: list[Key] = [f"k{i % 20}".encode() for i in range(400)]
    produce_keyed(kafka_bootstrap, topic, keys)
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, "keyConcurrency=8"))
    seen: list[tuple[Key, int]] = []
    threads: set[str] = set()

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.003)
        seen.append((msg.key, msg.offset))  # list.append is atomic

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(seen) >= 400, 120, "every record handled")
    assert sorted(o for _, o in seen) == list(range(400))
    assert_each_key_in_order(seen)
    assert len(threads) > 1, threads
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 400}


async def test_retries_and_dead_letters_hold_only_their_key(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """Key a fails twice then succeeds; key d always fails and is dead-lettered after maxRetry;
    their later records come after, and key b is handled meanwhile."""
    topic = new_topic()
    dead = new_topic()
    keys: list[Key] = [b"a", b"d", b"b", b"a", b"b", b"d", b"b", b"b"]
    produce_keyed(kafka_bootstrap, topic, keys)
    group = new_group()
    extra = f"keyConcurrency=4&maxRetry=2&retryInterval=300&deadLetterTopic={dead}"
    server = one_service(address(kafka_bootstrap, topic, group, extra))
    handled: list[tuple[Key, int, float]] = []
    attempts: dict[int, int] = {}

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        attempts[msg.offset] = attempts.get(msg.offset, 0) + 1
        if msg.offset == 0 and attempts[0] <= 2:
            raise RuntimeError("a: not yet")
        if msg.offset == 1:
            raise RuntimeError("d: never")
        handled.append((msg.key, msg.offset, time.monotonic()))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(handled) >= 6, 60, "the other records handled")
        await wait_until(
            lambda: committed(kafka_bootstrap, group, topic, 1) == {0: 8}, 30, "commit of all"
        )
    assert attempts[0] == 3 and attempts[1] == 3  # d: 1 + maxRetry, then the dead letter
    order = [o for _, o, _ in handled]
    assert order.index(0) < order.index(3)  # a's second record after its first succeeded
    at = {o: t for _, o, t in handled}
    # b was not held up by a's retries (>= 600 ms): its records were all done before a's.
    assert max(at[o] for o in (2, 4, 6, 7)) < at[0]
    assert 5 in at  # d's second record, after its first was dead-lettered
    assert_each_key_in_order([(k, o) for k, o, _ in handled])


async def test_stop_while_a_key_retries_commits_nothing_past_it(
    kafka_bootstrap: str, topic: str
) -> None:
    """Offset 1 (key x) never succeeds (maxRetry=0: for ever); the other keys finish. The
    commit at stop is the watermark: after offset 0, not after the others."""
    produce_keyed(kafka_bootstrap, topic, [b"w", b"x", b"y", b"z", b"y", b"x"])
    group = new_group()
    server = one_service(
        address(kafka_bootstrap, topic, group, "keyConcurrency=4&retryInterval=100")
    )
    handled: list[int] = []
    tries: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.offset == 1:
            tries.append(1)
            raise RuntimeError("x is stuck")
        handled.append(msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: sorted(handled) == [0, 2, 3, 4] and len(tries) >= 3)
    assert 5 not in handled  # x's second record waits behind its first
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 1}


async def test_continue_without_commit_is_passed_only_by_a_later_handled_record(
    kafka_bootstrap: str, topic: str
) -> None:
    """As in single mode: the record is not committed itself; the next handled one moves the
    commit past it."""
    produce_keyed(kafka_bootstrap, topic, [b"a"])
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, "keyConcurrency=4"))
    calls: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append(msg.offset)
        if msg.offset == 0:
            raise ContinueWithoutCommit

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: calls == [0])
    assert committed(kafka_bootstrap, group, topic, 1)[0] < 0
    produce_keyed(kafka_bootstrap, topic, [b"b"])
    server = one_service(address(kafka_bootstrap, topic, group, "keyConcurrency=4"))
    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: calls[-1] == 1)
    assert calls == [0, 0, 1]
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 2}


async def test_service_timeout_applies_per_record(kafka_bootstrap: str, topic: str) -> None:
    produce_keyed(kafka_bootstrap, topic, [b"slow", b"fast", b"fast"])
    group = new_group()
    server = one_service(
        address(kafka_bootstrap, topic, group, "keyConcurrency=4&maxRetry=1&retryInterval=50"),
        timeout=0.3,
    )
    calls: list[tuple[int, float]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append((msg.offset, time.monotonic()))
        if msg.offset == 0 and sum(1 for o, _ in calls if o == 0) == 1:
            await asyncio.sleep(30)  # the first attempt overruns the timeout

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(
            lambda: committed(kafka_bootstrap, group, topic, 1) == {0: 3}, 30, "all committed"
        )
    first, retry = (t for o, t in calls if o == 0)
    assert 0.25 < retry - first < 5.0
    assert all(t < retry for o, t in calls if o != 0)  # fast was not held by slow


async def test_a_member_joining_mid_stream_loses_nothing_and_keeps_key_order(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=2)
    rng = random.Random(3)
    for p in (0, 1):
        produce_keyed(
            kafka_bootstrap, topic, [f"k{rng.randrange(40)}".encode() for _ in range(1500)], p
        )
    group = new_group()
    addr = address(kafka_bootstrap, topic, group, "keyConcurrency=8&maxProcessingTime=2000")
    seen: dict[str, list[tuple[int, Key, int]]] = {"a": [], "b": []}

    def handler(member: str) -> Callable[[Context, ConsumerMessage], object]:
        async def handle(ctx: Context, msg: ConsumerMessage) -> None:
            # Slow until B handles something: A must not finish before B has joined.
            slow = not seen["b"] and len(seen["a"]) >= 300
            await asyncio.sleep((0.05 if slow else 0.002) + rng.random() * 0.004)
            seen[member].append((msg.partition, msg.key, msg.offset))

        return handle

    server_a = one_service(addr, name="a")
    register_kafka_handler_service(server_a, handler("a"))
    server_b = one_service(addr, name="b")
    register_kafka_handler_service(server_b, handler("b"))

    def distinct() -> set[tuple[int, int]]:
        return {(p, o) for m in seen.values() for p, _, o in m}

    async with serving(server_a):
        await wait_assigned(server_a.service("a"), 2)
        await wait_until(lambda: len(seen["a"]) >= 300, 60, "A under way")
        async with serving(server_b):
            await wait_until(lambda: bool(seen["b"]), 60, "B takes over a partition")
            assert len(assignment(server_a.service("a"))) == 1
            await wait_until(lambda: len(distinct()) >= 3000, 120, "every record handled")
    assert distinct() == {(p, o) for p in (0, 1) for o in range(1500)}
    for member in seen.values():
        for p in (0, 1):
            assert_each_key_in_order([(k, o) for q, k, o in member if q == p])
    moved = seen["b"][0][0]
    start_b = min(o for q, _, o in seen["b"] if q == moved)
    a_moved = {o for q, _, o in seen["a"] if q == moved}
    assert set(range(start_b)) <= a_moved, "B started past a record A had not handled"
    assert committed(kafka_bootstrap, group, topic, 2) == {0: 1500, 1: 1500}


def test_sigkill_mid_stream_loses_nothing(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    """A service process with keyConcurrency=32, SIGKILLed mid-stream while one record (offset
    HOLD) never finishes and the other keys go on past it: the offset committed before the kill
    never passed an unhandled record, and the restart handles the rest."""
    total, hold = 8000, 500
    rng = random.Random(32)
    produce_keyed(kafka_bootstrap, topic, [f"k{rng.randrange(200)}".encode() for _ in range(total)])
    group = new_group()
    config = _config(tmp_path, address(kafka_bootstrap, topic, group, "keyConcurrency=32"))
    out = tmp_path / "handled.txt"

    first = App(tmp_path, config, out, delay_ms=20, run=1, hold=hold)
    first.wait_for(lambda lines: len(_done(lines)) > 0, 60, "the first record")
    started = time.monotonic()
    # Past the first auto-commit (3 s), and well past the held record.
    first.wait_for(
        lambda lines: time.monotonic() - started > 4.0 and len(_done(lines)) > hold + 500,
        60,
        "progress",
    )
    first.proc.kill()
    first.proc.wait(10)
    run1 = [o for _, o in _done(first.lines())]
    assert hold not in run1
    assert max(run1) > hold + 400, "the other keys did not go on past the held record"
    assert len(run1) < total * 0.9, "killed too late to prove anything; slow the handler"
    assert run1 != sorted(run1), "no record finished out of offset order: no concurrency"
    at_kill = committed(kafka_bootstrap, group, topic, 1)[0]
    assert 0 < at_kill <= hold, f"committed {at_kill}: nothing, or past the held record"
    missing = set(range(at_kill)) - set(run1)
    assert not missing, f"committed {at_kill} past unhandled records {sorted(missing)[:10]}"

    second = App(tmp_path, config, out, delay_ms=0, run=2)
    second.wait_for(
        lambda lines: {o for _, o in _done(lines)} >= set(range(total)),
        120,
        "every record handled",
    )
    assert second.stop(signal.SIGTERM) == 0, second.tail()
    run2 = [o for _, o in _done(second.lines())][len(run1) :]
    assert min(run2) == at_kill  # resumed at the commit: duplicates only after it
    assert set(run1) | set(run2) == set(range(total))
    assert committed(kafka_bootstrap, group, topic, 1) == {0: total}


async def test_stop_lets_calls_in_progress_finish_then_commits_the_watermark(
    kafka_bootstrap: str, topic: str
) -> None:
    produce_keyed(kafka_bootstrap, topic, [b"slow", b"a", b"b", b"c"])
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, "keyConcurrency=4"))
    done: list[int] = []
    cancelled: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.offset == 0:
            try:
                await asyncio.sleep(1.5)
            except asyncio.CancelledError:
                cancelled.append(0)
                raise
        done.append(msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: sorted(done) == [1, 2, 3])
        workers = transport_of(server.service("consumer"))._workers
        assert [type(w) for w in workers.values()] == [KeyedWorker]
    assert done[-1] == 0 and not cancelled  # the stop waited for the call in progress
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 4}


async def test_stop_past_the_bound_cancels_the_call_and_commits_only_below_it(
    kafka_bootstrap: str, topic: str
) -> None:
    produce_keyed(kafka_bootstrap, topic, [b"a", b"hang", b"b", b"c"])
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, "keyConcurrency=4"), close_wait=3)
    done: list[int] = []
    cancelled: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.offset == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(1)
                raise
        done.append(msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: sorted(done) == [0, 2, 3])
        stopping = time.monotonic()
    assert cancelled == [1]
    assert time.monotonic() - stopping < 10 * load_factor()
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 1}


async def test_the_default_is_the_single_mode_worker(kafka_bootstrap: str, topic: str) -> None:
    produce_keyed(kafka_bootstrap, topic, [b"a"])
    server = one_service(address(kafka_bootstrap, topic, new_group()))
    done: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        done.append(msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: done == [0])
        workers = transport_of(server.service("consumer"))._workers
        assert [type(w) for w in workers.values()] == [PartitionWorker]


async def test_works_on_the_in_memory_cluster() -> None:
    """Users' tests with trpc_kafka.testing run the same mode (only the clients differ)."""
    async with InMemoryKafka(partitions=1) as kafka:
        server = one_service("127.0.0.1:9092?topics=t&group=g&initial=oldest&keyConcurrency=8")
        seen: list[tuple[Key, int]] = []
        in_flight = max_in_flight = 0

        async def handle(ctx: Context, msg: ConsumerMessage) -> None:
            nonlocal in_flight, max_in_flight
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1
            seen.append((msg.key, msg.offset))

        register_kafka_handler_service(server, handle)
        async with kafka.serving(server):
            for i in range(200):
                kafka.publish("t", b"v", key=f"k{i % 10}".encode())
            await kafka.wait_handled("t")
    assert sorted(o for _, o in seen) == list(range(200))
    assert_each_key_in_order(seen)
    assert max_in_flight > 1


async def test_filters_metadata_raw_context_and_limiter_as_in_single_mode(
    kafka_bootstrap: str, topic: str
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(12):
        producer.produce(topic, b"v", f"k{i % 4}".encode(), partition=0, headers=[("n", b"%d" % i)])
    assert producer.flush(30) == 0
    group = new_group()
    extra = "keyConcurrency=4&trpcMeta=true&limiterRate=20&limiterBurst=1"
    filtered: list[int] = []

    async def outer(ctx: Context, req: Any, next: Handler) -> Any:
        filtered.append(req.offset)
        return await next(ctx, req)

    server = Server(max_close_wait=10)
    server.add_service(
        Service("orders", address=address(kafka_bootstrap, topic, group, extra), filters=[outer])
    )
    seen: list[tuple[int, bytes, int, float]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        assert current_context() is ctx
        raw = get_raw_kafka_context(ctx)
        assert raw is not None and raw.claim.partition == 0 and raw.session.group == group
        seen.append((msg.offset, ctx.metadata["n"], raw.claim.initial_offset, time.monotonic()))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(seen) == 12, 30)
    assert sorted(filtered) == list(range(12))
    assert all(n == b"%d" % o and initial == 0 for o, n, initial, _ in seen)
    # 12 records at 20/s with a burst of 1, whatever the concurrency: >= 0.55 s.
    times = sorted(t for *_, t in seen)
    assert 0.45 <= times[-1] - times[0] < 3.0 * load_factor()


async def test_a_plain_def_call_that_overran_its_timeout_is_waited_for_before_the_retry(
    kafka_bootstrap: str, topic: str
) -> None:
    produce_keyed(kafka_bootstrap, topic, [b"slow", b"fast", b"fast", b"slow"])
    group = new_group()
    server = one_service(
        address(kafka_bootstrap, topic, group, "keyConcurrency=4&maxRetry=2&retryInterval=10"),
        timeout=0.3,
    )
    events: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        with lock:
            first = not any(o == msg.offset for _, o, _ in events)
            events.append(("start", msg.offset, time.monotonic()))
        if msg.offset == 0 and first:
            time.sleep(1.0)  # overruns the 0.3 s timeout; a thread cannot be interrupted
        with lock:
            events.append(("end", msg.offset, time.monotonic()))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(
            lambda: committed(kafka_bootstrap, group, topic, 1) == {0: 4}, 30, "all committed"
        )
    (first_start, retry_start) = [t for e, o, t in events if e == "start" and o == 0]
    first_end = min(t for e, o, t in events if e == "end" and o == 0)
    assert first_end - first_start >= 0.9  # the overrunning call ended first...
    assert retry_start >= first_end, "...and the retry did not overlap it"
    ends = {o: t for e, o, t in events if e == "end"}
    assert ends[1] < first_end and ends[2] < first_end  # the other key went on meanwhile
    assert min(t for e, o, t in events if e == "start" and o == 3) >= retry_start  # in order
