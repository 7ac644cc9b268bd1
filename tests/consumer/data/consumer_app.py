"""A consumer service process for the shutdown and crash tests.

    python consumer_app.py CONFIG.yaml OUT.txt [DELAY_MS [HOLD_OFFSET]]

Serves every kafka service of the YAML file with one handler that appends ``start P:O`` and,
after ``DELAY_MS`` (default 0), ``done P:O`` to OUT (flushed at once, so a SIGKILL loses
nothing written), then returns. ``DELAY_MS=-1``: a plain ``def`` handler that never returns.
``HOLD_OFFSET``: the record at that offset (of any partition) never finishes (async handlers).
Exits when SIGTERM/SIGINT stopped the server.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from trpc_kafka._consumer import ConsumerMessage, register_kafka_handler_service
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.server import new_server


def main() -> int:
    config, out_path = sys.argv[1], sys.argv[2]
    delay = int(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
    hold = int(sys.argv[4]) if len(sys.argv) > 4 else -1
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - open for the process lifetime

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        out.write(f"start {msg.partition}:{msg.offset}\n")
        out.flush()
        if msg.offset == hold:
            await asyncio.sleep(3600)
        if delay:
            await asyncio.sleep(delay)
        out.write(f"done {msg.partition}:{msg.offset}\n")
        out.flush()

    def hang(ctx: Context, msg: ConsumerMessage) -> None:
        out.write(f"start {msg.partition}:{msg.offset}\n")
        out.flush()
        time.sleep(3600)

    server = new_server(config)
    register_kafka_handler_service(server, hang if delay < 0 else handle)
    server.serve_forever()
    out.write("exit\n")
    out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
