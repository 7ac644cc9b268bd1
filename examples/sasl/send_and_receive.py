"""Example: a producer and a consumer service on a SASL (SCRAM) cluster, the CKafka setup.

Run against the secured local broker::

    trpc-kafka broker start --dir .kafka/secure --sasl scram
    KAFKA_SASL_ADDRESS='127.0.0.1:PORT?mechanism=SCRAM-SHA-512&user=alice&password=...' \\
        python examples/sasl/send_and_receive.py

``KAFKA_SASL_ADDRESS`` is an address without topics; the local broker prints one (its user
``alice`` may use topics and groups named ``alice-*``). Passwords in addresses are
percent-encoded (``%23`` for ``#``) and never appear in logs or errors.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import trpc_kafka
from trpc_kafka import ConsumerMessage, Context

COUNT = 3


async def main() -> None:
    address = os.environ["KAFKA_SASL_ADDRESS"]
    base, _, keys = address.partition("?")
    topic = f"alice-sasl-demo-{uuid.uuid4().hex[:8]}"
    security = "&".join(k for k in keys.split("&") if not k.startswith(("topics=", "group=")))

    server = trpc_kafka.Server()
    server.add_service(
        trpc_kafka.Service(
            "trpc.demo.sasl.consumer",
            address=f"{base}?topics={topic}&group={topic}&initial=oldest&{security}",
        )
    )
    handled = 0

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        nonlocal handled
        handled += 1
        print(f"handled {msg.value!r} over SASL", flush=True)
        if handled == COUNT:
            asyncio.get_running_loop().create_task(server.close())

    trpc_kafka.register_kafka_handler_service(server, handle)
    target = f"kafka://{base}?topic={topic}&{security}"
    async with trpc_kafka.new_client_proxy("trpc.demo.sasl.producer", target=target) as proxy:
        for i in range(COUNT):
            await proxy.produce(None, f"secret message {i}")
    await server.serve()
    print(f"sasl: handled {handled}/{COUNT}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
