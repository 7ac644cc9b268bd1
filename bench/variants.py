"""One benchmark variant per process: ``bench/compare.py`` runs it once per variant and round.

    .venv/bin/python bench/variants.py VARIANT --bootstrap HOST:PORT --topic T [--messages N]
        [--max-seconds S] [--samples N] [--address-extra '&k=v']

Prints one JSON object on stdout: ``messages``, ``seconds``, ``rate`` (msg/s), ``capped`` (the
``--max-seconds`` cap stopped it before ``--messages``), ``peak_rss_mb`` (the process's VmHWM);
latency variants print ``p50_ms``, ``p99_ms`` and ``samples`` instead. A failed send or a lost
message exits non-zero with the cause on stderr: a fast wrong figure is worse than none.

Producer variants send ``--messages`` values of 100 bytes (no key, compression none) and count
from the first timed send until every message is acknowledged; consumer variants drain a
pre-loaded topic as a fresh consumer group from the oldest offset and count from the first
message received to the last one handled (group join excluded; ``total_s`` includes it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from consumer import CONSUME_BATCH, peak_rss_mb

VALUE = b"x" * 100
IN_FLIGHT = 1000
CHECK_EVERY = 1000  # sends between two looks at the clock (the --max-seconds cap)
JOIN_ALLOWANCE = 60.0  # seconds a consumer may take to join its group and get a first record

Result = dict[str, Any]


def _target(args: argparse.Namespace) -> str:
    """Our producer address; raw confluent-kafka gets exactly its librdkafka settings."""
    return f"kafka://{args.bootstrap}?topic={args.topic}&compression=none{args.address_extra}"


def _consumer_address(args: argparse.Namespace) -> str:
    return (
        f"{args.bootstrap}?topics={args.topic}&group={args.group}&initial=oldest"
        f"{args.address_extra}"
    )


def _rate(sent: int, seconds: float, capped: bool, cpu_s: float | None = None) -> Result:
    """``cpu_s``: CPU seconds of this process (every thread) over the timed part: per message
    it is the steadier figure on a shared machine (producer variants give it)."""
    result: Result = {
        "messages": sent,
        "seconds": seconds,
        "rate": sent / seconds,
        "capped": capped,
    }
    if cpu_s is not None and sent:
        result["cpu_us_per_msg"] = cpu_s / sent * 1e6
    return result


def consumer_deadline(begin: float, first: float, max_seconds: float) -> float:
    """A consumer's cap counts from its first record (a busy machine slows the group join);
    one with no record ``JOIN_ALLOWANCE`` seconds after its start gives up."""
    return first + max_seconds if first else begin + JOIN_ALLOWANCE


def _percentiles(samples: list[float]) -> Result:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "samples": len(ordered)}


# -- raw confluent-kafka ---------------------------------------------------------------------


def _raw_producer(args: argparse.Namespace) -> Any:
    from confluent_kafka import Producer

    from trpc_kafka._config.address import parse_address
    from trpc_kafka._config.rdkafka import producer_settings

    producer = Producer(producer_settings(parse_address(_target(args))))
    producer.produce(args.topic, VALUE)  # connect and fetch metadata before timing
    if producer.flush(30):
        raise RuntimeError("raw: the first message was not delivered in 30 s")
    return producer


def raw_produce(args: argparse.Namespace, with_callback: bool) -> Result:
    """``produce`` + ``poll(0)``; with_callback: one shared ``on_delivery`` for every message."""
    p = _raw_producer(args)
    failed: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            failed.append(err)

    produce = p.produce
    poll = p.poll
    topic = args.topic
    kwargs = {"on_delivery": on_delivery} if with_callback else {}
    deadline = time.perf_counter() + args.max_seconds
    sent = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while sent < args.messages:
        try:
            produce(topic, VALUE, **kwargs)
        except BufferError:
            poll(0.1)
            continue
        poll(0)
        sent += 1
        if sent % CHECK_EVERY == 0 and time.perf_counter() > deadline:
            break
    if p.flush(120):
        raise RuntimeError("raw: flush timed out after 120 s")
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if failed:
        raise RuntimeError(f"raw: {len(failed)} sends failed, first: {failed[0]}")
    return _rate(sent, seconds, sent < args.messages, cpu)


def raw_latency(args: argparse.Namespace) -> Result:
    p = _raw_producer(args)
    failed: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            failed.append(err)

    out: list[float] = []
    for _ in range(args.samples):
        start = time.perf_counter()
        p.produce(args.topic, VALUE, on_delivery=on_delivery)
        while len(p):  # poll, not flush: flush() ignores linger.ms, which no acked send does
            p.poll(0.1)
        out.append(time.perf_counter() - start)
    if failed:
        raise RuntimeError(f"raw latency: {failed[0]}")
    return _percentiles(out)


def raw_consume(args: argparse.Namespace) -> Result:
    """``consume(500)`` + ``store_offsets`` of each partition's last offset, auto-commit."""
    from confluent_kafka import Consumer, TopicPartition

    from trpc_kafka._config.address import parse_address
    from trpc_kafka._config.rdkafka import consumer_settings

    begin = time.perf_counter()
    consumer = Consumer(consumer_settings(parse_address(_consumer_address(args))))
    consumer.subscribe([args.topic])
    seen = 0
    first = 0.0
    topic = args.topic
    while seen < args.messages and time.perf_counter() < consumer_deadline(
        begin, first, args.max_seconds
    ):
        records = consumer.consume(CONSUME_BATCH, 0.1)
        if not records:
            continue
        if not first:
            first = time.perf_counter()
        last: dict[Any, Any] = {}
        for record in records:
            if record.error() is not None:
                continue
            last[record.partition()] = record.offset()
            seen += 1
        consumer.store_offsets(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()])
    end = time.perf_counter()
    consumer.close()
    if not first:
        raise RuntimeError(f"no message received in {JOIN_ALLOWANCE:g} s")
    return {**_rate(seen, end - first, seen < args.messages), "total_s": end - begin}


