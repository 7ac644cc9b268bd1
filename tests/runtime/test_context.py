"""Context flows through await and tasks; timeouts only shorten the deadline."""

from __future__ import annotations

import asyncio
import time

from trpc_kafka._runtime.context import (
    Context,
    current_context,
    get_context,
    reset_current_context,
    set_current_context,
    use_context,
)


async def test_contextvar_flows_across_await_and_tasks() -> None:
    assert current_context() is None
    ctx = Context(callee_service="trpc.a.b.c", metadata={"k": b"v"})

    async def inner() -> Context | None:
        await asyncio.sleep(0)
        return current_context()

    with use_context(ctx):
        assert await inner() is ctx
        # A task copies the context at creation, so it sees the one current then.
        task = asyncio.create_task(inner())
    assert current_context() is None
    assert await task is ctx


async def test_task_changes_do_not_leak_back() -> None:
    outer = Context(rpc_name="outer")

    async def child() -> None:
        with use_context(Context(rpc_name="child")):
            await asyncio.sleep(0)

    with use_context(outer):
        await asyncio.create_task(child())
        assert get_context() is outer


def test_get_context_without_one_is_empty_and_token_reset() -> None:
    empty = get_context()
    assert empty.rpc_name == "" and empty.metadata == {} and empty.deadline is None
    ctx = Context(rpc_name="r")
    token = set_current_context(ctx)
    try:
        assert current_context() is ctx
    finally:
        reset_current_context(token)
    assert current_context() is None


def test_with_timeout_takes_the_earlier_deadline() -> None:
    base = Context()
    assert base.remaining() is None
    a = base.with_timeout(10.0)
    assert a.deadline is not None and 9.0 < (a.remaining() or 0) <= 10.0
    # A longer timeout does not extend it.
    assert a.with_timeout(100.0).deadline == a.deadline
    # A shorter one wins.
    b = a.with_timeout(0.5)
    assert b.deadline is not None and b.deadline < a.deadline
    assert a.with_timeout(None).deadline == a.deadline
    assert base.deadline is None  # copies, never the original


def test_explicit_passing_and_copy() -> None:
    ctx = Context(caller_service="me", metadata={"a": b"1"}, deadline=time.monotonic() + 5)
    key = object()
    ctx.set_value(key, 42)

    def handler(c: Context) -> tuple[str, Context]:
        return c.caller_service, c

    name, same = handler(ctx)
    assert name == "me" and same is ctx and same.value(key) == 42
    copy = ctx.copy(rpc_name="/x")
    copy.metadata["b"] = b"2"
    copy.set_value(key, 0)
    assert ctx.metadata == {"a": b"1"} and ctx.value(key) == 42
    assert (copy.rpc_name, copy.deadline, copy.value(key)) == ("/x", ctx.deadline, 0)
    assert "metadata_keys=['a', 'b']" in repr(copy)
