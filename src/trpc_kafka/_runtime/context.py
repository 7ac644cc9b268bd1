"""Per-call context: service names, RPC name, metadata and deadline.

A context flows implicitly through ``async`` code (a ContextVar) and can be passed explicitly.
It is a plain slotted object built once per call or handled message; nothing here allocates
unless it is used.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from typing import Any


class Context:
    """What one call (client side) or one handled message (server side) knows about itself."""

    __slots__ = (
        "callee_method",
        "callee_service",
        "caller_service",
        "deadline",
        "metadata",
        "rpc_name",
        "values",
    )

    def __init__(
        self,
        *,
        caller_service: str = "",
        callee_service: str = "",
        rpc_name: str = "",
        callee_method: str = "",
        metadata: dict[str, bytes] | None = None,
        deadline: float | None = None,
        values: dict[object, Any] | None = None,
    ) -> None:
        self.caller_service = caller_service
        self.callee_service = callee_service
        self.rpc_name = rpc_name
        self.callee_method = callee_method
        # Metadata: str keys, bytes values, as tRPC's transinfo.
        self.metadata: dict[str, bytes] = {} if metadata is None else metadata
        # Absolute deadline on the time.monotonic() clock, or None for no deadline.
        self.deadline = deadline
        # Extension slots keyed by private sentinel objects (like Go's context.WithValue).
        self.values: dict[object, Any] | None = values

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def with_timeout(self, seconds: float | None) -> Context:
        """A copy whose deadline is the earlier of this one's and now + ``seconds``."""
        deadline = self.deadline
        if seconds is not None:
            candidate = time.monotonic() + seconds
            if deadline is None or candidate < deadline:
                deadline = candidate
        return self.copy(deadline=deadline)

    def copy(self, **changes: Any) -> Context:
        """A shallow copy (metadata and values copied) with some fields changed."""
        fields: dict[str, Any] = {
            "caller_service": self.caller_service,
            "callee_service": self.callee_service,
            "rpc_name": self.rpc_name,
            "callee_method": self.callee_method,
            "metadata": dict(self.metadata),
            "deadline": self.deadline,
            "values": None if self.values is None else dict(self.values),
        }
        fields.update(changes)
        return Context(**fields)

    def value(self, key: object) -> Any:
        """The extension value stored under ``key``, or None."""
        return None if self.values is None else self.values.get(key)

    def set_value(self, key: object, value: Any) -> None:
        if self.values is None:
            self.values = {}
        self.values[key] = value

    def __repr__(self) -> str:
        return (
            f"Context(rpc_name={self.rpc_name!r}, caller={self.caller_service!r}, "
            f"callee={self.callee_service!r}, method={self.callee_method!r}, "
            f"metadata_keys={sorted(self.metadata)!r}, remaining={self.remaining()!r})"
        )


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "trpc_kafka_context", default=None
)


def current_context() -> Context | None:
    """The context of the call or message being handled in this task, if any."""
    return _current.get()


def get_context() -> Context:
    """The current context, or a new empty one when none is set."""
    ctx = _current.get()
    return Context() if ctx is None else ctx


@contextlib.contextmanager
def use_context(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` the current context inside the ``with`` block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


# For hot paths without ``with`` (one per handled message): set the current context, returning
# the token that resets it. The ContextVar's own bound methods, not wrappers: a Python frame
# less per message.
set_current_context = _current.set
reset_current_context = _current.reset
