"""Key-ordered concurrency (``keyConcurrency``) against one record at a time: a slow handler,
one partition, many keys.

    .venv/bin/python bench/key_concurrency.py [--bootstrap HOST:PORT] [--records 20000]
        [--keys 1000] [--handler-ms 10] [--concurrency 64] [--single-records 2000]

Without ``--bootstrap`` a local broker is started in a temporary directory and stopped at the
end. A topic with one partition is pre-loaded with ``--records`` values of 100 bytes whose keys
are drawn at random from ``--keys`` keys. Then, each in a fresh subprocess reading from the
oldest record, one consumer service whose ``async def`` handler sleeps ``--handler-ms``:

a. ``single``: ``keyConcurrency=1`` (the default), on the first ``--single-records`` records
   (0: all; at 10 ms a record, 20,000 take over 200 s, so a prefix by default);
b. ``keyed``: ``keyConcurrency=--concurrency``, on all the records.

Throughput is records / seconds from the first record handled to the last. The child also
checks that each key's records were handled in offset order and reports the most records in
flight at once. Results go to ``--out`` (``bench/results/key-concurrency.json``; summed up by
hand in ``key-concurrency.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from harness import spawn_variant, write_report

RESULTS = Path(__file__).with_name("results") / "key-concurrency.json"
VALUE_SIZE = 100


def run_child(args: argparse.Namespace) -> int:
    import trpc_kafka
    from trpc_kafka._runtime.server import Server, Service

    concurrency = 1 if args.variant == "single" else args.concurrency
    address = (
        f"{args.bootstrap}?topics={args.topic}&group={args.group}&initial=oldest"
        f"&maxWaitTime=100&keyConcurrency={concurrency}"
    )
    delay = args.handler_ms / 1000
    target = args.records
    last_offset: dict[bytes | None, int] = {}
    out_of_order = 0
    handled = 0
    in_flight = max_in_flight = 0
    times: list[float] = []

    async def handle(ctx: trpc_kafka.Context, msg: trpc_kafka.ConsumerMessage) -> None:
        nonlocal handled, in_flight, max_in_flight, out_of_order
        if msg.offset >= target:
            return
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        await asyncio.sleep(delay)
        in_flight -= 1
        key = msg.key
        if msg.offset <= last_offset.get(key, -1):
            out_of_order += 1
        last_offset[key] = msg.offset
        handled += 1
        times.append(time.monotonic())

    async def main() -> dict[str, Any]:
        server = Server(max_close_wait=30)
        server.add_service(Service("bench", address=address))
        trpc_kafka.register_kafka_handler_service(server, handle)
        task = asyncio.create_task(server.serve())
        began = time.monotonic()
        deadline = began + args.timeout
        while handled < target and time.monotonic() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.1)
        await server.close()
        await task
        seconds = times[-1] - times[0] if len(times) > 1 else float("nan")
        return {
            "variant": args.variant,
            "key_concurrency": concurrency,
            "records": target,
            "handled": handled,
            "keys_seen": len(last_offset),
            "out_of_key_order": out_of_order,
            "max_in_flight": max_in_flight,
            "seconds": round(seconds, 2),
            "records_per_s": round((len(times) - 1) / seconds, 1),
            "total_s": round(time.monotonic() - began, 2),
        }

    print(json.dumps(asyncio.run(main())))
    return 0


def _preload(bootstrap: str, topic: str, records: int, keys: int, seed: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = random.Random(seed)
    value = b"x" * VALUE_SIZE
    for _ in range(records):
        key = f"key-{rng.randrange(keys)}".encode()
        while True:
            try:
                producer.produce(topic, value, key, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _spawn(
    variant: str, bootstrap: str, topic: str, records: int, args: argparse.Namespace
) -> dict[str, Any]:
    return spawn_variant(
        __file__,
        variant,
        *("--bootstrap", bootstrap, "--topic", topic),
        *("--group", f"bench-{variant}-{uuid.uuid4().hex[:8]}"),
        *("--records", str(records), "--handler-ms", str(args.handler_ms)),
        *("--concurrency", str(args.concurrency), "--timeout", str(args.timeout)),
    )


def run_parent(args: argparse.Namespace) -> int:
    from trpc_kafka._tools.broker import broker_or_temporary, create_topic

    single_records = args.single_records or args.records
    with broker_or_temporary(args.bootstrap) as bootstrap:
        topic = f"bench-keyed-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, partitions=1)
        _preload(bootstrap, topic, args.records, args.keys, args.seed)
        results = {}
        for variant, records in (("keyed", args.records), ("single", single_records)):
            print(f"running {variant} ...", file=sys.stderr)
            results[variant] = _spawn(variant, bootstrap, topic, records, args)
            print(json.dumps(results[variant]), file=sys.stderr)
    ratio = results["keyed"]["records_per_s"] / results["single"]["records_per_s"]
    write_report(
        Path(args.out),
        "key_concurrency.py",
        handler_ms=args.handler_ms,
        keys=args.keys,
        results=results,
        keyed_vs_single=round(ratio, 2),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--handler-ms", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--single-records", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", default=str(RESULTS), help="where the JSON report goes")
    parser.add_argument("--child", choices=("single", "keyed"), dest="variant")
    parser.add_argument("--topic")
    parser.add_argument("--group")
    args = parser.parse_args(argv)
    if args.variant:
        return run_child(args)
    return run_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
