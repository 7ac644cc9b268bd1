"""Example: the producer's extended calls, beyond a key and a value.

Run: ``KAFKA_BOOTSTRAP=127.0.0.1:9092 python examples/producer/extended.py``.

- ``send_raw_message``: a whole record (headers, an explicit partition, a timestamp), the Go
  plugin's ``SendSaramaMessage``;
- ``trpcMeta=1``: the calling context's metadata travels as record headers;
- ``async_send_message`` with the process-wide success and error callbacks (the Go plugin's
  ``AsyncProducerSuccCallback`` / ``AsyncProducerErrorCallback``);
- the blocking twins, for code that has no event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid

import trpc_kafka
from trpc_kafka import Context, ProducerMessage, TrpcError


def on_success(topic: str, key: bytes | None, value: bytes | None, headers: object) -> None:
    print(f"async send delivered to {topic}: {value!r}", flush=True)


def on_error(
    err: BaseException, topic: str, key: bytes | None, value: bytes | None, headers: object
) -> None:
    print(f"async send to {topic} failed: {err}", flush=True)


async def main() -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP"]
    topic = f"demo-extended-{uuid.uuid4().hex[:8]}"
    trpc_kafka.async_producer_success_callback = on_success
    trpc_kafka.async_producer_error_callback = on_error

    target = f"kafka://{bootstrap}?topic={topic}&compression=none&trpcMeta=1"
    async with trpc_kafka.new_client_proxy("trpc.demo.extended", target=target) as proxy:
        # A full record: headers, partition 0, a timestamp of our choosing.
        partition, offset = await proxy.send_raw_message(
            ProducerMessage(
                topic,
                key=b"user-7",
                value=b"raw record",
                headers=[("source", b"extended-example")],
                partition=0,
                timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
            )
        )
        print(f"raw record at {topic}[{partition}]@{offset}", flush=True)

        # trpcMeta=1: the metadata of the calling context becomes record headers.
        ctx = Context(metadata={"trace-id": b"abc123"})
        with trpc_kafka.use_context(ctx):
            await proxy.send_message(topic, "user-7", "with metadata")
        print("sent a record carrying the context's metadata", flush=True)

        # Fire-and-forget: the callbacks above report the outcome; leaving the block flushes.
        await proxy.async_send_message(topic, "user-8", "fire and forget")

    # Errors are tRPC framework errors with codes: a key of the wrong type is 121.
    proxy = trpc_kafka.new_client_proxy("trpc.demo.extended.sync", target=target)
    try:
        proxy.send_message_sync(topic, 12345, "value")  # type: ignore[arg-type]
    except TrpcError as err:
        print(f"refused at the call, code {err.code}", flush=True)
    partition, offset = proxy.send_message_sync(topic, "user-9", "from blocking code")
    print(f"blocking send at {topic}[{partition}]@{offset}", flush=True)
    proxy.close_sync()
    print("extended producer done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
