"""Consumer per-message paths (issue 13 §1-2): our handler kinds against raw clients, one run.

    .venv/bin/python bench/consumer_paths.py                  # 1M records, 3 rounds
    .venv/bin/python bench/consumer_paths.py --quick          # 200k records, 2 rounds
    .venv/bin/python bench/consumer_paths.py --bootstrap HOST:PORT --variants raw,def
    git archive main src | tar -x -C /tmp/before       # and the same on the code of main:
    .venv/bin/python bench/consumer_paths.py --before-src /tmp/before

Without ``--bootstrap`` a 1-node local broker is started in a temporary directory and stopped at
the end. One topic of 6 partitions is pre-loaded with ``--messages`` values of 100 bytes; every
variant then drains it in its own subprocess, as a fresh consumer group from the oldest offset:

- ``raw``: confluent-kafka ``consume(500, 0.1)`` + one ``store_offsets`` per batch, auto-commit
  every 3 s, with exactly our librdkafka settings (the yardstick: ratios are against it);
- ``aiokafka``: ``AIOKafkaConsumer.getmany(max_records=500)``, auto-commit every 3 s;
- ``async``: our service, a no-op ``async def handle(ctx, msg)``;
- ``def``: our service, a no-op plain ``def handle(ctx, msg)`` (runs in the service's threads);
- ``batch``: our service, a no-op ``async def`` batch handler, ``batch=500&batchFlush=20``.

Throughput is records / seconds from the first record received to the last one handled (the
group join is excluded; ``total_s`` includes it). Peak RSS is the child's ``VmHWM``. Variants are
interleaved round by round (the machine's load drifts: only ratios within one run count);
medians, ratios and the targets of issue 13 go to ``--out`` (bench/results/consumer-paths.json).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from harness import spawn_variant

from consumer import (
    CONSUME_BATCH,
    PARTITIONS,
    VALUE_SIZE,
    child_aiokafka,
    child_raw,
    peak_rss_mb,
    preload,
)

RESULTS = Path(__file__).with_name("results") / "consumer-paths.json"
VARIANTS = ("raw", "aiokafka", "async", "def", "batch")
# Issue 13's targets: (variant, against, least ratio).
TARGETS = (("async", "raw", 0.6), ("batch", "raw", 0.9), ("def", "async", 0.8))


def child_service(address: str, n: int, kind: str) -> dict[str, float]:
    import trpc_kafka._consumer as kc
    from trpc_kafka._runtime.context import Context
    from trpc_kafka._runtime.server import Server, Service

    if kind == "batch":
        # batchFlush=20: the last partial batch of a partition goes after 20 ms, not 2 s.
        address += f"&batch={CONSUME_BATCH}&batchFlush=20"
    begin = time.perf_counter()
    first = end = cpu0 = cpu1 = 0.0
    # next() of a count is atomic under the GIL: plain def handlers run on several threads.
    counter = itertools.count(1)
    seen = 0

    async def main() -> None:
        nonlocal seen
        server = Server()
        server.add_service(Service("bench", address=address))
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []

        def finish() -> None:
            nonlocal end, cpu1
            end = time.perf_counter()
            cpu1 = time.process_time()
            closing.append(loop.create_task(server.close()))

        def count(k: int) -> None:
            nonlocal seen, first, cpu0
            if not first:
                first = time.perf_counter()
                cpu0 = time.process_time()
            seen = k
            if k == n:
                loop.call_soon_threadsafe(finish)

        async def handle(ctx: Context, msg: kc.ConsumerMessage) -> None:
            count(next(counter))

        def handle_def(ctx: Context, msg: kc.ConsumerMessage) -> None:
            count(next(counter))

        async def handle_batch(ctx: Context, msgs: list[kc.ConsumerMessage]) -> None:
            k = 0
            for _ in msgs:
                k = next(counter)
            count(k)

        if kind == "batch":
            kc.register_batch_handler_service(server, handle_batch)
        elif kind == "def":
            kc.register_kafka_handler_service(server, handle_def)
        else:
            kc.register_kafka_handler_service(server, handle)
        await server.serve()

    asyncio.run(main())
    cpu = cpu1 - cpu0
    return {"messages": seen, "seconds": end - first, "total_s": end - begin, "cpu_s": cpu}


class GcMeter:
    """Counts CPython's cyclic collections (per generation) and the time spent in them, over
    a child's whole run: the cost raw confluent-kafka does not pay (consumer-paths-2.md)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1