# -- ours ---------------------------------------------------------------------------------------


async def _ours_proxy(args: argparse.Namespace, failed: list[object]) -> Any:
    import trpc_kafka

    def on_error(err: object, *_: object) -> None:
        failed.append(err)

    proxy = trpc_kafka.new_client_proxy(
        f"bench.{uuid.uuid4().hex[:6]}", target=_target(args), error_callback=on_error
    )
    await proxy.send_message(args.topic, None, VALUE)  # create the producer, connect
    return proxy


async def _timed_async_sends(proxy: Any, args: argparse.Namespace, failed: list[object]) -> Result:
    """``await async_send_message`` in a loop, timed to the end of ``close()`` (which flushes,
    so every report is in)."""
    send = proxy.async_send_message
    topic = args.topic
    deadline = time.perf_counter() + args.max_seconds
    sent = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while sent < args.messages:
        await send(topic, None, VALUE)
        sent += 1
        if sent % CHECK_EVERY == 0 and time.perf_counter() > deadline:
            break
    await proxy.close()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if failed:
        raise RuntimeError(f"ours: {len(failed)} sends failed, first: {failed[0]}")
    return _rate(sent, seconds, sent < args.messages, cpu)


def ours_async_send(args: argparse.Namespace) -> Result:
    """``await async_send_message`` loop; ``close()`` flushes, so every report is in."""

    async def main() -> Result:
        failed: list[object] = []
        proxy = await _ours_proxy(args, failed)
        return await _timed_async_sends(proxy, args, failed)

    return asyncio.run(main())


def ours_async1_send(args: argparse.Namespace) -> Result:
    """``async_send_message`` loop on an ``async=1`` target with no success callback (the
    tRPC-Go plugin's AsyncProducer client): its producer reports failures only."""

    async def main() -> Result:
        import trpc_kafka

        failed: list[object] = []
        proxy = trpc_kafka.new_client_proxy(
            f"bench.{uuid.uuid4().hex[:6]}",
            target=_target(args) + "&async=1",
            error_callback=lambda err, *_: failed.append(err),
        )
        # Connect before timing: one message queued, then the queue drained.
        await proxy.async_send_message(args.topic, None, VALUE)
        entry = proxy._entry
        assert entry is not None and entry.errors_only
        if not await entry.wait_empty_async(30):
            raise RuntimeError("ours: the first message was not delivered in 30 s")
        return await _timed_async_sends(proxy, args, failed)

    return asyncio.run(main())


def ours_send_in_flight(args: argparse.Namespace) -> Result:
    """``await send_message`` (acked) from 1,000 tasks at once."""

    async def main() -> Result:
        proxy = await _ours_proxy(args, [])
        send = proxy.send_message
        topic = args.topic
        deadline = time.perf_counter() + args.max_seconds
        counter = itertools.count(1)
        stop = False

        async def worker() -> None:
            nonlocal stop
            while not stop:
                n = next(counter)
                if n > args.messages:
                    return
                await send(topic, None, VALUE)
                if n % CHECK_EVERY == 0 and time.perf_counter() > deadline:
                    stop = True

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        seconds = time.perf_counter() - start
        sent = min(next(counter) - 1, args.messages)
        await proxy.close()
        return _rate(sent, seconds, stop)

    return asyncio.run(main())


def ours_latency(args: argparse.Namespace) -> Result:
    async def main() -> Result:
        proxy = await _ours_proxy(args, [])
        out: list[float] = []
        for _ in range(args.samples):
            start = time.perf_counter()
            await proxy.send_message(args.topic, None, VALUE)
            out.append(time.perf_counter() - start)
        await proxy.close()
        return _percentiles(out)

    return asyncio.run(main())


