"""A cluster that cannot be reached or refuses: calls fail fast, with the cause and the hint.

Issue 9 section 1: a send to a refusing address blocked 300 s (no timeout) and then said
``code:101 ... Message timed out``; with a timeout it said a bare 101; a missing topic that
could not be created ended the same way. The Go plugin answers in 0.75 s with code 141 and
"client has run out of available brokers to talk to".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError

from tests.producer._util import closed_port, consume
from tests.producer.test_proxy import Reports
from trpc_kafka._producer import ProducerMessage, new_client_proxy
from trpc_kafka._producer import entry as entry_mod
from trpc_kafka._producer.proxy import ClientProxy
from trpc_kafka._runtime.errors import TrpcError

HINT = "Is your cluster reachable?"
# When a refused cluster is known to be down: the grace, one probe, a poll, a busy machine.
FAIL_FAST = entry_mod.UNREACHABLE_GRACE + entry_mod.PROBE_TIMEOUT + 2.5


def _refusing() -> list[str]:
    """librdkafka's own example port (nothing listens on 1), and a port just freed."""
    return ["127.0.0.1:1", f"127.0.0.1:{closed_port()}"]


def _assert_refused(err: BaseException, topic: str) -> None:
    assert isinstance(err, TrpcError), err
    assert err.code == 141, err
    assert HINT in err.msg and "version=" in err.msg, err.msg
    assert "Connection refused" in err.msg, err.msg
    assert f"topic {topic!r}" in err.msg, err.msg


def _proxy(address: str, timeout: float | None, query: str = "") -> ClientProxy:
    target = f"kafka://{address}?{query}" if query else f"kafka://{address}"
    return new_client_proxy("p", target=target, timeout=timeout)


@pytest.mark.parametrize("address", _refusing())
@pytest.mark.parametrize("blocking", [False, True])
async def test_acked_send_without_timeout_fails_fast_with_141(address: str, blocking: bool) -> None:
    proxy = _proxy(address, None)
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        # Bounded here too: before the fix this waited librdkafka's 300 s.
        if blocking:
            sync = asyncio.to_thread(proxy.send_message_sync, "orders", b"k", b"v")
            await asyncio.wait_for(sync, 3 * FAIL_FAST)
        else:
            await asyncio.wait_for(proxy.send_message("orders", b"k", b"v"), 3 * FAIL_FAST)
    took = time.monotonic() - start
    _assert_refused(info.value, "orders")
    assert took < FAIL_FAST, took
    # Known now: the next calls (produce and its twin included) fail at once.
    for call in (
        lambda: proxy.send_message_sync("orders", b"k", b"v"),
        lambda: proxy.send_raw_message_sync(ProducerMessage("orders", b"v")),
    ):
        start = time.monotonic()
        with pytest.raises(TrpcError) as info:
            await asyncio.to_thread(call)
        _assert_refused(info.value, "orders")
        assert time.monotonic() - start < 1.0
    await proxy.close()


@pytest.mark.parametrize("blocking", [False, True])
async def test_timeout_while_the_cause_is_known_reports_the_cause(blocking: bool) -> None:
    """Shorter than the grace: the call ends at its timeout, with the cause, not a bare 101."""
    proxy = _proxy("127.0.0.1:1", 0.5)
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        if blocking:
            await asyncio.to_thread(proxy.send_message_sync, "orders", b"k", b"v")
        else:
            await proxy.send_message("orders", b"k", b"v")
    took = time.monotonic() - start
    _assert_refused(info.value, "orders")
    assert "timeout waiting for the broker's acknowledgement" in info.value.msg
    assert 0.45 < took < 1.5, took
    await proxy.close()


async def test_a_long_timeout_is_not_waited_for() -> None:
    proxy = _proxy("127.0.0.1:1", 20.0)
    start = time.monotonic()
    results = await asyncio.gather(
        *(proxy.send_message("orders", str(i), b"v") for i in range(50)), return_exceptions=True
    )
    assert time.monotonic() - start < FAIL_FAST
    for err in results:
        _assert_refused(err, "orders")  # type: ignore[arg-type]
    await proxy.close()


