"""Helpers of the security tests: run a consumer service, capture every log line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import trpc_kafka
from tests.consumer._util import one_service, serving, wait_until
from trpc_kafka import ConsumerMessage, Context, Server
from trpc_kafka._tools.security import ALLOWED_PREFIX

__all__ = ["Everything", "capture_all_logs", "consuming", "load_scaled", "new_group", "wait_until"]


def load_scaled(seconds: float) -> float:
    """``seconds`` on an idle machine, times the load average per core when other work runs.

    For bounds on how long a broker start may take: a busy 2-core machine starts JVMs slower.
    """
    return seconds * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def new_group(prefix: str = ALLOWED_PREFIX) -> str:
    """A fresh consumer group that alice may use."""
    return f"{prefix}g-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def consuming(
    address: str, received: list[ConsumerMessage] | None = None
) -> AsyncIterator[tuple[Server, asyncio.Task[None]]]:
    """A server with one consumer service on ``address`` (its messages into ``received``)."""
    sink = received if received is not None else []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        sink.append(msg)

    server = one_service(address, name="secured-consumer", close_wait=5)
    trpc_kafka.register_kafka_handler_service(server, handle)
    async with serving(server) as task:
        yield server, task


class Everything(logging.Handler):
    """Every record of every logger, at every level, formatted with its arguments."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def capture_all_logs() -> Iterator[Everything]:
    """Root at DEBUG with a handler that sees everything (no logger is filtered or disabled)."""
    root = logging.getLogger()
    handler = Everything()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
