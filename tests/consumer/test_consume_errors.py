"""Clear failures (seed FAQ): unreachable brokers, unknown topics, authorization."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

import pytest
from confluent_kafka import KafkaError

from tests.consumer._util import one_service, serving, transport_of, wait_until
from trpc_kafka._consumer import ConsumerMessage, register_kafka_handler_service
from trpc_kafka._consumer.transport import KafkaServiceTransport
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.errors import TrpcError
from trpc_kafka._runtime.server import Service


async def _noop(ctx: Context, msg: ConsumerMessage) -> None:
    return None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_brokers_are_logged_and_the_service_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _closed_port()
    server = one_service(f"127.0.0.1:{port}?topics=t&group=g-{uuid.uuid4().hex[:6]}")
    register_kafka_handler_service(server, _noop)
    with caplog.at_level(logging.WARNING, logger="trpc_kafka.consumer"):
        async with serving(server) as task:
            await wait_until(
                lambda: "Is your cluster reachable?" in caplog.text, timeout=60, what="the hint"
            )
            await asyncio.sleep(1.0)
            assert not task.done(), "the server keeps serving"
            assert not server.closing
            assert server.service("consumer").failure is None
    record = next(r for r in caplog.records if "reachable" in r.getMessage())
    line = record.getMessage()
    assert record.levelno == logging.WARNING, "librdkafka reconnects by itself: transient"
    assert line.startswith("kafka server transport: consume fail: ")
    assert f"127.0.0.1:{port}" in line
    # The same failure is reported once, not once per reconnect attempt.
    assert sum("reachable" in r.getMessage() for r in caplog.records) <= 2


async def test_unknown_topic_is_named(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    missing = f"no-such-topic-{uuid.uuid4().hex[:6]}"
    addr = (
        f"{kafka_bootstrap}?topics={missing}&group=g-{uuid.uuid4().hex[:6]}"
        "&metadataAllowAutoTopicCreation=false"
    )
    server = one_service(addr)
    register_kafka_handler_service(server, _noop)
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.consumer"):
        async with serving(server):
            await wait_until(lambda: missing in caplog.text, timeout=30, what="topic error")
            assert not server.closing
    line = next(r.getMessage() for r in caplog.records if missing in r.getMessage())
    assert "consume fail" in line
    assert f"topic {missing!r} does not exist" in line


def test_authorization_failures_are_named_plainly(caplog: pytest.LogCaptureFixture) -> None:
    # The local broker runs without an authorizer, so the error is injected where librdkafka
    # would report it (error callback / consume errors of the poll thread).
    transport = KafkaServiceTransport(Service("svc", address="127.0.0.1:9?topics=t&group=g"))
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.consumer"):
        transport._report(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "orders")
        transport._report(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), None)
    lines = [r.getMessage() for r in caplog.records]
    assert "not authorized on topic 'orders'; check the user's ACLs" in lines[0]
    assert "not authorized; check the user's ACLs" in lines[1]
    assert all(line.startswith("kafka server transport: consume fail: ") for line in lines)


def test_repeated_errors_are_summarised(caplog: pytest.LogCaptureFixture) -> None:
    transport = KafkaServiceTransport(Service("svc", address="127.0.0.1:9?topics=t&group=g"))
    err = KafkaError(KafkaError._TRANSPORT)
    with caplog.at_level(logging.DEBUG, logger="trpc_kafka.consumer"):
        for _ in range(50):
            transport._report(err, None)
    assert len(caplog.records) == 1
    # The next window's line says how many were suppressed.
    transport._consume_errors._log._seen[KafkaError._TRANSPORT][0] -= 60
    transport._report(err, None)
    assert "(49 similar suppressed in the last 30s)" in caplog.records[-1].getMessage()


def test_transient_errors_are_warnings_others_errors(caplog: pytest.LogCaptureFixture) -> None:
    transport = KafkaServiceTransport(Service("svc", address="127.0.0.1:9?topics=t&group=g"))
    with caplog.at_level(logging.DEBUG, logger="trpc_kafka.consumer"):
        transport._report(KafkaError(KafkaError._ALL_BROKERS_DOWN), None)
        transport._report(KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE), None)
        transport._report(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "orders")
        transport._report(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "orders")
        # A TLS handshake that fails is reported as a transport error: it needs action.
        handshake = "ssl://h:9093/1: SSL handshake failed (after 2ms in state SSL_HANDSHAKE)"
        transport._report(KafkaError(KafkaError._TRANSPORT, handshake), None)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.WARNING] + [logging.ERROR] * 3


async def test_fatal_consumer_errors_stop_the_server(kafka_bootstrap: str, topic: str) -> None:
    server = one_service(f"{kafka_bootstrap}?topics={topic}&group=g-{uuid.uuid4().hex[:6]}")
    register_kafka_handler_service(server, _noop)
    task = asyncio.create_task(server.serve())
    service = server.service("consumer")
    await wait_until(lambda: service.transport is not None and transport_of(service).started)
    transport_of(service)._report(KafkaError(KafkaError._FENCED, fatal=True), None)
    with pytest.raises(TrpcError, match=r"consume fail: .*fenced"):
        await asyncio.wait_for(task, 30)
