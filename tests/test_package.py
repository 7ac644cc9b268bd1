"""The package's own wiring (``trpc_kafka/__init__.py``): deprecated names and the callbacks."""

from __future__ import annotations

import pytest

import trpc_kafka
from trpc_kafka._producer.callbacks import async_producer_error_callback, package_callbacks


def test_get_context_is_deprecated_and_still_works() -> None:
    with pytest.warns(DeprecationWarning, match="current_context"):
        ctx = trpc_kafka.get_context()
    assert isinstance(ctx, trpc_kafka.Context)
    with trpc_kafka.use_context(trpc_kafka.Context(rpc_name="x")) as mine:
        assert trpc_kafka.current_context() is mine
        with pytest.warns(DeprecationWarning):
            assert trpc_kafka.get_context() is mine


def test_assigning_a_package_callback_reaches_the_delivery_path() -> None:
    def mine(err: BaseException, topic: str, key: object, value: object, headers: object) -> None:
        pass

    try:
        trpc_kafka.async_producer_error_callback = mine
        assert package_callbacks.error is mine
    finally:
        trpc_kafka.async_producer_error_callback = async_producer_error_callback
    assert package_callbacks.error is async_producer_error_callback
