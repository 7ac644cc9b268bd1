"""Producer test fixtures: a clean pool, callbacks and configuration around every test."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from trpc_kafka._config import file as file_mod
from trpc_kafka._producer import callbacks
from trpc_kafka._producer import pool as pool_mod
from trpc_kafka._runtime import filters as filters_mod

_CALLBACK_NAMES = ("async_producer_success_callback", "async_producer_error_callback")


@pytest.fixture(autouse=True)
def clean_producer_state() -> Iterator[None]:
    """Every test starts with the default callbacks, no YAML config and an empty pool."""
    package = sys.modules["trpc_kafka"]
    saved = {name: getattr(package, name, None) for name in _CALLBACK_NAMES}
    for name in _CALLBACK_NAMES:
        setattr(package, name, getattr(callbacks, name))
    saved_filters = dict(filters_mod._registry)
    saved_config = file_mod.get_global_config()
    file_mod.set_global_config(None)
    yield
    pool_mod.close_all_producers_sync(0.5)
    pool_mod.set_producer_factory(None)
    file_mod.set_global_config(saved_config)
    filters_mod._registry.clear()
    filters_mod._registry.update(saved_filters)
    for name, value in saved.items():
        if value is None:
            if hasattr(package, name):
                delattr(package, name)
        else:
            setattr(package, name, value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (see ``SilentPort``)."""
    from tests.producer._util import SilentPort

    port = SilentPort()
    yield port.port
    port.close()
