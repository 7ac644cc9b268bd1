"""new_client_proxy: target, timeout and filters from arguments or the YAML file."""

from __future__ import annotations

from typing import Any

import pytest

from trpc_kafka._config.address import get_default_config, register_addr_config
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import parse_config, set_global_config
from trpc_kafka._producer import new_client_proxy
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.filters import Handler, register_filter

YAML = """
client:
  timeout: 2000
  filter: [client-level]
  service:
    - name: trpc.app.server.orders
      target: kafka://127.0.0.1:9092?topic=orders&compression=none
      timeout: 500
      filter: [own]
    - name: trpc.app.server.defaults
      target: kafka://127.0.0.1:9092?topic=other
"""


async def _passthrough(ctx: Context, req: Any, next: Handler) -> Any:
    return await next(ctx, req)


async def _other(ctx: Context, req: Any, next: Handler) -> Any:
    return await next(ctx, req)


def _load() -> None:
    register_filter("client-level", client=_passthrough)
    register_filter("own", client=_other)
    set_global_config(parse_config(YAML, file="trpc_python.yaml"))


def test_no_target_anywhere_names_the_proxy() -> None:
    with pytest.raises(ConfigError) as info:
        new_client_proxy("trpc.app.server.nowhere")
    assert "trpc.app.server.nowhere" in str(info.value)
    assert "target" in str(info.value)


def test_target_timeout_and_filters_from_yaml() -> None:
    _load()
    proxy = new_client_proxy("trpc.app.server.orders")
    assert proxy.config.topic == "orders"
    assert proxy.config.compression == "none"
    assert proxy.timeout == 0.5
    assert proxy.filters == (_passthrough, _other)  # client-level first, then the entry's


def test_client_level_timeout_is_the_default() -> None:
    _load()
    proxy = new_client_proxy("trpc.app.server.defaults")
    assert proxy.timeout == 2.0
    assert proxy.filters == (_passthrough,)


def test_arguments_override_yaml() -> None:
    _load()

    async def extra(ctx: Context, req: Any, next: Handler) -> Any:
        return await next(ctx, req)

    proxy = new_client_proxy(
        "trpc.app.server.orders",
        target="kafka://127.0.0.1:9093?topic=elsewhere",
        timeout=0.25,
        filters=[extra, "client-level"],
    )
    assert proxy.config.topic == "elsewhere"
    assert proxy.config.brokers == ["127.0.0.1:9093"]
    assert proxy.timeout == 0.25
    assert proxy.filters == (_passthrough, _other, extra, _passthrough)


def test_no_config_no_timeout() -> None:
    proxy = new_client_proxy("p", target="kafka://127.0.0.1:9092")
    assert proxy.timeout is None
    assert proxy.filters == ()


def test_unknown_filter_name_is_a_config_error() -> None:
    set_global_config(
        parse_config(
            "client:\n  service:\n    - name: p\n      target: kafka://h:1\n      filter: [nope]\n",
            file="f.yaml",
        )
    )
    with pytest.raises(ConfigError) as info:
        new_client_proxy("p")
    assert "nope" in str(info.value)
    assert "client.service 'p'" in str(info.value)


@pytest.mark.parametrize("timeout", [0, -1, True, "1"])
def test_bad_timeout(timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        new_client_proxy("p", target="kafka://127.0.0.1:9092", timeout=timeout)


def test_bad_address_fails_at_creation() -> None:
    with pytest.raises(ConfigError, match="partitioner"):
        new_client_proxy("p", target="kafka://127.0.0.1:9092?partitioner=sticky")
    with pytest.raises(ConfigError, match="async"):
        new_client_proxy("p", target="kafka://127.0.0.1:9092?async=yes")


def test_registered_config_replaces_the_address() -> None:
    cfg = get_default_config()
    cfg.brokers = ["127.0.0.1:9999"]
    cfg.topic = "registered-topic"
    register_addr_config("fake_address", cfg)
    proxy = new_client_proxy("p", target="kafka://fake_address")
    assert proxy.config.topic == "registered-topic"
    assert proxy.config.brokers == ["127.0.0.1:9999"]


def test_repr_hides_the_password() -> None:
    proxy = new_client_proxy(
        "p",
        target="kafka://127.0.0.1:9092?user=u&password=s3cret&mechanism=SCRAM-SHA-512",
    )
    assert "s3cret" not in repr(proxy)
    assert "s3cret" not in proxy.target
