"""Producer calls against the real broker: results, callbacks, errors and their codes."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.producer._util import closed_port, consume, consume_none
from tests.security._util import load_scaled
from trpc_kafka._producer import ProducerMessage, new_client_proxy
from trpc_kafka._producer.entry import set_producer_factory
from trpc_kafka._producer.proxy import CanceledError, ClientProxy
from trpc_kafka._runtime.context import Context, use_context
from trpc_kafka._runtime.errors import TrpcError

NewTopic = Callable[..., str]


def _proxy(bootstrap: str, query: str = "", **kwargs: Any) -> ClientProxy:
    sep = "?" if query else ""
    return new_client_proxy(
        "trpc.test.producer", target=f"kafka://{bootstrap}{sep}{query}", **kwargs
    )


class Reports:
    """Installs package-level callbacks that record every report (thread-safe)."""

    def __init__(self) -> None:
        self.ok: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.failed: list[tuple[BaseException, str, bytes | None, bytes | None, Any]] = []
        self.done = threading.Condition()
        package = sys.modules["trpc_kafka"]
        package.async_producer_success_callback = self.success  # type: ignore[attr-defined]
        package.async_producer_error_callback = self.error  # type: ignore[attr-defined]

    def success(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        with self.done:
            self.ok.append((topic, key, value, headers))
            self.done.notify_all()

    def error(
        self, err: BaseException, topic: str, key: bytes | None, value: bytes | None, headers: Any
    ) -> None:
        with self.done:
            self.failed.append((err, topic, key, value, headers))
            self.done.notify_all()

    def wait(self, count: int, timeout: float = 20.0) -> None:
        with self.done:
            assert self.done.wait_for(lambda: len(self.ok) + len(self.failed) >= count, timeout)


# -- the four calls -----------------------------------------------------------------------


async def test_send_message_returns_partition_and_offset(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=1)
    proxy = _proxy(kafka_bootstrap, "compression=none")
    first = await proxy.send_message(topic, b"k1", b"v1", [("h", b"1"), ("h", "2")])
    second = await proxy.send_message(topic, "k2", "v2")
    assert first == (0, 0)
    assert second == (0, 1)
    records = consume(kafka_bootstrap, topic, 2)
    assert [(r.key, r.value) for r in records] == [(b"k1", b"v1"), (b"k2", b"v2")]
    assert records[0].headers == [("h", b"1"), ("h", b"2")]
    await proxy.close()


async def test_null_key_and_value(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap)
    await proxy.send_message(topic, None, None)
    (record,) = consume(kafka_bootstrap, topic, 1)
    assert record.key is None and record.value is None


async def test_produce_goes_to_the_target_topic(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap, f"topic={topic}")
    await proxy.produce(b"k", b"v", {"trace": b"x"})
    (record,) = consume(kafka_bootstrap, topic, 1)
    assert (record.key, record.value, record.headers) == (b"k", b"v", [("trace", b"x")])


async def test_produce_without_topic_is_141_empty_topic(kafka_bootstrap: str) -> None:
    proxy = _proxy(kafka_bootstrap)
    with pytest.raises(TrpcError) as info:
        await proxy.produce(b"k", b"v")
    assert info.value.code == 141
    assert "empty topic" in info.value.msg
    with pytest.raises(TrpcError, match="empty topic"):
        proxy.produce_sync(b"k", b"v")


async def test_send_raw_message_partition_and_timestamp(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=3)
    proxy = _proxy(kafka_bootstrap)
    msg = ProducerMessage(
        topic,
        value=b"raw",
        key=b"k",
        headers=[("a", b"b")],
        partition=2,
        timestamp=1_600_000_000_123,
    )
    partition, offset = await proxy.send_raw_message(msg)
    assert (partition, offset) == (2, 0)
    (record,) = consume(kafka_bootstrap, topic, 1)
    assert (record.partition, record.timestamp, record.headers) == (
        2,
        1_600_000_000_123,
        [("a", b"b")],
    )


async def test_send_raw_message_bad_fields_are_121(kafka_bootstrap: str) -> None:
    proxy = _proxy(kafka_bootstrap)
    with pytest.raises(TrpcError) as info:
        await proxy.send_raw_message(ProducerMessage("t", partition=-3))
    assert info.value.code == 121
    with pytest.raises(TrpcError) as info:
        await proxy.send_raw_message("not a message")  # type: ignore[arg-type]
    assert info.value.code == 121


async def test_send_raw_message_to_missing_partition_is_141(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=1)
    proxy = _proxy(kafka_bootstrap)
    await proxy.send_message(topic, None, b"warm-up: metadata known")
    with pytest.raises(TrpcError) as info:
        await proxy.send_raw_message(ProducerMessage(topic, value=b"x", partition=7))
    assert info.value.code == 141
    assert info.value.msg.startswith("kafka client transport SendMessage: ")
    assert "partition" in info.value.msg


# -- async sends and their callbacks ------------------------------------------------------


async def test_async_send_reports_success_with_headers(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    reports = Reports()
    proxy = _proxy(kafka_bootstrap)
    await proxy.async_send_message(topic, b"k", b"v", [("h", "text"), ("n", None)])
    await proxy.async_send_message(topic, "k2", "v2")
    reports.wait(2)
    assert sorted(reports.ok, key=lambda r: str(r[1])) == [
        (topic, b"k", b"v", [("h", b"text"), ("n", None)]),
        (topic, b"k2", b"v2", None),
    ]
    assert reports.failed == []


async def test_callbacks_are_read_when_the_report_arrives(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap, "flushFrequency=300")  # reports come 300 ms later
    await proxy.async_send_message(topic, b"k", b"v")
    reports = Reports()  # installed after the send, before the report
    reports.wait(1)
    assert reports.ok == [(topic, b"k", b"v", None)]


async def test_async_send_failure_goes_to_the_error_callback(kafka_bootstrap: str) -> None:
    reports = Reports()
    proxy = _proxy(
        kafka_bootstrap,
        "metadataAllowAutoTopicCreation=false&rdkafka.message.timeout.ms=1000",
    )
    for i in range(3):
        await proxy.async_send_message("no-such-topic-for-producer-tests", str(i), b"v")
    reports.wait(3)
    assert reports.ok == []
    assert sorted(f[2] or b"" for f in reports.failed) == [b"0", b"1", b"2"]
    err = reports.failed[0][0]
    assert isinstance(err, TrpcError)
    assert err.msg.startswith("kafka client transport AsyncSendMessage: ")
    assert err.code in (101, 141)
    assert err.__cause__ is not None


async def test_proxy_callbacks_override_the_package_ones(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    package_reports = Reports()
    mine: list[bytes | None] = []
    done = threading.Event()

    def success(topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        mine.append(value)
        done.set()

    proxy = _proxy(kafka_bootstrap, success_callback=success)
    await proxy.async_send_message(topic, None, b"mine")
    assert done.wait(10)
    assert mine == [b"mine"]
    assert package_reports.ok == []


async def test_a_raising_callback_breaks_nothing(
    kafka_bootstrap: str, new_topic: NewTopic, caplog: pytest.LogCaptureFixture
) -> None:
    topic = new_topic()
    seen: list[bytes | None] = []
    all_seen = threading.Event()

    def success(topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        seen.append(value)
        if len(seen) == 20:
            all_seen.set()
        if value == b"3":
            raise RuntimeError("callback bug")

    sys.modules["trpc_kafka"].async_producer_success_callback = success  # type: ignore[attr-defined]
    proxy = _proxy(kafka_bootstrap)
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.producer"):
        for i in range(20):
            await proxy.async_send_message(topic, None, str(i))
        assert all_seen.wait(10)
        assert sorted(seen, key=lambda v: int(v or b"0")) == [str(i).encode() for i in range(20)]
        # The proxy still works after the callback raised.
        assert (await proxy.send_message(topic, None, b"after"))[1] == 20
    assert "callback bug" in caplog.text


async def test_async_1_makes_produce_and_send_asynchronous(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    reports = Reports()
    proxy = _proxy(kafka_bootstrap, f"topic={topic}&async=1")
    await proxy.produce(b"a", b"1")
    assert await proxy.send_message(topic, b"b", b"2") == (-1, -1)
    assert await proxy.send_raw_message(ProducerMessage(topic, value=b"3")) == (-1, -1)
    assert proxy.send_message_sync(topic, b"c", b"4") == (-1, -1)
    reports.wait(4)
    assert sorted(r[2] or b"" for r in reports.ok) == [b"1", b"2", b"3", b"4"]


# -- type errors: 121 before anything is queued -------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "headers", "text"),
    [
        (5, b"v", None, "key: must be bytes, str or None, got int"),
        (b"k", 1.5, None, "value: must be bytes, str or None, got float"),
        (b"k", bytearray(b"v"), None, "value: must be bytes, str or None, got bytearray"),
        (b"k", b"v", [("h", 1)], "value must be bytes, str or None, got int"),
        (b"k", b"v", [(1, b"x")], "name must be str, got int"),
        (b"k", b"v", "h=1", "must be a list of (name, value) pairs or a mapping"),
    ],
)
async def test_bad_types_are_121_and_nothing_is_queued(  # noqa: PLR0917 - pytest parameters
    kafka_bootstrap: str, new_topic: NewTopic, key: Any, value: Any, headers: Any, text: str
) -> None:
    topic = new_topic()
    reports = Reports()
    proxy = _proxy(kafka_bootstrap, f"topic={topic}")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: proxy.send_message(topic, key, value, headers),
        lambda: proxy.async_send_message(topic, key, value, headers),
        lambda: proxy.produce(key, value, headers),
        lambda: proxy.send_raw_message(ProducerMessage(topic, value, key, headers)),
    ]
    for call in calls:
        with pytest.raises(TrpcError) as info:
            await call()
        assert info.value.code == 121
        assert text in info.value.msg
    with pytest.raises(TrpcError) as info:
        proxy.send_message_sync(topic, key, value, headers)
    assert info.value.code == 121
    entry = proxy._entry
    assert entry is None or entry.queued() == 0
    assert consume_none(kafka_bootstrap, topic, 0.5) == []
    assert reports.failed == []


async def test_hash_partitioner_rejects_bad_key_types_with_121(kafka_bootstrap: str) -> None:
    proxy = _proxy(kafka_bootstrap, "partitioner=hash")
    with pytest.raises(TrpcError) as info:
        await proxy.send_message("any", 42, b"v")  # type: ignore[arg-type]
    assert info.value.code == 121


# -- timeouts, deadlines, cancellation ---------------------------------------------------


async def test_timeout_is_101(silent_port: int) -> None:
    proxy = new_client_proxy("p", target=f"kafka://127.0.0.1:{silent_port}", timeout=0.4)
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        await proxy.send_message("t", b"k", b"v")
    took = time.monotonic() - start
    assert info.value.code == 101
    assert "SendMessage" in info.value.msg
    assert 0.35 < took < load_scaled(1.5)
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        proxy.send_message_sync("t", b"k", b"v")
    assert info.value.code == 101
    assert 0.35 < time.monotonic() - start < load_scaled(1.5)


async def test_context_deadline_earlier_than_timeout_wins(silent_port: int) -> None:
    proxy = new_client_proxy("p", target=f"kafka://127.0.0.1:{silent_port}", timeout=5)
    start = time.monotonic()
    with use_context(Context(deadline=time.monotonic() + 0.3)), pytest.raises(TrpcError) as info:
        await proxy.send_message("t", b"k", b"v")
    assert info.value.code == 101
    assert time.monotonic() - start < load_scaled(1.5)


async def test_a_passed_deadline_fails_before_sending(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap)
    await proxy.send_message(topic, None, b"bound")
    late = Context(deadline=time.monotonic() - 0.01)
    with use_context(late):
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: proxy.send_message(topic, None, b"late"),
            lambda: proxy.send_raw_message(ProducerMessage(topic, b"late")),
        ]
        for call in calls:
            with pytest.raises(TrpcError) as info:
                await call()
            assert info.value.code == 101
        with pytest.raises(TrpcError):
            proxy.send_message_sync(topic, None, b"late")
    assert [r.value for r in consume(kafka_bootstrap, topic, 1)] == [b"bound"]
    assert len(consume_none(kafka_bootstrap, topic, 0.5)) == 1


async def test_timeout_waiting_for_partition_count_is_101(silent_port: int) -> None:
    proxy = new_client_proxy(
        "p", target=f"kafka://127.0.0.1:{silent_port}?partitioner=roundrobin", timeout=0.3
    )
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        await proxy.send_message("t", b"k", b"v")
    assert info.value.code == 101
    assert "partition count" in info.value.msg
    assert time.monotonic() - start < load_scaled(1.5)


async def test_cancel_is_161_and_the_task_ends_cancelled() -> None:
    proxy = new_client_proxy("p", target=f"kafka://127.0.0.1:{closed_port()}")
    task = asyncio.create_task(proxy.send_message("t", b"k", b"v"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(TrpcError) as info:
        await task
    assert info.value.code == 161
    assert isinstance(info.value, CanceledError)
    assert isinstance(info.value, asyncio.CancelledError)
    assert task.cancelled()


async def test_wait_for_around_a_call_still_times_out() -> None:
    proxy = new_client_proxy("p", target=f"kafka://127.0.0.1:{closed_port()}")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(proxy.send_message("t", b"k", b"v"), 0.2)


# -- librdkafka failures: 141 in the reference's shape -----------------------------------


async def test_oversize_message_fails_fast_with_a_clear_error(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap, "maxMessageBytes=1000&compression=none")
    start = time.monotonic()
    oversize: list[Callable[[], Awaitable[Any]]] = [
        lambda: proxy.send_message(topic, None, b"x" * 5000),
        lambda: proxy.async_send_message(topic, None, b"x" * 5000),
    ]
    for call in oversize:
        with pytest.raises(TrpcError) as info:
            await call()
        assert info.value.code == 141
        assert "maxMessageBytes" in info.value.msg
        assert str(info.value).startswith("type:framework, code:141, msg:kafka client transport ")
    assert time.monotonic() - start < load_scaled(1.0)
    assert await proxy.send_message(topic, None, b"x" * 500) == (0, 0)


async def test_closed_proxy_fails_with_141(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap)
    await proxy.send_message(topic, None, b"v")
    await proxy.close()
    assert proxy.closed
    with pytest.raises(TrpcError) as info:
        await proxy.send_message(topic, None, b"v")
    assert info.value.code == 141
    assert "closed" in info.value.msg
    await proxy.close()  # twice is fine


# -- trpcMeta -------------------------------------------------------------------------


async def test_trpc_meta_appends_context_metadata_after_own_headers(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap, f"topic={topic}&trpcMeta=true")
    ctx = Context(metadata={"trace-id": b"abc", "user": b"u1"})
    with use_context(ctx):
        await proxy.send_message(topic, b"1", b"v", [("own", b"h"), ("trace-id", b"mine")])
        await proxy.produce(b"2", b"v")
        proxy.send_message_sync(topic, b"3", b"v", {"own": b"d"})
    await proxy.send_message(topic, b"4", b"v", [("own", b"h")])  # no context: nothing added
    records = {r.key: r.headers for r in consume(kafka_bootstrap, topic, 4)}
    assert records[b"1"] == [
        ("own", b"h"),
        ("trace-id", b"mine"),
        ("trace-id", b"abc"),
        ("user", b"u1"),
    ]
    assert records[b"2"] == [("trace-id", b"abc"), ("user", b"u1")]
    assert records[b"3"] == [("own", b"d"), ("trace-id", b"abc"), ("user", b"u1")]
    assert records[b"4"] == [("own", b"h")]


async def test_without_trpc_meta_metadata_stays_out(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap)
    with use_context(Context(metadata={"trace-id": b"abc"})):
        await proxy.send_message(topic, b"1", b"v")
    (record,) = consume(kafka_bootstrap, topic, 1)
    assert record.headers == []


# -- the hot paths: what they pass to librdkafka -------------------------------------------


class _RecordingProducer(Producer):
    """A real producer that records how each ``produce`` was called."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((len(args), tuple(sorted(kwargs))))
        super().produce(*args, **kwargs)


