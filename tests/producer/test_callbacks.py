"""The module-level async-send callbacks: defaults, read at call time."""

from __future__ import annotations

import logging
import sys

import pytest

from trpc_kafka._producer import callbacks
from trpc_kafka._runtime.errors import framework_error


def test_default_success_does_nothing() -> None:
    callbacks.async_producer_success_callback("t", b"k", b"v", None)
    assert callbacks.is_default_success(callbacks.async_producer_success_callback)


def test_default_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    err = framework_error(141, "kafka client transport AsyncSendMessage: boom")
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.producer"):
        callbacks.async_producer_error_callback(err, "topic-x", b"k", b"value", None)
    assert "topic-x" in caplog.text
    assert "boom" in caplog.text


def test_current_callbacks_follow_the_package_attributes() -> None:
    package = sys.modules["trpc_kafka"]
    seen: list[str] = []

    def mine(topic: str, key: bytes | None, value: bytes | None, headers: object) -> None:
        seen.append(topic)

    package.async_producer_success_callback = mine  # type: ignore[attr-defined]
    assert callbacks.current_success_callback() is mine
    del package.async_producer_success_callback
    assert callbacks.current_success_callback() is callbacks.async_producer_success_callback
    assert callbacks.current_error_callback() is not None