def run_child(args: argparse.Namespace) -> int:
    gc_meter = GcMeter()
    group = f"bench-{args.child}-{uuid.uuid4().hex[:8]}"
    address = f"{args.bootstrap}?topics={args.topic}&group={group}&initial=oldest"
    if args.child == "raw":
        result = child_raw(address, args.topic, args.messages)
    elif args.child == "aiokafka":
        result = child_aiokafka(args.bootstrap, args.topic, group, args.messages)
    elif args.child in ("async", "def", "batch"):
        result = child_service(address, args.messages, args.child)
    else:
        raise SystemExit(f"unknown variant {args.child!r}")
    result["rate"] = result["messages"] / result["seconds"]
    if "cpu_s" in result:  # CPU of all the process's threads (librdkafka's too) per record
        result["cpu_us_per_msg"] = result["cpu_s"] / result["messages"] * 1e6
    result["peak_rss_mb"] = peak_rss_mb()
    result["gc_s"] = gc_meter.seconds
    print(json.dumps({**result, "gc_collections": gc_meter.collections}))
    return 0


# -- parent ---------------------------------------------------------------------------------


def _spawn(variant: str, bootstrap: str, topic: str, args: argparse.Namespace) -> dict[str, Any]:
    kind, _, before = variant.partition("@")
    env = dict(os.environ)
    if before:  # the same variant on another source tree (e.g. `git archive` of main)
        env["PYTHONPATH"] = str(Path(args.before_src).resolve() / "src")
    return spawn_variant(
        __file__,
        kind,
        *("--bootstrap", bootstrap, "--topic", topic, "--messages", str(args.messages)),
        timeout=args.child_timeout,
        env=env,
    )


def run_parent(args: argparse.Namespace) -> int:
    from trpc_kafka._tools.broker import broker_or_temporary

    if args.quick:
        args.messages = args.messages or 200_000
        args.rounds = args.rounds or 2
    args.messages = args.messages or 1_000_000
    args.rounds = args.rounds or 3
    variants = [v for v in args.variants.split(",") if v]
    if args.before_src:
        variants += [f"{v}@before" for v in variants if v in ("async", "def", "batch")]
    with broker_or_temporary(args.bootstrap) as bootstrap:
        started = time.perf_counter()
        topic = preload(bootstrap, args.messages, prefix="bench-paths")
        print(f"pre-loaded {args.messages:,} records in {time.perf_counter() - started:.1f}s")
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for round_no in range(args.rounds):
            for variant in variants:
                result = _spawn(variant, bootstrap, topic, args)
                runs[variant].append(result)
                print(
                    f"round {round_no + 1}/{args.rounds} {variant:14s} {result['rate']:>11,.0f} "
                    f"msg/s ({result['seconds']:.2f}s, total {result['total_s']:.2f}s) "
                    f"cpu {result.get('cpu_us_per_msg', 0):.2f} us/msg "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB "
                    f"gc {result.get('gc_collections')} {result.get('gc_s', 0):.3f}s",
                    flush=True,
                )
    medians = {
        v: {
            "rate": statistics.median(r["rate"] for r in rs),
            "cpu_us_per_msg": statistics.median(r.get("cpu_us_per_msg", 0.0) for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "gc_s": statistics.median(r.get("gc_s", 0.0) for r in rs),
        }
        for v, rs in runs.items()
    }
    raw = medians.get("raw", {}).get("rate")
    ratios = {v: m["rate"] / raw for v, m in medians.items()} if raw else {}
    targets = {
        f"{v}/{against}": {
            "least": least,
            "ratio": medians[v]["rate"] / medians[against]["rate"],
            "met": medians[v]["rate"] / medians[against]["rate"] >= least,
        }
        for v, against, least in TARGETS
        if v in medians and against in medians
    }
    import confluent_kafka

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "messages": args.messages,
        "value_bytes": VALUE_SIZE,
        "partitions": PARTITIONS,
        "rounds": args.rounds,
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
        "load_average": os.getloadavg(),
        "medians": medians,
        "ratios_vs_raw": ratios,
        "targets": targets,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\nvariant         median msg/s   x raw   peak RSS   cpu us/msg   gc s")
    for v, m in medians.items():
        ratio = f"{ratios[v]:.2f}" if v in ratios else "-"
        cpu = m["cpu_us_per_msg"]
        print(
            f"{v:14s} {m['rate']:>13,.0f} {ratio:>7s} {m['peak_rss_mb']:>7.0f} MB {cpu:>9.2f} "
            f"{m['gc_s']:>8.3f}"
        )
    for name, t in targets.items():
        print(f"target {name} >= {t['least']}: {t['ratio']:.2f} {'met' if t['met'] else 'NOT met'}")
    print(f"written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one)")
    parser.add_argument("--quick", action="store_true", help="200k records, 2 rounds")
    parser.add_argument("--messages", type=int, default=0, help="records (default 1M)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 3)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--before-src",
        help="a source tree (with src/trpc_kafka) whose service variants run too, as "
        "VARIANT@before: before/after figures in one run",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child-timeout", type=float, default=900.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    return run_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