async def test_hot_paths_pass_positional_arguments_and_still_deliver(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    # Keyword arguments cost the binding ~0.6 us a call (bench/results/producer-perf.md): the
    # hot paths (and the general path without timestamp or headers) pass none, and every send
    # still lands on the broker with exactly one report.
    built: list[_RecordingProducer] = []

    def factory(settings: dict[str, Any]) -> Producer:
        built.append(_RecordingProducer(settings))
        return built[-1]

    set_producer_factory(factory)
    topic = new_topic(partitions=2)
    reports = Reports()
    proxy = _proxy(kafka_bootstrap, "compression=none")
    hashed = _proxy(kafka_bootstrap, "compression=none&partitioner=hash")
    first = await proxy.send_message(topic, b"k1", b"acked")  # binds the producer
    second = await proxy.send_message(topic, b"k2", b"acked-hot")
    await proxy.async_send_message(topic, b"k3", b"async-hot")
    third = await hashed.send_message(topic, b"k4", b"acked-hash")  # the general path
    reports.wait(1)
    assert reports.ok == [(topic, b"k3", b"async-hot", None)]
    assert reports.failed == []
    assert all(offset >= 0 for _, offset in (first, second, third))
    assert len(built) == 1  # one pooled producer for the address
    calls = built[0].calls
    assert calls == [(5, ())] * 4, calls
    records = consume(kafka_bootstrap, topic, 4)
    assert sorted(r.value or b"" for r in records) == [
        b"acked",
        b"acked-hash",
        b"acked-hot",
        b"async-hot",
    ]
    await proxy.close()
    await hashed.close()
