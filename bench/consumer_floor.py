"""The floor of the per-record path: what each thing a handler is promised costs, alone.

    .venv/bin/python bench/consumer_floor.py [--records 500] [--chunks 2000] [--repeat 5]
    .venv/bin/python bench/consumer_floor.py --instructions   # counted by valgrind instead

No broker and no threads: one event loop runs the worker's per-record steps over chunks of
confluent-kafka ``Message`` objects (made once and reused, so neither librdkafka nor the
cyclic GC is counted), adding one step at a time, as ``PartitionWorker._run_single`` does them:

0. the loop over a chunk, ``record.offset()``, the handled offset stored;
1. + the ``WireMessage`` the handler receives (the last one reused, nothing else holding it);
2. + its ``ConsumerContext`` (likewise);
3. + that context made current (one ``ContextVar.set``);
4. + the call of a no-op ``async def`` handler (a coroutine created and run to its end).

Wall-clock figures swing with the machine's load; ``--instructions`` counts CPU instructions
per record instead (valgrind's cachegrind, each step in its own process, run with 20 and 220
chunks: the difference over the difference in records excludes start-up).

Step 4 is our whole per-record work on the loop thread for a no-op handler. Compare it with
raw confluent-kafka's CPU per record in bench/consumer_paths.py (``consume(500)`` making the
``Message`` objects is most of it): together they bound how close to raw a per-record
``async def`` handler can get in CPython (bench/results/consumer-paths-3.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from harness import count_instructions

STEPS = (
    "loop + offset",
    "+ WireMessage",
    "+ ConsumerContext",
    "+ ContextVar.set",
    "+ await handler",
)


async def _noop(ctx: Any, msg: Any) -> None:
    return None


class _State:
    handled = -1


async def _run(chunks: list[list[Any]], step: int) -> None:
    from trpc_kafka._consumer.message import WireMessage
    from trpc_kafka._consumer.partition import RPC_NAME, ConsumerContext, refcount
    from trpc_kafka._runtime.context import set_current_context

    state = _State()
    new = object.__new__
    held = refcount
    call = _noop
    topic, partition, service, claim = "t", 0, "svc", None
    msg: Any = None
    ctx: Any = None
    last_ctx: Any = None
    spare: Any = None
    for chunk in chunks:
        for record in chunk:
            offset = record.offset()
            if step >= 1:  # the message, reused when only msg holds it
                if msg is None or held(msg) != 2:
                    msg = new(WireMessage)
                    msg.topic = topic
                    msg.partition = partition
                msg.offset = offset
                msg._m = record
            if step >= 2:  # the context, reused once nothing holds it
                if spare is None:
                    ctx = new(ConsumerContext)
                    ctx._touched = False
                else:
                    ctx, spare = spare, None
                    if ctx._touched:
                        ctx._forget_lazy()
                ctx.caller_service = ""
                ctx.callee_service = service
                ctx.rpc_name = RPC_NAME
                ctx.callee_method = topic
                ctx.deadline = None
                ctx._claim = claim
            if step >= 3:
                set_current_context(ctx)
                if last_ctx is not None and held(last_ctx) == 2:
                    spare = last_ctx
                last_ctx = ctx
            elif step == 2:
                spare = ctx  # nothing made it current: free at once
                ctx = None
            if step >= 4:
                await call(ctx, msg)
            state.handled = offset


def _instructions(step: int, records: int, chunks: int) -> int:
    argv = ["--step", str(step), "--records", str(records), "--chunks", str(chunks)]
    return count_instructions([__file__, *argv, "--repeat", "1"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=500, help="records a chunk")
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--instructions", action="store_true", help="count with valgrind")
    parser.add_argument("--step", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unit = "ns"
    figures: dict[str, float] = {}
    if args.instructions:
        unit = "instructions"
        small, large = 20, 220
        for step, name in enumerate(STEPS):
            counts = [_instructions(step, args.records, c) for c in (small, large)]
            figures[name] = (counts[1] - counts[0]) / ((large - small) * args.records)
            print(f"{name:22s} {figures[name]:10.0f} instructions/record", flush=True)
        return _report(figures, unit, args.out, args.records * (large - small))
    from confluent_kafka import Message

    records = [
        Message(topic="t", partition=0, offset=i, value=b"x" * 100) for i in range(args.records)
    ]
    chunks = [records] * args.chunks
    n = args.records * args.chunks
    if args.step is not None:  # one step, for --instructions
        asyncio.run(_run(chunks, args.step))
        return 0
    for step, name in enumerate(STEPS):
        times = []
        for _ in range(args.repeat):
            begin = time.perf_counter()
            asyncio.run(_run(chunks, step))
            times.append(time.perf_counter() - begin)
        figures[name] = statistics.median(times) / n * 1e9
    return _report(figures, unit, args.out, n)


def _report(figures: dict[str, float], unit: str, out: str | None, n: int) -> int:
    previous = 0.0
    print(f"{'step':22s} {unit + '/record':>18s} {'added':>8s}")
    for name, value in figures.items():
        print(f"{name:22s} {value:18.0f} {value - previous:8.0f}")
        previous = value
    if out:
        with open(out, "w") as stream:
            json.dump({"records": n, "unit": f"{unit} per record", "steps": figures}, stream)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
