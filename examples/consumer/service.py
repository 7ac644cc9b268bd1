"""Example consumer service: two kafka services of one YAML file, a single and a batch handler.

Run: ``KAFKA_BOOTSTRAP=127.0.0.1:9092 python examples/consumer/service.py [config.yaml]``.
It serves until SIGINT/SIGTERM, then finishes running handlers, commits and leaves its groups.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import trpc_kafka
from trpc_kafka import ConsumerMessage, Context

CONFIG = Path(__file__).resolve().parent / "trpc_python.yaml"


async def handle_order(ctx: Context, msg: ConsumerMessage) -> None:
    """One message at a time, in order within its partition; raising retries it."""
    key = (msg.key or b"").decode()
    value = (msg.value or b"").decode()
    # One write per line: handlers of different partitions print concurrently.
    line = f"handled {msg.topic}[{msg.partition}]@{msg.offset} key={key} value={value} "
    print(f"{line}rpc={ctx.rpc_name}\n", end="", flush=True)


def audit(ctx: Context, msgs: list[ConsumerMessage]) -> None:
    """A plain ``def`` handler: it runs off the event loop. A batch is one partition's."""
    offsets = ",".join(str(m.offset) for m in msgs)
    line = f"audited batch of {len(msgs)} from partition {msgs[0].partition}: {offsets}"
    print(f"{line}\n", end="", flush=True)  # one write: plain def handlers run on threads


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = trpc_kafka.new_server(sys.argv[1] if len(sys.argv) > 1 else CONFIG)
    trpc_kafka.register_kafka_handler_service(
        server.service("trpc.demo.orders.consumer"), handle_order
    )
    trpc_kafka.register_batch_handler_service(server.service("trpc.demo.orders.audit"), audit)
    print("consumer service starting", flush=True)
    server.serve_forever()
    print("consumer service stopped", flush=True)


if __name__ == "__main__":
    main()
