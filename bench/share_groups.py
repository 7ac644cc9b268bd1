"""Share groups against a classic group: a slow handler on a topic with one partition.

    .venv/bin/python bench/share_groups.py [--bootstrap HOST:PORT] [--records 20000]
        [--handler-ms 10] [--members 4] [--producer-batch 10]

Without ``--bootstrap`` a local broker is started in a temporary directory and stopped at the
end. A topic with one partition is pre-loaded with ``--records`` values of 100 bytes, written
in producer batches of ``--producer-batch`` records (the broker hands a share group member
whole producer batches; see the README). Then, each in a fresh subprocess reading from the
oldest record:

a. ``classic``: one consumer service (classic group) whose ``async def`` handler sleeps
   ``--handler-ms``: one partition is one member's, whatever the number of members;
b. ``share``: ``--members`` consumer services of one share group (``groupType=share``) in one
   process, with the same handler.

Throughput is records / seconds from the first record handled to the last; also reported: how
the records spread over the members and how many were handled more than once. Results go to
``--out`` (``bench/results/share-groups.json``; summed up by hand in ``share-groups.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from harness import spawn_variant, write_report

RESULTS = Path(__file__).with_name("results") / "share-groups.json"
VALUE_SIZE = 100


def run_child(args: argparse.Namespace) -> int:
    import trpc_kafka
    from trpc_kafka._runtime.server import Server, Service

    extra = "&groupType=share" if args.variant == "share" else ""
    members = args.members if args.variant == "share" else 1
    address = (
        f"{args.bootstrap}?topics={args.topic}&group={args.group}&initial=oldest"
        f"&maxWaitTime=100{extra}"
    )
    delay = args.handler_ms / 1000
    handled: Counter[int] = Counter()
    per_member: Counter[str] = Counter()
    times: list[float] = []

    async def handle(ctx: trpc_kafka.Context, msg: trpc_kafka.ConsumerMessage) -> None:
        await asyncio.sleep(delay)
        handled[msg.offset] += 1
        per_member[ctx.callee_service] += 1
        times.append(time.monotonic())

    async def main() -> dict[str, Any]:
        server = Server(max_close_wait=30)
        for i in range(members):
            server.add_service(Service(f"member-{i}", address=address))
        trpc_kafka.register_kafka_handler_service(server, handle)
        task = asyncio.create_task(server.serve())
        began = time.monotonic()
        deadline = began + args.timeout
        while len(handled) < args.records and time.monotonic() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.2)
        await server.close()
        await task
        seconds = times[-1] - times[0] if len(times) > 1 else float("nan")
        return {
            "variant": args.variant,
            "members": members,
            "records": args.records,
            "distinct_handled": len(handled),
            "handled_more_than_once": sum(1 for c in handled.values() if c > 1),
            "per_member": dict(sorted(per_member.items())),
            "seconds": round(seconds, 2),
            "records_per_s": round((len(times) - 1) / seconds, 1),
            "total_s": round(time.monotonic() - began, 2),
        }

    print(json.dumps(asyncio.run(main())))
    return 0


def _preload(bootstrap: str, topic: str, records: int, batch: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "batch.num.messages": batch, "linger.ms": 5}
    )
    value = b"x" * VALUE_SIZE
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _spawn(variant: str, bootstrap: str, topic: str, args: argparse.Namespace) -> dict[str, Any]:
    return spawn_variant(
        __file__,
        variant,
        *("--bootstrap", bootstrap, "--topic", topic),
        *("--group", f"bench-{variant}-{uuid.uuid4().hex[:8]}"),
        *("--records", str(args.records), "--handler-ms", str(args.handler_ms)),
        *("--members", str(args.members), "--timeout", str(args.timeout)),
    )


def run_parent(args: argparse.Namespace) -> int:
    from trpc_kafka._tools.broker import broker_or_temporary, create_topic

    with broker_or_temporary(args.bootstrap) as bootstrap:
        topic = f"bench-share-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, partitions=1)
        _preload(bootstrap, topic, args.records, args.producer_batch)
        results = {}
        for variant in ("share", "classic"):
            print(f"running {variant} ...", file=sys.stderr)
            results[variant] = _spawn(variant, bootstrap, topic, args)
            print(json.dumps(results[variant]), file=sys.stderr)
    ratio = results["share"]["records_per_s"] / results["classic"]["records_per_s"]
    write_report(
        Path(args.out),
        "share_groups.py",
        handler_ms=args.handler_ms,
        producer_batch=args.producer_batch,
        results=results,
        share_vs_classic=round(ratio, 2),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--handler-ms", type=float, default=10.0)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--producer-batch", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", default=str(RESULTS), help="where the JSON report goes")
    parser.add_argument("--child", choices=("classic", "share"), dest="variant")
    parser.add_argument("--topic")
    parser.add_argument("--group")
    args = parser.parse_args(argv)
    if args.variant:
        return run_child(args)
    return run_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