def ours_service(args: argparse.Namespace, kind: str) -> Result:
    """Our consumer service with a no-op handler: ``async`` def, plain ``def``, or ``batch``."""
    import trpc_kafka
    from trpc_kafka._runtime.server import Server, Service

    address = _consumer_address(args)
    if kind == "batch":
        # batchFlush=20: the last partial batch of each partition is handed over after 20 ms,
        # not the default 2 s (full batches never wait).
        address += f"&batch={CONSUME_BATCH}&batchFlush=20"
    n = args.messages
    begin = time.perf_counter()
    first = end = 0.0
    # Plain def handlers run on threads: next() of an itertools.count is atomic under the GIL.
    counter = itertools.count(1)
    batch_seen = 0
    seen = 0

    async def main() -> None:
        nonlocal end, seen
        server = Server()
        server.add_service(Service("bench", address=address))
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def count_one() -> None:
            nonlocal first
            k = next(counter)
            if k == 1:
                first = time.perf_counter()
            if k == n:
                loop.call_soon_threadsafe(done.set)

        async def handle_async(ctx: object, msg: object) -> None:
            count_one()

        def handle_def(ctx: object, msg: object) -> None:
            count_one()

        async def handle_batch(ctx: object, msgs: list[Any]) -> None:
            nonlocal batch_seen, first
            if not batch_seen:
                first = time.perf_counter()
            batch_seen += len(msgs)
            if batch_seen >= n:
                done.set()

        if kind == "batch":
            trpc_kafka.register_batch_handler_service(server, handle_batch)
        else:
            handler: Callable[..., Any] = handle_def if kind == "def" else handle_async
            trpc_kafka.register_kafka_handler_service(server, handler)
        serving = asyncio.create_task(server.serve())
        done_waiter = asyncio.create_task(done.wait())
        while (
            remaining := consumer_deadline(begin, first, args.max_seconds) - time.perf_counter()
        ) > 0:
            finished, _ = await asyncio.wait(
                [serving, done_waiter],
                timeout=min(remaining, 0.5),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if finished:
                break
        end = time.perf_counter()
        seen = batch_seen if kind == "batch" else next(counter) - 1
        if serving.done():
            serving.result()  # the service failed: raise its error
            raise RuntimeError("the service stopped by itself")
        done_waiter.cancel()
        await server.close()
        await serving

    asyncio.run(main())
    if not first:
        raise RuntimeError(f"no message handled in {JOIN_ALLOWANCE:g} s")
    return {**_rate(min(seen, n), end - first, seen < n), "total_s": end - begin}


# -- aiokafka -----------------------------------------------------------------------------------


def aiokafka_send(args: argparse.Namespace) -> Result:
    """``await send`` loop (returns when queued), then ``flush``; acks=all like ours."""
    from aiokafka import AIOKafkaProducer

    async def main() -> Result:
        producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            await producer.send_and_wait(args.topic, VALUE)
            send = producer.send
            topic = args.topic
            deadline = time.perf_counter() + args.max_seconds
            pending: list[Any] = []
            sent = 0
            start = time.perf_counter()
            while sent < args.messages:
                pending.append(await send(topic, VALUE))
                sent += 1
                if sent % CHECK_EVERY == 0:
                    # Drop the settled futures: a million kept would inflate the peak RSS.
                    pending = _unsettled(pending)
                    if time.perf_counter() > deadline:
                        break
            await producer.flush()
            seconds = time.perf_counter() - start
            _unsettled(pending)
            return _rate(sent, seconds, sent < args.messages)
        finally:
            await producer.stop()

    return asyncio.run(main())


def _unsettled(futures: list[Any]) -> list[Any]:
    """The futures not done yet; raises for a failed send."""
    for f in futures:
        if f.done() and f.exception() is not None:
            raise RuntimeError(f"aiokafka: a send failed: {f.exception()}")
    return [f for f in futures if not f.done()]


def aiokafka_latency(args: argparse.Namespace) -> Result:
    from aiokafka import AIOKafkaProducer

    async def main() -> Result:
        producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            await producer.send_and_wait(args.topic, VALUE)
            out: list[float] = []
            for _ in range(args.samples):
                start = time.perf_counter()
                await producer.send_and_wait(args.topic, VALUE)
                out.append(time.perf_counter() - start)
            return _percentiles(out)
        finally:
            await producer.stop()

    return asyncio.run(main())


def aiokafka_getmany(args: argparse.Namespace) -> Result:
    """``getmany(max_records=500)`` loop with auto-commit every 3 s (no handler)."""
    from aiokafka import AIOKafkaConsumer

    async def main() -> Result:
        begin = time.perf_counter()
        consumer = AIOKafkaConsumer(
            args.topic,
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            auto_commit_interval_ms=3000,
        )
        await consumer.start()
        seen = 0
        first = 0.0
        try:
            while seen < args.messages and time.perf_counter() < consumer_deadline(
                begin, first, args.max_seconds
            ):
                batches = await consumer.getmany(timeout_ms=100, max_records=CONSUME_BATCH)
                for records in batches.values():
                    if records and not first:
                        first = time.perf_counter()
                    seen += len(records)
            end = time.perf_counter()
        finally:
            await consumer.stop()
        if not first:
            raise RuntimeError(f"no message received in {JOIN_ALLOWANCE:g} s")
        return {**_rate(seen, end - first, seen < args.messages), "total_s": end - begin}

    return asyncio.run(main())


# -- faststream (confluent backend) -------------------------------------------------------------


def _faststream_broker(args: argparse.Namespace) -> Any:
    from faststream.confluent import KafkaBroker

    # logger=None: faststream otherwise logs two INFO lines per message, which would make
    # this a benchmark of its logging.
    return KafkaBroker(args.bootstrap, acks="all", logger=None)


def faststream_publish(args: argparse.Namespace) -> Result:
    """``await broker.publish(value, topic)``: each call waits for its acknowledgement."""

    async def main() -> Result:
        broker = _faststream_broker(args)
        async with broker:
            await broker.start()
            publish = broker.publish
            topic = args.topic
            await publish(VALUE, topic)
            deadline = time.perf_counter() + args.max_seconds
            sent = 0
            start = time.perf_counter()
            while sent < args.messages:
                await publish(VALUE, topic)
                sent += 1
                # A lower rate: look at the clock more often than the other loops.
                if sent % 100 == 0 and time.perf_counter() > deadline:
                    break
            seconds = time.perf_counter() - start
        return _rate(sent, seconds, sent < args.messages)

    return asyncio.run(main())


def faststream_subscriber(args: argparse.Namespace) -> Result:
    """A ``@broker.subscriber`` with a no-op ``async def`` handler taking the body as bytes."""
    begin = time.perf_counter()
    first = end = 0.0
    seen = 0

    async def main() -> None:
        nonlocal end
        broker = _faststream_broker(args)
        done = asyncio.Event()
        n = args.messages

        @broker.subscriber(  # type: ignore[untyped-decorator,unused-ignore]
            args.topic, group_id=args.group, auto_offset_reset="earliest"
        )
        async def handle(body: bytes) -> None:
            nonlocal seen, first
            if not seen:
                first = time.perf_counter()
            seen += 1
            if seen >= n:
                done.set()

        async with broker:
            await broker.start()
            done_waiter = asyncio.create_task(done.wait())
            while (
                remaining := consumer_deadline(begin, first, args.max_seconds) - time.perf_counter()
            ) > 0:
                finished, _ = await asyncio.wait([done_waiter], timeout=min(remaining, 0.5))
                if finished:
                    break
            end = time.perf_counter()
            done_waiter.cancel()

    asyncio.run(main())
    if not first:
        raise RuntimeError(f"no message handled in {JOIN_ALLOWANCE:g} s")
    n = args.messages
    return {**_rate(min(seen, n), end - first, seen < n), "total_s": end - begin}


# -- the table of variants ----------------------------------------------------------------------

PRODUCERS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "raw_produce_poll": lambda a: raw_produce(a, False),
    "raw_produce_callback": lambda a: raw_produce(a, True),
    "ours_async_send_message": ours_async_send,
    "ours_async1_send": ours_async1_send,
    "ours_send_message_1000_in_flight": ours_send_in_flight,
    "aiokafka_send": aiokafka_send,
    "faststream_publish": faststream_publish,
}
LATENCY: dict[str, Callable[[argparse.Namespace], Result]] = {
    "raw_latency": raw_latency,
    "ours_latency": ours_latency,
    "aiokafka_latency": aiokafka_latency,
}
CONSUMERS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "raw_consume": raw_consume,
    "ours_service_async": lambda a: ours_service(a, "async"),
    "ours_service_def": lambda a: ours_service(a, "def"),
    "ours_service_batch": lambda a: ours_service(a, "batch"),
    "aiokafka_getmany": aiokafka_getmany,
    "faststream_subscriber": faststream_subscriber,
}
VARIANTS = {**PRODUCERS, **LATENCY, **CONSUMERS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--samples", type=int, default=300, help="latency variants")
    parser.add_argument("--group", help="consumer variants (default: a fresh one)")
    parser.add_argument("--address-extra", default="", help="appended to our and raw's address")
    args = parser.parse_args(argv)
    if not args.group:
        args.group = f"bench-{args.variant}-{uuid.uuid4().hex[:8]}"
    result = VARIANTS[args.variant](args)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