@pytest.mark.parametrize("blocking", [False, True])
async def test_async_sends_report_the_cause_to_the_error_callback(blocking: bool) -> None:
    reports = Reports()
    proxy = _proxy(f"127.0.0.1:{closed_port()}", None)
    start = time.monotonic()
    for i in range(10):
        if blocking:
            proxy.async_send_message_sync("orders", str(i), b"v")
        else:
            await proxy.async_send_message("orders", str(i), b"v")
    await asyncio.to_thread(reports.wait, 10, FAIL_FAST)
    assert time.monotonic() - start < FAIL_FAST
    assert reports.ok == []
    assert sorted(int(f[2] or b"0") for f in reports.failed) == list(range(10))
    for err, topic, *_ in reports.failed:
        assert topic == "orders"
        _assert_refused(err, "orders")
        assert "AsyncSendMessage" in str(err)
    await proxy.close()


@pytest.mark.parametrize("partitioner", ["hash", "roundrobin"])
async def test_partition_count_look_up_fails_with_the_cause(partitioner: str) -> None:
    proxy = _proxy("127.0.0.1:1", None, f"partitioner={partitioner}")
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        await proxy.send_message("orders", b"k", b"v")
    assert time.monotonic() - start < FAIL_FAST
    assert info.value.code == 141 and HINT in info.value.msg
    await proxy.close()


@pytest.mark.parametrize("blocking", [False, True])
async def test_unknown_topic_without_auto_creation_is_141_naming_it(
    kafka_bootstrap: str, blocking: bool
) -> None:
    proxy = _proxy(kafka_bootstrap, None, "metadataAllowAutoTopicCreation=false")
    topic = f"no-such-topic-{time.monotonic_ns()}"
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        if blocking:
            await asyncio.to_thread(proxy.send_message_sync, topic, b"k", b"v")
        else:
            await proxy.send_message(topic, b"k", b"v")
    assert time.monotonic() - start < entry_mod.UNKNOWN_TOPIC_WAIT_MS / 1000 + 3
    assert info.value.code == 141
    assert f"topic {topic!r} does not exist" in info.value.msg
    await proxy.close()


async def test_a_transient_transport_error_does_not_fail_a_healthy_cluster(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """One refused connection (a broker restarting, an idle connection closed) is no outage:
    the probe after the grace finds the cluster and clears the pending cause."""
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap, 10.0, "compression=none")
    await proxy.send_message(topic, None, b"0")
    entry = proxy._entry
    assert entry is not None
    refused = KafkaError(KafkaError._TRANSPORT, "b:9092/1: Connect failed: Connection refused")
    entry._on_error(refused)  # as librdkafka's error_cb would
    assert entry.known_cause() is refused
    deadline = time.monotonic() + 10
    sent = 1
    while entry.known_cause() is not None and time.monotonic() < deadline:
        await proxy.send_message(topic, None, str(sent))  # never failed meanwhile
        sent += 1
        await asyncio.sleep(0.05)
    assert entry.known_cause() is None and not entry.failing()
    assert sent > 1
    assert len(consume(kafka_bootstrap, topic, sent)) == sent


def test_default_bounds_reach_librdkafka_and_yield_to_the_address(kafka_bootstrap: str) -> None:
    from tests.producer.test_settings import Capture

    capture = Capture()
    for query in (
        "",
        "rdkafka.message.timeout.ms=5000&rdkafka.topic.metadata.propagation.max.ms=9",
    ):
        proxy = _proxy(kafka_bootstrap, None, query)
        proxy._bind(None)
        proxy.close_sync(0.5)
    ours, theirs = capture.settings
    assert ours["message.timeout.ms"] == entry_mod.MESSAGE_TIMEOUT_MS
    assert ours["topic.metadata.propagation.max.ms"] == entry_mod.UNKNOWN_TOPIC_WAIT_MS
    assert theirs["message.timeout.ms"] == "5000"
    assert theirs["topic.metadata.propagation.max.ms"] == "9"


async def test_an_unresolvable_host_fails_with_141_and_the_hint() -> None:
    proxy = _proxy("no-such-host.invalid:9092", None)  # .invalid never resolves (RFC 2606)
    start = time.monotonic()
    with pytest.raises(TrpcError) as info:
        # Generous: the resolver's own time comes on top of ours.
        await asyncio.wait_for(proxy.send_message("orders", b"k", b"v"), 30)
    assert time.monotonic() - start < FAIL_FAST + 10
    assert info.value.code == 141
    assert "resolve" in info.value.msg and HINT in info.value.msg
    await proxy.close()
