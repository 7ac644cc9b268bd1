"""A user module for ``trpc-kafka run cli_app:setup``: logs each handled message to a file.

A plain ``def`` handler: it runs off the event loop, so its blocking file write is fine.
"""

from __future__ import annotations

import os

import trpc_kafka
from trpc_kafka import ConsumerMessage, Context

OUT = os.environ["CLI_APP_OUT"]


def handle(ctx: Context, msg: ConsumerMessage) -> None:
    worker = os.environ.get("TRPC_KAFKA_WORKER", "-")
    line = f"{worker} {os.getpid()} {msg.partition} {msg.offset} {(msg.value or b'').decode()}\n"
    with open(OUT, "a", encoding="utf-8") as out:  # one write per line: whole lines
        out.write(line)


def setup(server: trpc_kafka.Server) -> None:
    trpc_kafka.register_kafka_handler_service(server, handle)


def not_a_server() -> int:
    return 42
