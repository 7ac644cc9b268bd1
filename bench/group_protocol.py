"""Rebalance pause: a member joins a consuming group of 3, classic protocol against KIP-848.

    .venv/bin/python bench/group_protocol.py [--bootstrap HOST:PORT] [--rounds 3]

Without ``--bootstrap`` a local broker is started in a temporary directory and stopped at the
end. Per round and variant: a fresh topic of 12 partitions gets a record on every partition
every 20 ms; three consumer services of one group consume it until each holds 4 partitions and
every partition is being consumed; then, 2 to 7 s later (at random: the phase of the
members' heartbeats decides when they learn of the join), a fourth service joins the group
(time 0). Measured:

- ``settled_s``: from time 0 until the four members hold 3 partitions each and every
  partition has had a record consumed after its last move, by the member that owns it now:
  "every partition is consumed again";
- ``max_pause_s``: the longest time any partition went without a consumed record in the 30 s
  after time 0 (the pause a rebalance imposes on a partition that moves, or on all of them).

Variants: ``cooperative`` (the default ``strategy=sticky``: librdkafka's cooperative-sticky on
the classic protocol), ``consumer`` (``groupProtocol=consumer``: the broker's uniform assignor),
``eager`` (``strategy=range`` on the classic protocol: every partition stops), each in its own
subprocess. Medians over ``--rounds`` go to ``bench/results/group-protocol.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from harness import spawn_variant, write_report

RESULTS = Path(__file__).with_name("results") / "group-protocol.json"
PARTITIONS = 12
PRODUCE_EVERY = 0.02
WINDOW = 30.0
VARIANTS = {
    "cooperative": "",
    "consumer": "&groupProtocol=consumer",
    "eager": "&strategy=range",
}


def _produce(bootstrap: str, topic: str, stop: threading.Event) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    while not stop.is_set():
        for p in range(PARTITIONS):
            producer.produce(topic, b"x", partition=p)
        producer.poll(0)
        stop.wait(PRODUCE_EVERY)
    producer.flush(10)


def run_child(args: argparse.Namespace) -> int:
    import trpc_kafka
    from trpc_kafka._consumer.transport import KafkaServiceTransport
    from trpc_kafka._runtime.server import Server, Service

    address = (
        f"{args.bootstrap}?topics={args.topic}&group={args.group}&initial=newest"
        f"&maxWaitTime=50{VARIANTS[args.variant]}"
    )
    # partition -> [(time, member)] of consumed records
    seen: dict[int, list[tuple[float, str]]] = {p: [] for p in range(PARTITIONS)}

    async def handle(ctx: trpc_kafka.Context, msg: trpc_kafka.ConsumerMessage) -> None:
        seen[msg.partition].append((time.monotonic(), ctx.callee_service))

    def owners(servers: list[Server]) -> dict[int, str]:
        found = {}
        for server in servers:
            for service in server.services.values():
                transport = service.transport
                if isinstance(transport, KafkaServiceTransport):
                    for _, p in transport.session_view().assignment:
                        found[p] = service.name
        return found

    async def main() -> dict[str, Any]:
        stop = threading.Event()
        producer = threading.Thread(target=_produce, args=(args.bootstrap, args.topic, stop))
        producer.start()
        group = Server(max_close_wait=10)
        for i in range(3):
            group.add_service(Service(f"member-{i}", address=address))
        joiner = Server(max_close_wait=10)
        joiner.add_service(Service("member-3", address=address))
        for server in (group, joiner):
            trpc_kafka.register_kafka_handler_service(server, handle)
        tasks = [asyncio.create_task(group.serve())]
        try:
            deadline = time.monotonic() + 120
            while True:  # 4 partitions each, all consumed within the last second
                now = time.monotonic()
                if sorted(Counter(owners([group]).values()).values()) == [4, 4, 4] and all(
                    seen[p] and now - seen[p][-1][0] < 1.0 for p in range(PARTITIONS)
                ):
                    break
                if now > deadline:
                    raise RuntimeError("the group of 3 did not settle in 120 s")
                await asyncio.sleep(0.05)
            # At a random point of the members' heartbeat cycles (3 s classic, 5 s KIP-848),
            # which decide when they learn of the join.
            await asyncio.sleep(random.uniform(2.0, 7.0))
            joined_at = time.monotonic()
            tasks.append(asyncio.create_task(joiner.serve()))
            settled_at = None
            moved_at: dict[int, float] = {}
            moves: list[tuple[float, int, str | None, str]] = []
            last_owner = owners([group])
            while time.monotonic() - joined_at < WINDOW:
                now = time.monotonic()
                current = owners([group, joiner])
                for p, member in current.items():
                    if last_owner.get(p) != member:
                        moved_at[p] = now
                        moves.append((round(now - joined_at, 2), p, last_owner.get(p), member))
                last_owner = {**last_owner, **current}
                if (
                    settled_at is None
                    and sorted(Counter(current.values()).values()) == [3, 3, 3, 3]
                    and all(
                        any(t >= moved_at.get(p, joined_at) and m == current[p] for t, m in seen[p])
                        for p in range(PARTITIONS)
                    )
                ):
                    settled_at = now
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            for server in (joiner, group):
                await server.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            producer.join()
        pauses = []
        for p in range(PARTITIONS):
            times = [t for t, _ in seen[p] if t >= joined_at - 1.0 and t <= joined_at + WINDOW]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            if times:
                gaps.append(times[0] - (joined_at - 1.0))
            pauses.append(max(gaps) if gaps else WINDOW)
        return {
            "variant": args.variant,
            "settled_s": None if settled_at is None else round(settled_at - joined_at, 2),
            "max_pause_s": round(max(pauses), 2),
            "partitions_moved": len(moved_at),
            "joiner_partitions": sum(1 for m in last_owner.values() if m == "member-3"),
            "moves": moves,
        }

    print(json.dumps(asyncio.run(main())))
    return 0


def _spawn(variant: str, bootstrap: str) -> dict[str, Any]:
    from trpc_kafka._tools.broker import create_topic

    topic = f"bench-rebalance-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=PARTITIONS)
    group = f"bench-{variant}-{uuid.uuid4().hex[:8]}"
    return spawn_variant(
        __file__, variant, "--bootstrap", bootstrap, "--topic", topic, "--group", group
    )


def run_parent(args: argparse.Namespace) -> int:
    from trpc_kafka._tools.broker import broker_or_temporary

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    with broker_or_temporary(args.bootstrap) as bootstrap:
        for round_no in range(args.rounds):
            for variant in args.variants:
                result = _spawn(variant, bootstrap)
                print(f"round {round_no + 1} {json.dumps(result)}", file=sys.stderr)
                runs[variant].append(result)
    medians = {}
    for variant, results in runs.items():
        settled = [r["settled_s"] for r in results if r["settled_s"] is not None]
        medians[variant] = {
            "settled_s": statistics.median(settled) if settled else None,
            "not_settled_in_window": len(results) - len(settled),
            "max_pause_s": statistics.median(r["max_pause_s"] for r in results),
        }
    write_report(RESULTS, "group_protocol.py", medians=medians, runs=runs)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--child", choices=tuple(VARIANTS), dest="variant")
    parser.add_argument("--topic")
    parser.add_argument("--group")
    args = parser.parse_args(argv)
    if args.variant:
        return run_child(args)
    return run_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
