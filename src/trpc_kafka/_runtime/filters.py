"""Filters (interceptors) as in tRPC-Go: one function type, a chain that is a list.

A filter is ``async def f(ctx, req, next) -> rsp``. It may act before and after calling
``await next(ctx, req)``, or return without calling it (short-circuit). The chain is built once
when a service or proxy is set up, so a service with no filters calls its handler directly.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._runtime.context import Context

Handler = Callable[[Context, Any], Awaitable[Any]]
"""The innermost function a chain calls: ``async def handler(ctx, req) -> rsp``."""

Filter = Callable[[Context, Any, Handler], Awaitable[Any]]
"""An interceptor: ``async def f(ctx, req, next) -> rsp``."""

Side = Literal["server", "client"]

_registry: dict[tuple[Side, str], Filter] = {}
_registry_lock = threading.Lock()


def register_filter(
    name: str, *, server: Filter | None = None, client: Filter | None = None
) -> None:
    """Register a named filter for the server side, the client side, or both.

    Services switch it on by listing ``name`` under ``filter:`` in the YAML file.
    """
    if not name:
        raise ValueError("filter name must not be empty")
    if server is None and client is None:
        raise ValueError(f"filter {name!r}: give a server filter, a client filter, or both")
    with _registry_lock:
        if server is not None:
            _registry["server", name] = server
        if client is not None:
            _registry["client", name] = client


def get_filter(name: str, side: Side) -> Filter | None:
    """The registered filter of that name and side, or None."""
    return _registry.get((side, name))


def resolve_filters(names: Sequence[str], side: Side, *, where: str) -> list[Filter]:
    """The filters named in a YAML ``filter:`` list; an unknown name is an error naming it."""
    filters: list[Filter] = []
    for name in names:
        f = get_filter(name, side)
        if f is None:
            known = sorted(n for s, n in _registry if s == side)
            raise ConfigError(
                f"{where}: unknown {side} filter {name!r}; registered {side} filters: "
                f"{', '.join(known) or '(none)'}; register it with "
                f"trpc_kafka.register_filter({name!r}, {side}=...)",
                key="filter",
                value=name,
            )
        filters.append(f)
    return filters


def chain(filters: Sequence[Filter], handler: Handler) -> Handler:
    """Wrap ``handler`` in ``filters``; the first filter is the outermost.

    With no filters the handler itself is returned: the mechanism costs nothing then.
    """
    wrapped = handler
    for f in reversed(filters):
        wrapped = _bind(f, wrapped)
    return wrapped


def _bind(f: Filter, next_handler: Handler) -> Handler:
    async def call(ctx: Context, req: Any) -> Any:
        return await f(ctx, req, next_handler)

    return call
