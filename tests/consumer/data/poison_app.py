"""A consumer process for the foreign-record tests (tests/consumer/test_poison_records.py).

    python poison_app.py BOOTSTRAP TOPIC GROUP_PREFIX OUT.jsonl

Six services read TOPIC from the oldest offset, each in its own group: ``single``, ``batch``
(plain def, batches of 4) and ``dead`` (dead letters to ``TOPIC-dead``), each also with
``trpcMeta=true`` (``-meta``). Every handling fails the first time after reading the headers
(``dead`` always fails, except on the sentinel, which ``single`` and ``dead`` take at once),
and the retry reads them again. Each attempt
appends one JSON line to OUT: service, attempt, offset, key, value (hex, or its length above
1 kB), headers and the context metadata. Exits 0 when SIGTERM stopped the server.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import threading
from typing import Any

from trpc_kafka._consumer import (
    ConsumerMessage,
    register_batch_handler_service,
    register_kafka_handler_service,
)
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.server import Server, Service

SENTINEL = b"sentinel"


def shown(data: bytes | None) -> Any:
    if data is None:
        return None
    return data.hex() if len(data) <= 1024 else {"len": len(data), "set": sorted(set(data))}


def main() -> int:
    bootstrap, topic, prefix, out_path = sys.argv[1:5]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is a test failure, no core file
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - open for the process lifetime
    lock = threading.Lock()
    attempts: dict[tuple[str, int], int] = {}

    def record(service: str, ctx: Context, msg: ConsumerMessage, first: int) -> int:
        line = {
            "service": service,
            "offset": msg.offset,
            "first": first,  # offset of the first message of the call (its trpcMeta source)
            "key": shown(msg.key),
            "value": shown(msg.value),
            "headers": [[name, shown(value)] for name, value in msg.headers],
            "meta": {k: shown(v) for k, v in sorted(ctx.metadata.items())},
            "repr": repr(msg),
        }
        with lock:
            attempt = attempts[service, msg.offset] = attempts.get((service, msg.offset), 0) + 1
            line["attempt"] = attempt
            out.write(json.dumps(line) + "\n")
        return attempt

    def single(service: str, always_fail: bool) -> Any:
        async def handle(ctx: Context, msg: ConsumerMessage) -> None:
            attempt = record(service, ctx, msg, msg.offset)
            if msg.value == SENTINEL:
                return
            if attempt == 1 or always_fail:
                raise RuntimeError(f"{service}: failing attempt {attempt} on purpose")

        return handle

    def batch(service: str) -> Any:
        def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
            attempt = 0
            for msg in msgs:
                attempt = record(service, ctx, msg, msgs[0].offset)
            if attempt == 1:
                raise RuntimeError(f"{service}: failing the first batch attempt on purpose")

        return handle

    server = Server(max_close_wait=10)
    fast = "initial=oldest&retryInterval=50&groupSessionTimeout=6000"
    for name, extra in (
        ("single", ""),
        ("batch", "&batch=4&batchFlush=200"),
        # The 1 MB record must fit the dead-letter producer (maxMessageBytes, 128 kB default).
        ("dead", f"&maxRetry=1&deadLetterTopic={topic}-dead&maxMessageBytes=2000000"),
    ):
        for meta in ("", "-meta"):
            service = name + meta
            trpc_meta = "&trpcMeta=true" if meta else ""
            address = (
                f"{bootstrap}?topics={topic}&group={prefix}-{service}&{fast}{extra}{trpc_meta}"
            )
            if name == "dead":
                address = address.replace(f"{topic}-dead", f"{topic}-dead{meta}")
            server.add_service(Service(service, address=address))
            if name == "batch":
                register_batch_handler_service(server.service(service), batch(service))
            else:
                handler = single(service, always_fail=name == "dead")
                register_kafka_handler_service(server.service(service), handler)
    server.serve_forever()
    out.write(json.dumps({"exit": 0}) + "\n")
    out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
