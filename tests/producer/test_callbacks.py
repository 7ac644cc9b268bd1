"""The async-send callbacks: defaults, and the one path from the package attributes to the
delivery reports (``trpc_kafka.<name> = fn`` -> ``callbacks.package_callbacks`` ->
``delivery.AsyncReporter``), exercised with real confluent-kafka ``Message`` objects."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

import trpc_kafka
from trpc_kafka._producer import callbacks
from trpc_kafka._producer.delivery import AsyncReporter
from trpc_kafka._runtime.errors import TrpcError, framework_error


def test_default_success_does_nothing() -> None:
    callbacks.async_producer_success_callback("t", b"k", b"v", None)
    assert callbacks.success_callback(None) is None  # the delivery path skips it


def test_default_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    err = framework_error(141, "kafka client transport AsyncSendMessage: boom")
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.producer"):
        callbacks.async_producer_error_callback(err, "topic-x", b"k", b"value", None)
    assert "topic-x" in caplog.text
    assert "boom" in caplog.text


class Seen:
    def __init__(self) -> None:
        self.ok: list[tuple[Any, ...]] = []
        self.failed: list[tuple[Any, ...]] = []

    def success(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        self.ok.append((topic, key, value, headers))

    def error(
        self, err: BaseException, topic: str, key: bytes | None, value: bytes | None, headers: Any
    ) -> None:
        self.failed.append((err, topic, key, value, headers))


def _msg() -> Message:
    return Message(topic="orders", key=b"k", value=b"v")


def test_package_assignment_reaches_the_delivery_path() -> None:
    seen = Seen()
    reporter = AsyncReporter("p", None, None)  # made before the assignment: read at report time
    trpc_kafka.async_producer_success_callback = seen.success
    trpc_kafka.async_producer_error_callback = seen.error
    reporter.deliver(None, _msg())
    reporter.deliver(KafkaError(KafkaError._MSG_TIMED_OUT, "late"), _msg())
    reporter.with_headers([("h", "1")])(None, _msg())
    assert seen.ok == [("orders", b"k", b"v", None), ("orders", b"k", b"v", [("h", b"1")])]
    [(err, topic, key, value, headers)] = seen.failed
    assert isinstance(err, TrpcError) and err.code == 101 and "AsyncSendMessage" in err.msg
    assert (topic, key, value, headers) == ("orders", b"k", b"v", None)


def test_deleting_the_attribute_restores_the_default() -> None:
    seen = Seen()
    trpc_kafka.async_producer_success_callback = seen.success
    assert callbacks.success_callback(None) == seen.success
    del trpc_kafka.async_producer_success_callback
    assert callbacks.success_callback(None) is None
    AsyncReporter("p", None, None).deliver(None, _msg())
    assert seen.ok == []


def test_a_proxy_pair_wins_over_the_package_pair() -> None:
    package, own = Seen(), Seen()
    trpc_kafka.async_producer_success_callback = package.success
    trpc_kafka.async_producer_error_callback = package.error
    reporter = AsyncReporter("p", own.success, own.error)
    reporter.deliver(None, _msg())
    reporter.deliver(KafkaError(KafkaError._PURGE_QUEUE, "purged"), _msg())
    assert len(own.ok) == 1 and len(own.failed) == 1
    assert package.ok == [] and package.failed == []


def test_a_raising_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def boom(topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        raise RuntimeError("callback bug")

    trpc_kafka.async_producer_success_callback = boom
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.producer"):
        AsyncReporter("p", None, None).deliver(None, _msg())
    assert "async send callback raised" in caplog.text
