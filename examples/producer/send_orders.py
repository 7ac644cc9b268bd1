"""Example producer: a client proxy configured by the YAML file's ``client.service`` entry.

Run: ``KAFKA_BOOTSTRAP=127.0.0.1:9092 python examples/producer/send_orders.py [count]``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import trpc_kafka

CONFIG = Path(__file__).resolve().parent / "trpc_python.yaml"


async def main(count: int) -> None:
    trpc_kafka.load_global_config(CONFIG)  # what tRPC-Go's trpc.NewServer() does for clients
    async with trpc_kafka.new_client_proxy("trpc.demo.orders.producer") as proxy:
        for i in range(count):
            # send_message(): waits for the broker's ack and says where the record went.
            partition, offset = await proxy.send_message(
                "demo-orders", f"customer-{i % 3}", f"order #{i}"
            )
            print(f"sent order #{i} to demo-orders[{partition}]@{offset}", flush=True)
        # produce(): to the target's own topic (topic=demo-orders in the address).
        await proxy.produce("customer-1", "order #produced")
        # Fire-and-forget: returns once queued; close() (the `async with` exit) flushes it.
        await proxy.async_send_message("demo-orders", "customer-0", "order #final")
    print("producer done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
