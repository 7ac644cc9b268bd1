"""Where an acked send's latency goes: send -> report on our delivery thread -> ``settle`` on
the loop -> the awaiting task resumed (p50 of 2,000 sequential ``send_message``).

    .venv/bin/python bench/producer_latency_split.py HOST:PORT

A diagnostic, not part of the harness: it wraps ``ProducerEntry.collect`` and
``delivery.settle`` to stamp each step.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

import trpc_kafka
from trpc_kafka._producer import delivery

VALUE = b"x" * 100
SENDS = 2000
STEPS = (
    "send -> report on the delivery thread",
    "report -> settle on the loop",
    "settle -> resumed",
)


async def split(bootstrap: str, topic: str) -> list[tuple[float, ...]]:
    stamps: dict[str, float] = {}
    settle = delivery.settle

    def stamped_settle(done: list[Any]) -> None:
        stamps["settle"] = time.perf_counter()
        settle(done)

    delivery.settle = stamped_settle  # delivery._call_soon looks it up per batch
    proxy = trpc_kafka.new_client_proxy("latency.split", target=f"kafka://{bootstrap}")
    await proxy.send_message(topic, None, VALUE)  # bind and connect
    entry = proxy._entry
    assert entry is not None
    collect = entry.collect

    def stamped_collect(fut: Any, err: Any, msg: Any) -> None:
        stamps["collect"] = time.perf_counter()
        collect(fut, err, msg)

    entry.collect = stamped_collect
    rows: list[tuple[float, ...]] = []
    for _ in range(SENDS):
        start = time.perf_counter()
        await proxy.send_message(topic, None, VALUE)
        end = time.perf_counter()
        collected, settled = stamps["collect"], stamps["settle"]
        rows.append((collected - start, settled - collected, end - settled, end - start))
    await proxy.close()
    delivery.settle = settle
    return rows


def main() -> int:
    bootstrap = sys.argv[1]
    topic = f"latency-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    rows = asyncio.run(split(bootstrap, topic))
    for i, name in enumerate((*STEPS, "total")):
        print(f"{name}: p50 {statistics.median(r[i] for r in rows) * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
