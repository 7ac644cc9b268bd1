"""Example: a consumer service configured in code through a placeholder address.

Run: ``KAFKA_BOOTSTRAP=127.0.0.1:9092 python examples/fake_address/injected_config.py [count]``.
It registers a config for ``fake_address`` (brokers, topic and group from code, as if fetched
from a remote configuration service), sends ``count`` messages, handles them and stops.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import trpc_kafka
from trpc_kafka import ConsumerMessage, Context

CONFIG = Path(__file__).resolve().parent / "trpc_python.yaml"


async def main(count: int) -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP"]
    topic = f"demo-injected-{uuid.uuid4().hex[:8]}"

    # The Go plugin's kafka.GetDefaultConfig() / RegisterAddrConfig("fake_address", cfg).
    cfg = trpc_kafka.get_default_config()
    cfg.brokers = bootstrap.split(",")
    cfg.topics = [topic]
    cfg.group = f"{topic}-group"
    cfg.initial = "oldest"
    trpc_kafka.register_addr_config("fake_address", cfg)

    server = trpc_kafka.new_server(CONFIG)
    handled = 0

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        nonlocal handled
        raw = trpc_kafka.get_raw_kafka_context(ctx)  # read-only, for monitoring
        group = raw.session.group if raw is not None else "?"
        print(f"handled {msg.value!r} from {msg.topic}[{msg.partition}] in group {group}")
        handled += 1
        if handled == count:
            asyncio.get_running_loop().create_task(server.close())

    trpc_kafka.register_kafka_handler_service(server.service("trpc.demo.injected.consumer"), handle)

    async with trpc_kafka.new_client_proxy(
        "trpc.demo.injected.producer", target=f"kafka://{bootstrap}?topic={topic}"
    ) as proxy:
        for i in range(count):
            await proxy.produce(None, f"message {i}")
    await server.serve()
    print(f"injected config: handled {handled}/{count}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
