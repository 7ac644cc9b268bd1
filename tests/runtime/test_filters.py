"""Filters: first registered is outermost; short-circuit; changes flow inward."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._runtime import filters as filters_mod
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.filters import (
    Filter,
    Handler,
    chain,
    get_filter,
    register_filter,
    resolve_filters,
)


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    saved = dict(filters_mod._registry)
    yield
    filters_mod._registry.clear()
    filters_mod._registry.update(saved)


def recorder(name: str, log: list[str]) -> Filter:
    async def f(ctx: Context, req: Any, next: Handler) -> Any:
        log.append(f"{name}>")
        rsp = await next(ctx, req)
        log.append(f"<{name}")
        return rsp

    return f


async def test_order_first_is_outermost() -> None:
    log: list[str] = []

    async def handler(ctx: Context, req: Any) -> Any:
        log.append("handler")
        return req * 2

    register_filter("one", server=recorder("one", log))
    register_filter("two", server=recorder("two", log))
    register_filter("three", server=recorder("three", log))
    h = chain(resolve_filters(["one", "two", "three"], "server", where="test"), handler)
    assert await h(Context(), 21) == 42
    assert log == ["one>", "two>", "three>", "handler", "<three", "<two", "<one"]


async def test_short_circuit() -> None:
    log: list[str] = []

    async def gate(ctx: Context, req: Any, next: Handler) -> Any:
        log.append("gate")
        return "denied"

    async def handler(ctx: Context, req: Any) -> Any:
        log.append("handler")
        return "ok"

    h = chain([recorder("outer", log), gate, recorder("inner", log)], handler)
    assert await h(Context(), None) == "denied"
    assert log == ["outer>", "gate", "<outer"]


async def test_filter_changes_ctx_and_req() -> None:
    seen: list[tuple[str, Any]] = []

    async def rewrite(ctx: Context, req: Any, next: Handler) -> Any:
        return await next(ctx.copy(rpc_name="/rewritten"), {**req, "added": True})

    async def handler(ctx: Context, req: Any) -> Any:
        seen.append((ctx.rpc_name, req))
        return "done"

    assert await chain([rewrite], handler)(Context(rpc_name="/orig"), {"k": 1}) == "done"
    assert seen == [("/rewritten", {"k": 1, "added": True})]


async def test_exception_propagates_through_filters() -> None:
    log: list[str] = []

    async def catcher(ctx: Context, req: Any, next: Handler) -> Any:
        try:
            return await next(ctx, req)
        except ValueError as exc:
            log.append(f"caught {exc}")
            return "recovered"

    async def handler(ctx: Context, req: Any) -> Any:
        raise ValueError("boom")

    assert await chain([catcher], handler)(Context(), None) == "recovered"
    assert log == ["caught boom"]


def test_unknown_filter_name() -> None:
    register_filter("known", server=recorder("k", []))
    with pytest.raises(ConfigError) as info:
        resolve_filters(["known", "missing_one"], "server", where="service 'svc'")
    err = info.value
    assert "'missing_one'" in str(err)
    assert "service 'svc'" in str(err)
    assert "known" in str(err)
    assert (err.key, err.value) == ("filter", "missing_one")


def test_sides_are_separate() -> None:
    client_f = recorder("c", [])
    register_filter("only_client", client=client_f)
    assert get_filter("only_client", "client") is client_f
    assert get_filter("only_client", "server") is None
    with pytest.raises(ConfigError, match="unknown server filter 'only_client'"):
        resolve_filters(["only_client"], "server", where="x")
    with pytest.raises(ValueError, match="give a server filter"):
        register_filter("nothing")


def test_empty_chain_is_the_handler() -> None:
    async def h(ctx: Context, req: Any) -> Any:
        return None

    assert chain([], h) is h
