"""Producer benchmark: trpc-kafka against raw confluent-kafka and aiokafka, same run, same broker.

    .venv/bin/python bench/producer.py [--bootstrap HOST:PORT] [--messages N] [--rounds R]

Without ``--bootstrap`` a local broker is started (``trpc_kafka._tools.broker``) in a temporary
directory and stopped at the end. Workloads, 100-byte values, compression none, one topic with
6 partitions, the same librdkafka settings for raw and ours (from the same address):

a. raw confluent-kafka: ``Producer.produce`` + ``poll(0)`` loop, then ``flush``; no delivery
   callback (a2: the same loop with a do-nothing ``on_delivery``, the least an application that
   wants to know about lost messages needs);
b. ours: ``await proxy.async_send_message`` loop (no filters), until every report is in;
c. ours: ``await proxy.send_message`` with 1,000 calls in flight (c2: the same with a 5 s
   timeout, i.e. deadline tracking);
d. p50/p99 latency of single acked sends at low load (one at a time): ours, raw, aiokafka;
e. aiokafka: ``send`` loop then ``flush`` (fire and forget), and ``send_and_wait`` with 1,000 in
   flight.

Two settings profiles, each a full set of rounds: ``default`` (the address with
``compression=none`` only: ``flushFrequency=0``, so ``linger.ms=0``, Sarama's send-at-once)
and ``flush5`` (``flushFrequency=5``: a 5 ms batching wait, librdkafka's own default);
aiokafka gets the same linger. Throughput runs are interleaved over ``--rounds`` rounds; the
JSON has every run, the medians and the ratios of medians against (a). Written to
``bench/results/producer.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import Producer

from trpc_kafka._config.address import parse_address
from trpc_kafka._config.rdkafka import producer_settings
from trpc_kafka._producer import new_client_proxy
from trpc_kafka._producer.pool import close_all_producers
from trpc_kafka._tools.broker import broker_or_temporary

VALUE = b"x" * 100
PARTITIONS = 6
IN_FLIGHT = 1000
RESULTS = Path(__file__).with_name("results") / "producer.json"


PROFILES: dict[str, str] = {"default": "", "flush5": "&flushFrequency=5"}
_profile = ["default"]


def _target(bootstrap: str, topic: str) -> str:
    extra = PROFILES[_profile[0]]
    return f"kafka://{bootstrap}?topic={topic}&compression=none{extra}"


def _raw_settings(bootstrap: str, topic: str) -> dict[str, Any]:
    return producer_settings(parse_address(_target(bootstrap, topic)))


def _linger_ms(bootstrap: str, topic: str) -> int:
    return int(_raw_settings(bootstrap, topic).get("linger.ms", 5))


# -- (a) raw confluent-kafka -------------------------------------------------------------


def raw_throughput(bootstrap: str, topic: str, n: int, with_callback: bool = False) -> float:
    p = Producer(_raw_settings(bootstrap, topic))
    p.produce(topic, VALUE)  # connect and fetch metadata before timing
    p.flush(30)
    poll = p.poll
    failed: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            failed.append(err)

    produce = partial(p.produce, on_delivery=on_delivery) if with_callback else p.produce
    start = time.perf_counter()
    for _ in range(n):
        try:
            produce(topic, VALUE)
        except BufferError:
            poll(0.1)
            produce(topic, VALUE)
        poll(0)
    if p.flush(60):
        raise RuntimeError("raw: flush timed out")
    if failed:
        raise RuntimeError(f"raw: {failed[0]}")
    return n / (time.perf_counter() - start)


def raw_latency(bootstrap: str, topic: str, samples: int) -> list[float]:
    p = Producer(_raw_settings(bootstrap, topic))
    p.produce(topic, VALUE)
    p.flush(30)
    out: list[float] = []
    failed: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            failed.append(err)

    for _ in range(samples):
        start = time.perf_counter()
        p.produce(topic, VALUE, on_delivery=on_delivery)
        # poll, not flush: flush() sends at once, ignoring linger.ms, which no acked send does.
        while len(p):
            p.poll(0.1)
        out.append(time.perf_counter() - start)
    if failed:
        raise RuntimeError(f"raw latency: {failed[0]}")
    return out


# -- (b) (c) (d) ours ----------------------------------------------------------------------


async def _wait_delivered(proxy: Any) -> None:
    entry = proxy._entry
    assert entry is not None
    while entry.queued():  # noqa: ASYNC110 - librdkafka's queue length is no asyncio primitive
        await asyncio.sleep(0.0005)


async def ours_async_send(bootstrap: str, topic: str, n: int) -> float:
    proxy = new_client_proxy(
        f"bench.async.{uuid.uuid4().hex[:6]}", target=_target(bootstrap, topic)
    )
    await proxy.send_message(topic, None, VALUE)  # create the producer, connect
    send = proxy.async_send_message
    start = time.perf_counter()
    for _ in range(n):
        await send(topic, None, VALUE)
    await _wait_delivered(proxy)
    rate = n / (time.perf_counter() - start)
    await proxy.close()
    return rate


async def ours_send_in_flight(
    bootstrap: str, topic: str, n: int, timeout: float | None = None
) -> float:
    proxy = new_client_proxy(
        f"bench.send.{uuid.uuid4().hex[:6]}", target=_target(bootstrap, topic), timeout=timeout
    )
    await proxy.send_message(topic, None, VALUE)
    send = proxy.send_message
    per_worker = n // IN_FLIGHT

    async def worker() -> None:
        for _ in range(per_worker):
            await send(topic, None, VALUE)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    rate = per_worker * IN_FLIGHT / (time.perf_counter() - start)
    await proxy.close()
    return rate


async def ours_latency(bootstrap: str, topic: str, samples: int) -> list[float]:
    proxy = new_client_proxy(f"bench.lat.{uuid.uuid4().hex[:6]}", target=_target(bootstrap, topic))
    await proxy.send_message(topic, None, VALUE)
    out: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        await proxy.send_message(topic, None, VALUE)
        out.append(time.perf_counter() - start)
    await proxy.close()
    return out


# -- (e) aiokafka ------------------------------------------------------------------------


def _aiokafka_producer(bootstrap: str, linger_ms: int) -> Any:
    from aiokafka import AIOKafkaProducer

    # acks=all as ours (requiredAcks=-1), no compression, the profile's linger.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type=None, linger_ms=linger_ms
    )


async def aiokafka_send(bootstrap: str, topic: str, n: int) -> float:
    producer = _aiokafka_producer(bootstrap, _linger_ms(bootstrap, topic))
    await producer.start()
    try:
        await producer.send_and_wait(topic, VALUE)
        start = time.perf_counter()
        for _ in range(n):
            await producer.send(topic, VALUE)
        await producer.flush()
        return n / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def aiokafka_send_and_wait(bootstrap: str, topic: str, n: int) -> float:
    producer = _aiokafka_producer(bootstrap, _linger_ms(bootstrap, topic))
    await producer.start()
    per_worker = n // IN_FLIGHT
    try:
        await producer.send_and_wait(topic, VALUE)

        async def worker() -> None:
            for _ in range(per_worker):
                await producer.send_and_wait(topic, VALUE)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return per_worker * IN_FLIGHT / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def aiokafka_latency(bootstrap: str, topic: str, samples: int) -> list[float]:
    producer = _aiokafka_producer(bootstrap, _linger_ms(bootstrap, topic))
    await producer.start()
    out: list[float] = []
    try:
        await producer.send_and_wait(topic, VALUE)
        for _ in range(samples):
            start = time.perf_counter()
            await producer.send_and_wait(topic, VALUE)
            out.append(time.perf_counter() - start)
        return out
    finally:
        await producer.stop()


# -- driver ------------------------------------------------------------------------------


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50_ms": round(at(0.50), 3), "p99_ms": round(at(0.99), 3), "n": len(ordered)}


def _new_topic(bootstrap: str) -> str:
    from trpc_kafka._tools.broker import create_topic

    name = f"bench-producer-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, name, partitions=PARTITIONS)
    return name


async def run_profile(args: argparse.Namespace, bootstrap: str, topic: str) -> dict[str, Any]:
    n = args.messages
    n_aio = args.aiokafka_messages or max(IN_FLIGHT, n // 4)
    workloads: dict[str, Callable[[], Awaitable[float]]] = {
        "a_raw_produce_poll": lambda: asyncio.to_thread(raw_throughput, bootstrap, topic, n),
        "a2_raw_produce_poll_with_delivery_callback": lambda: asyncio.to_thread(
            raw_throughput, bootstrap, topic, n, True
        ),
        "b_ours_async_send_message": lambda: ours_async_send(bootstrap, topic, n),
        "c_ours_send_message_1000_in_flight": lambda: ours_send_in_flight(bootstrap, topic, n),
        "c2_ours_send_message_1000_in_flight_timeout_5s": lambda: ours_send_in_flight(
            bootstrap, topic, n, 5.0
        ),
        "e1_aiokafka_send_flush": lambda: aiokafka_send(bootstrap, topic, n_aio),
        "e2_aiokafka_send_and_wait_1000_in_flight": lambda: aiokafka_send_and_wait(
            bootstrap, topic, n_aio
        ),
    }
    if args.only:
        workloads = {k: v for k, v in workloads.items() if k.split("_")[0] in args.only}
    runs: dict[str, list[float]] = {k: [] for k in workloads}
    for r in range(args.rounds):
        for name, workload in workloads.items():
            rate = await workload()
            runs[name].append(round(rate))
            print(f"[{_profile[0]}] round {r + 1}: {name}: {rate:,.0f} msg/s", flush=True)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    base = medians.get("a_raw_produce_poll")
    ratios = {k: round(v / base, 3) for k, v in medians.items()} if base else {}
    base2 = medians.get("a2_raw_produce_poll_with_delivery_callback")
    ratios2 = {k: round(v / base2, 3) for k, v in medians.items()} if base2 else {}

    latency: dict[str, Any] = {}
    if not args.only or "d" in args.only:
        samples = args.latency_samples
        latency = {
            "d_ours_send_message": _percentiles(await ours_latency(bootstrap, topic, samples)),
            "d_raw_produce_poll": _percentiles(
                await asyncio.to_thread(raw_latency, bootstrap, topic, samples)
            ),
            "d_aiokafka_send_and_wait": _percentiles(
                await aiokafka_latency(bootstrap, topic, samples)
            ),
        }
        for k, v in latency.items():
            print(f"[{_profile[0]}] {k}: p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms", flush=True)
    await close_all_producers()
    return {
        "address": _target(bootstrap, topic).replace(bootstrap, "BOOTSTRAP"),
        "librdkafka_settings": {
            k: v for k, v in _raw_settings(bootstrap, topic).items() if k != "bootstrap.servers"
        },
        "throughput_msg_per_s": {"runs": runs, "median": medians},
        "ratio_vs_a_raw": ratios,
        "ratio_vs_a2_raw_with_delivery_callback": ratios2,
        "latency_single_acked_send": latency,
        "targets": {
            "b_over_a_min": 0.8,
            "c_over_a_min": 0.5,
            "b_met": ratios.get("b_ours_async_send_message", 0) >= 0.8,
            "c_met": ratios.get("c_ours_send_message_1000_in_flight", 0) >= 0.5,
        },
    }


async def run(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    topic = _new_topic(bootstrap)
    profiles: dict[str, Any] = {}
    for name in args.profiles:
        _profile[0] = name
        profiles[name] = await run_profile(args, bootstrap, topic)
    n = args.messages
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "confluent_kafka": confluent_kafka.__version__,
            "librdkafka": confluent_kafka.libversion()[0],
            "aiokafka": _aiokafka_version(),
            "broker": "local single-node Apache Kafka (KRaft) on the same machine",
        },
        "workload": {
            "value_bytes": len(VALUE),
            "compression": "none",
            "partitions": PARTITIONS,
            "messages": n,
            "aiokafka_messages": args.aiokafka_messages or max(IN_FLIGHT, n // 4),
            "in_flight": IN_FLIGHT,
            "rounds": args.rounds,
            "latency_samples": args.latency_samples,
        },
        "profiles": profiles,
    }


def _aiokafka_version() -> str:
    try:
        import aiokafka
    except ImportError:  # pragma: no cover
        return "not installed"
    return str(aiokafka.__version__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one)")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument(
        "--aiokafka-messages", type=int, default=0, help="default: a quarter of --messages"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument(
        "--only", nargs="*", default=[], help="workload letters to run, e.g. a b (default: all)"
    )
    parser.add_argument(
        "--profiles",
        nargs="+",
        default=list(PROFILES),
        choices=list(PROFILES),
        help="settings profiles to run (default: all)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with broker_or_temporary(args.bootstrap) as bootstrap:
        result = asyncio.run(run(args, bootstrap))
    if not args.only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    for name, profile in result["profiles"].items():
        print(name, json.dumps(profile["ratio_vs_a_raw"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
