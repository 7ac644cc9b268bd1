"""Cost per message of the observability filters, producer and consumer, against the real broker.

    .venv/bin/python bench/observability.py [--bootstrap HOST:PORT] [--messages 100000] [--rounds 3]

Without ``--bootstrap`` a local broker is started in a temporary directory and stopped at the
end. Variants, interleaved over ``--rounds`` rounds in this one process:

- ``none``: no filters (the hot paths of the library);
- ``noop``: one ``async def f(ctx, req, next): return await next(ctx, req)`` filter: what any
  filter costs (the chain, the request object, the call context);
- ``prometheus``: the Prometheus filters, counting into a registry of their own;
- ``otel``: the OpenTelemetry filters with the SDK's TracerProvider, every span sampled and
  handed to a BatchSpanProcessor whose exporter drops it (an OTLP exporter without its network);
- ``otel-api``: the OpenTelemetry filters with no SDK configured (the API's no-op tracer): the
  cost of listing ``otel`` in a service that exports nothing;
- ``both``: ``prometheus`` and ``otel`` together.

First, without a broker, the cost of each filter pair alone (``--filter-calls`` calls of the
chain around a no-op innermost handler, with the objects the library passes: a
``ProducerMessage`` and a call context, a consumer context with its partition claim and a
message with a ``traceparent`` header): the minimum and median over ``--rounds`` x 3 runs of
the thread's CPU time, in us per call, robust on a busy machine. Then against the broker:
producer, ``--messages`` ``async_send_message`` calls of 100-byte values, then ``close()``
(flush), per message; consumer, a 6-partition topic pre-loaded with ``--messages`` values,
drained by a service with a no-op ``async def`` handler, a fresh group per run, from the first
message handled to the last, per message; both as wall time and as the process's CPU time
(librdkafka's threads included). Results go to ``bench/results/observability.json``;
``bench/results/observability.md`` discusses them. ``--no-broker`` runs the first part only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results") / "observability.json"
PARTITIONS = 6
VALUE = b"x" * 100
VARIANTS = ("none", "noop", "prometheus", "otel", "otel-api", "both")

Filters = tuple[list[Any], list[Any]]  # (client filters, server filters)


def make_filters() -> dict[str, Filters]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace import NoOpTracerProvider
    from prometheus_client import CollectorRegistry

    from trpc_kafka._runtime.context import Context
    from trpc_kafka._runtime.filters import Handler
    from trpc_kafka.otel import KafkaTracing
    from trpc_kafka.prometheus import KafkaMetrics

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    async def noop(ctx: Context, req: Any, next: Handler) -> Any:
        return await next(ctx, req)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=100_000))
    otel = KafkaTracing(tracer_provider=provider)
    otel_api = KafkaTracing(tracer_provider=NoOpTracerProvider())
    metrics = KafkaMetrics(CollectorRegistry(), rdkafka_stats=False)
    return {
        "none": ([], []),
        "noop": ([noop], [noop]),
        "prometheus": ([metrics.client_filter], [metrics.server_filter]),
        "otel": ([otel.client_filter], [otel.server_filter]),
        "otel-api": ([otel_api.client_filter], [otel_api.server_filter]),
        "both": (
            [metrics.client_filter, otel.client_filter],
            [metrics.server_filter, otel.server_filter],
        ),
    }


async def run_producer(
    bootstrap: str, topic: str, n: int, filters: list[Any]
) -> tuple[float, float]:
    """Seconds per message of n async sends and the flush: wall time, process CPU time."""
    from trpc_kafka import new_client_proxy

    proxy = new_client_proxy(
        "bench.producer",
        target=f"kafka://{bootstrap}?topic={topic}&compression=none",
        filters=filters,
    )
    await proxy.send_message(topic, None, VALUE)  # connected and warmed up, not timed
    send = proxy.async_send_message
    start = time.perf_counter()
    cpu = time.process_time()
    for _ in range(n):
        await send(topic, None, VALUE)
    await proxy.close(timeout=60)
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


async def run_consumer(
    bootstrap: str, topic: str, n: int, filters: list[Any]
) -> tuple[float, float]:
    """Seconds per message handled, first to last: wall time, process CPU time."""
    from trpc_kafka import ConsumerMessage, register_kafka_handler_service
    from trpc_kafka._runtime.context import Context
    from trpc_kafka._runtime.server import Server, Service

    group = f"bench-{uuid.uuid4().hex[:8]}"
    server = Server()
    server.add_service(
        Service(
            "bench.consumer",
            address=f"{bootstrap}?topics={topic}&group={group}&initial=oldest",
            filters=filters,
        )
    )
    seen = 0
    first = end = first_cpu = end_cpu = 0.0
    done = asyncio.Event()

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        nonlocal seen, first, end, first_cpu, end_cpu
        if not seen:
            first = time.perf_counter()
            first_cpu = time.process_time()
        seen += 1
        if seen == n:
            end = time.perf_counter()
            end_cpu = time.process_time()
            done.set()

    register_kafka_handler_service(server, handle)
    task = asyncio.create_task(server.serve())
    await asyncio.wait_for(done.wait(), 600)
    await server.close()
    await task
    return (end - first) / (n - 1), (end_cpu - first_cpu) / (n - 1)


async def filter_cost(filters: Filters, calls: int) -> tuple[float, float]:
    """Microseconds per call of the client chain and of the server chain, no I/O."""
    from trpc_kafka._consumer.message import ConsumerMessage
    from trpc_kafka._consumer.partition import ConsumerContext
    from trpc_kafka._consumer.raw import Claim, GroupSessionView
    from trpc_kafka._producer.message import ProducerMessage
    from trpc_kafka._runtime.context import Context
    from trpc_kafka._runtime.filters import chain

    class Source:  # what a consumer service offers a claim
        def session_view(self) -> GroupSessionView:
            return GroupSessionView("bench", "member-1", 1, (("orders", 0),))

        def high_watermark(self, topic: str, partition: int) -> int | None:
            return calls

    async def innermost(ctx: Context, req: Any) -> Any:
        return None

    claim = Claim(Source(), "orders", 0)
    header = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    msgs = [
        ConsumerMessage("orders", 0, i, key=b"user-1", value=VALUE, headers=header)
        for i in range(calls)
    ]
    client = chain(filters[0], innermost)
    server = chain(filters[1], innermost)
    # CPU time of this thread: what the calls cost, however busy the machine is.
    start = time.thread_time()
    for _ in range(calls):
        ctx = Context(callee_service="p", rpc_name="/p/asyncSend", callee_method="asyncSend")
        await client(ctx, ProducerMessage("orders", VALUE, b"user-1"))
    client_us = (time.thread_time() - start) / calls * 1e6
    start = time.thread_time()
    for msg in msgs:
        await server(ConsumerContext("svc", "orders", claim, None, None), msg)
    server_us = (time.thread_time() - start) / calls * 1e6
    return client_us, server_us


def preload(bootstrap: str, n: int) -> str:
    from confluent_kafka import Producer

    from trpc_kafka._tools.broker import create_topic

    topic = f"bench-observability-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        while True:
            try:
                producer.produce(topic, VALUE, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("pre-load: flush timed out")
    return topic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--filter-calls", type=int, default=20_000)
    parser.add_argument("--no-broker", action="store_true")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if "none" not in variants:
        variants.insert(0, "none")  # the baseline of every figure

    from trpc_kafka._tools.broker import broker_or_temporary, create_topic

    filters = make_filters()
    alone: dict[str, dict[str, list[float]]] = {
        side: {v: [] for v in variants} for side in ("client", "server")
    }
    for _ in range(args.rounds * 3):
        for v in variants:
            c, srv = asyncio.run(filter_cost(filters[v], args.filter_calls))
            alone["client"][v].append(c)
            alone["server"][v].append(srv)
    for v in variants:
        print(
            f"alone {v:10s} client {min(alone['client'][v]):6.2f} us/call (min), "
            f"{statistics.median(alone['client'][v]):6.2f} (median); "
            f"server {min(alone['server'][v]):6.2f} (min), "
            f"{statistics.median(alone['server'][v]):6.2f} (median)",
            flush=True,
        )
    producer_us: dict[str, list[float]] = {v: [] for v in variants}
    consumer_us: dict[str, list[float]] = {v: [] for v in variants}
    producer_cpu: dict[str, list[float]] = {v: [] for v in variants}
    consumer_cpu: dict[str, list[float]] = {v: [] for v in variants}
    with contextlib.ExitStack() as stack:
        if args.no_broker:
            bootstrap = ""
        else:
            bootstrap = stack.enter_context(broker_or_temporary(args.bootstrap))
            source = preload(bootstrap, args.messages)
            sink = f"bench-observability-out-{uuid.uuid4().hex[:8]}"
            create_topic(bootstrap, sink, partitions=PARTITIONS)
        for round_no in range(0 if args.no_broker else args.rounds):
            for v in variants:
                client, server = filters[v]
                p, p_cpu = asyncio.run(run_producer(bootstrap, sink, args.messages, client))
                c, c_cpu = asyncio.run(run_consumer(bootstrap, source, args.messages, server))
                producer_us[v].append(p * 1e6)
                consumer_us[v].append(c * 1e6)
                producer_cpu[v].append(p_cpu * 1e6)
                consumer_cpu[v].append(c_cpu * 1e6)
                print(
                    f"round {round_no + 1} {v:10s} producer {p * 1e6:6.2f} us/msg "
                    f"(CPU {p_cpu * 1e6:6.2f})  consumer {c * 1e6:6.2f} us/msg "
                    f"(CPU {c_cpu * 1e6:6.2f})",
                    flush=True,
                )

    def medians(runs: dict[str, list[float]]) -> dict[str, float]:
        return {v: round(statistics.median(r), 3) for v, r in runs.items() if r}

    def minima(runs: dict[str, list[float]]) -> dict[str, float]:
        return {v: round(min(r), 3) for v, r in runs.items() if r}

    producer = medians(producer_us)
    consumer = medians(consumer_us)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "messages": args.messages,
        "rounds": args.rounds,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "filter_calls": args.filter_calls,
        "load_average_at_end": os.getloadavg()[0],
        "alone_client_us_per_call": {
            "min": minima(alone["client"]),
            "median": medians(alone["client"]),
        },
        "alone_server_us_per_call": {
            "min": minima(alone["server"]),
            "median": medians(alone["server"]),
        },
        "producer_us_per_message": producer,
        "consumer_us_per_message": consumer,
        "producer_cpu_us_per_message": medians(producer_cpu),
        "consumer_cpu_us_per_message": medians(consumer_cpu),
        "runs": {
            "producer": producer_us,
            "consumer": consumer_us,
            "producer_cpu": producer_cpu,
            "consumer_cpu": consumer_cpu,
        },
    }
    for v in variants if producer else ():
        print(
            f"{v:10s} producer {producer[v]:6.2f} us/msg (+{producer[v] - producer['none']:.2f}), "
            f"consumer {consumer[v]:6.2f} us/msg (+{consumer[v] - consumer['none']:.2f})"
        )
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
