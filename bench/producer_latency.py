"""Acked-send latency, interleaved: raw confluent-kafka against ours (asyncio and blocking).

    .venv/bin/python bench/producer_latency.py --bootstrap HOST:PORT [--rounds 5]
        [--samples 2000] [--only raw ours_async ...] [--before SRC] [--out FILE.json]

Each variant runs in its own process, once per round, the variants interleaved within a round
(so a load change on a shared machine hits all of them alike). A run sends ``--samples``
acked messages of 100 bytes one at a time (after 200 unmeasured ones: connections, metadata,
warm code) and prints p50 / p99 of the wall time per send and the CPU time per send
(``time.process_time``: every thread of the process, librdkafka's included), which moves less
with the machine's load than wall time. ``--before SRC`` adds ``*_before`` variants that run
the same code with ``SRC`` (a copy of another commit's ``src/``) first on ``PYTHONPATH``.

``--inproc`` runs instead one process that cycles blocks of 100 sends through ``raw``,
``ours_async`` and ``ours_sync``, each of ours twice: as is, and with callers' polling switched
off (``ProducerEntry.poll_here`` answering False: every report goes through the delivery
thread, as before it existed). The blocks interleave within milliseconds, so load swings
between processes and rounds do not enter the comparison.

Variants:

- ``raw``: ``produce`` then ``poll(0.1)`` until the report, in the calling thread (issue 13's
  baseline, as ``bench/compare.py``'s ``raw_latency``);
- ``raw_thread``: raw ``produce``, a second thread polls and releases a lock per report (what
  one thread hop costs, for scale);
- ``ours_async``: ``await proxy.send_message(...)`` on an asyncio loop;
- ``ours_sync``: ``proxy.send_message_sync(...)`` from a thread without a loop;
- ``ours_sync_busy``: ``ours_sync`` while 3 other threads send blocking too (each thread's p50).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

VALUE = b"x" * 100
WARM = 200
VARIANTS = ("raw", "raw_thread", "ours_async", "ours_sync", "ours_sync_busy")


def _stats(samples: list[float], cpu: float, n: int) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3,
        "cpu_us": cpu / n * 1e6,
        "samples": len(ordered),
    }


def _target(bootstrap: str, topic: str) -> str:
    return f"kafka://{bootstrap}?topic={topic}&compression=none"


def _raw_producer(bootstrap: str, topic: str) -> Any:
    from confluent_kafka import Producer

    from trpc_kafka._config.address import parse_address
    from trpc_kafka._config.rdkafka import producer_settings

    return Producer(producer_settings(parse_address(_target(bootstrap, topic))))


def raw(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    p = _raw_producer(bootstrap, topic)
    failed: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            failed.append(err)

    out: list[float] = []
    cpu = 0.0
    for i in range(WARM + n):
        if i == WARM:
            cpu = time.process_time()
        start = time.perf_counter()
        p.produce(topic, VALUE, on_delivery=on_delivery)
        while len(p):
            p.poll(0.1)
        out.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    if failed:
        raise RuntimeError(f"raw: {failed[0]}")
    return _stats(out[WARM:], cpu, n)


def raw_thread(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    p = _raw_producer(bootstrap, topic)
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            p.poll(0.1)

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    out: list[float] = []
    cpu = 0.0
    for i in range(WARM + n):
        if i == WARM:
            cpu = time.process_time()
        lock = threading.Lock()
        lock.acquire()
        start = time.perf_counter()
        p.produce(topic, VALUE, on_delivery=lambda err, msg, lock=lock: lock.release())
        lock.acquire()
        out.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    stop.set()
    thread.join()
    return _stats(out[WARM:], cpu, n)


def ours_async(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    import trpc_kafka

    async def main() -> dict[str, Any]:
        proxy = trpc_kafka.new_client_proxy("bench.latency", target=_target(bootstrap, topic))
        out: list[float] = []
        cpu = 0.0
        for i in range(WARM + n):
            if i == WARM:
                cpu = time.process_time()
            start = time.perf_counter()
            await proxy.send_message(topic, None, VALUE)
            out.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
        await proxy.close()
        return _stats(out[WARM:], cpu, n)

    return asyncio.run(main())


def ours_sync(bootstrap: str, topic: str, n: int, others: int = 0) -> dict[str, Any]:
    import trpc_kafka

    proxy = trpc_kafka.new_client_proxy("bench.latency", target=_target(bootstrap, topic))
    stop = threading.Event()

    def other() -> None:
        while not stop.is_set():
            proxy.send_message_sync(topic, None, VALUE)

    proxy.send_message_sync(topic, None, VALUE)
    threads = [threading.Thread(target=other, daemon=True) for _ in range(others)]
    for t in threads:
        t.start()
    out: list[float] = []
    cpu = 0.0
    for i in range(WARM + n):
        if i == WARM:
            cpu = time.process_time()
        start = time.perf_counter()
        proxy.send_message_sync(topic, None, VALUE)
        out.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    stop.set()
    for t in threads:
        t.join()
    proxy.close_sync()
    return _stats(out[WARM:], cpu, n)


def inproc(bootstrap: str, topic: str, cycles: int, block: int = 100) -> dict[str, Any]:
    """Blocks of ``block`` sends per design, cycled ``cycles`` times (the first one unmeasured)."""
    import trpc_kafka
    from trpc_kafka._producer.entry import ProducerEntry

    producer = _raw_producer(bootstrap, topic)
    producer.produce(topic, VALUE)
    producer.flush(30)
    polling_on = ProducerEntry.poll_here

    def polling_off(*_: Any, **__: Any) -> bool:
        return False

    samples: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}

    def timed(name: str, send: Any) -> None:
        c = time.process_time()
        t = time.perf_counter()
        send()
        samples.setdefault(name, []).append(time.perf_counter() - t)
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - c

    def raw_send() -> None:
        producer.produce(topic, VALUE)
        while len(producer):
            producer.poll(0.1)

    target = _target(bootstrap, topic)
    loop = asyncio.new_event_loop()
    on_loop = trpc_kafka.new_client_proxy("bench.latency.async", target=target)
    blocking = trpc_kafka.new_client_proxy("bench.latency.sync", target=target)

    async def async_block(name: str) -> None:
        for _ in range(block):
            c = time.process_time()
            t = time.perf_counter()
            await on_loop.send_message(topic, None, VALUE)
            samples.setdefault(name, []).append(time.perf_counter() - t)
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - c

    designs = ("raw", "ours_async", "ours_async_no_caller_poll", "ours_sync",
               "ours_sync_no_caller_poll")  # fmt: skip
    for cycle in range(cycles + 1):
        if cycle == 1:  # the first cycle warms up: connections, metadata, code
            samples.clear()
            cpu.clear()
        for name in designs:
            ProducerEntry.poll_here = (  # type: ignore[method-assign]
                polling_off if name.endswith("no_caller_poll") else polling_on
            )
            if name == "raw":
                for _ in range(block):
                    timed(name, raw_send)
            elif name.startswith("ours_async"):
                loop.run_until_complete(async_block(name))
            else:
                for _ in range(block):
                    timed(name, lambda: blocking.send_message_sync(topic, None, VALUE))
            time.sleep(0.01)  # the delivery thread back in poll between designs
    ProducerEntry.poll_here = polling_on  # type: ignore[method-assign]
    loop.run_until_complete(on_loop.close())
    blocking.close_sync()
    loop.close()
    out: dict[str, Any] = {}
    for name in designs:
        ordered = sorted(samples[name])
        out[name] = {
            "p50_ms": ordered[len(ordered) // 2] * 1e3,
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3,
            "cpu_us": cpu[name] / len(ordered) * 1e6,
            "samples": len(ordered),
        }
    for name in designs:
        out[name]["p50_x_raw"] = out[name]["p50_ms"] / out["raw"]["p50_ms"]
    return out


def child(name: str, bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    base = next(v for v in sorted(VARIANTS, key=len, reverse=True) if name.startswith(v))
    if base == "ours_sync_busy":
        return ours_sync(bootstrap, topic, n, others=3)
    fn = {"raw": raw, "raw_thread": raw_thread, "ours_async": ours_async, "ours_sync": ours_sync}
    return fn[base](bootstrap, topic, n)


def _create_topic(bootstrap: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"latency-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    return topic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    parser.add_argument("--before", help="a copy of another commit's src/ for *_before variants")
    parser.add_argument(
        "--alt",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="adds *_LABEL variants of ours run with SRC first on PYTHONPATH (repeatable)",
    )
    parser.add_argument("--inproc", type=int, metavar="CYCLES", help="one process, see above")
    parser.add_argument("--label", default="")
    parser.add_argument("--out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.bootstrap, args.topic, args.samples)))
        return 0
    topic = _create_topic(args.bootstrap)
    if args.inproc:
        result = inproc(args.bootstrap, topic, args.inproc)
        for name, r in result.items():
            print(
                f"{name:26s} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                f"cpu {r['cpu_us']:.1f} us/send  x raw {r['p50_x_raw']:.2f}"
            )
        if args.out:
            Path(args.out).write_text(
                json.dumps(
                    {"label": args.label, "load": os.getloadavg(), "inproc": result}, indent=1
                )
            )
        return 0
    names: list[str] = []
    for name in args.only:
        names.append(name)
        if args.before and name.startswith("ours"):
            names.append(f"{name}_before")
        if name.startswith("ours"):
            names += [f"{name}_{alt.split('=', 1)[0]}" for alt in args.alt]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            env = dict(os.environ)
            if name.endswith("_before"):
                env["PYTHONPATH"] = args.before
            for alt in args.alt:
                label, src = alt.split("=", 1)
                if name.endswith(f"_{label}"):
                    env["PYTHONPATH"] = src
            cmd = [sys.executable, __file__, "--child", name, "--bootstrap", args.bootstrap,
                   "--topic", topic, "--samples", str(args.samples)]  # fmt: skip
            out = subprocess.run(
                cmd, check=False, env=env, capture_output=True, text=True, timeout=600
            )
            if out.returncode:
                raise RuntimeError(f"{name}: {out.stderr[-2000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(result)
            print(
                f"round {r + 1} {name:20s} p50 {result['p50_ms']:.3f} ms  p99 "
                f"{result['p99_ms']:.3f} ms  cpu {result['cpu_us']:.1f} us/send",
                file=sys.stderr,
                flush=True,
            )
    summary: dict[str, Any] = {}
    for name, rs in runs.items():
        summary[name] = {
            key: statistics.median(r[key] for r in rs) for key in ("p50_ms", "p99_ms", "cpu_us")
        }
        summary[name]["p50_x_raw"] = (
            summary[name]["p50_ms"] / summary["raw"]["p50_ms"] if ("raw" in summary) else None
        )
    for name, s in summary.items():
        ratio = "" if s["p50_x_raw"] is None else f"  x raw {s['p50_x_raw']:.2f}"
        print(
            f"median {name:20s} p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
            f"cpu {s['cpu_us']:.1f} us/send{ratio}"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"label": args.label, "load": os.getloadavg(), "runs": runs, "summary": summary},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
