"""OpenTelemetry filters against the real broker: one trace from producer to consumer service."""

from __future__ import annotations

import asyncio
import os
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.consumer._util import (
    address,
    new_group,
    one_service,
    produce,
    serving,
    wait_until,
)
from trpc_kafka import (
    ConsumerMessage,
    Context,
    ContinueWithoutCommit,
    ProducerMessage,
    TrpcError,
    new_client_proxy,
    new_server,
    register_batch_handler_service,
    register_kafka_handler_service,
)
from trpc_kafka._config.file import set_global_config
from trpc_kafka._runtime.errors import business_error
from trpc_kafka._runtime.server import Server, Service
from trpc_kafka.otel import KafkaTracing

NewTopic = Callable[..., str]

# The global provider can be set once per process: every test shares this exporter and picks
# its own spans by topic.
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def global_provider() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def no_global_config() -> Iterator[None]:
    yield
    set_global_config(None)


def spans_of(topic: str, name: str | None = None) -> list[ReadableSpan]:
    return [
        s
        for s in _EXPORTER.get_finished_spans()
        if s.attributes is not None
        and s.attributes.get("messaging.destination.name") == topic
        and (name is None or s.name == name)
    ]


def header(msg: ConsumerMessage, name: str) -> bytes | None:
    return next((v for k, v in msg.headers if k == name), None)


async def test_one_trace_from_producer_through_the_broker_to_two_services(
    kafka_bootstrap: str, new_topic: NewTopic, no_global_config: None
) -> None:
    """send(orders) -> process(orders), which sends to audit -> process(audit): one trace,
    each span the child of the one before, all of it configured by filter names in YAML."""
    orders, audit = new_topic(partitions=2), new_topic()
    group = new_group()
    text = f"""
        server:
          service:
            - name: orders
              protocol: kafka
              address: {address(kafka_bootstrap, orders, group)}
              filter: [otel]
            - name: audit
              protocol: kafka
              address: {address(kafka_bootstrap, audit)}
              filter: [otel]
        client:
          service:
            - name: orders.producer
              target: kafka://{kafka_bootstrap}?topic={orders}&partitioner=hash
              filter: [otel]
            - name: audit.producer
              target: kafka://{kafka_bootstrap}?topic={audit}
              filter: [otel]
    """
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(textwrap.dedent(text))
    try:
        server = new_server(f.name)
    finally:
        os.unlink(f.name)
    got: dict[str, ConsumerMessage] = {}
    forward = new_client_proxy("audit.producer", timeout=10)

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        got[msg.topic] = msg
        if msg.topic == orders:
            await forward.produce(msg.key, b"audited")

    register_kafka_handler_service(server, handle)
    proxy = new_client_proxy("orders.producer", timeout=10)
    async with serving(server):
        partition, offset = await proxy.send_message(orders, "user-7", b"paid")
        await wait_until(lambda: audit in got, what="the audit service got the message")
        await wait_until(lambda: len(spans_of(audit, f"process {audit}")) == 1, what="spans")
    await proxy.close()
    await forward.close()

    (send,) = spans_of(orders, f"send {orders}")
    (process,) = spans_of(orders, f"process {orders}")
    (send_audit,) = spans_of(audit, f"send {audit}")
    (process_audit,) = spans_of(audit, f"process {audit}")
    trace_id = send.context.trace_id
    assert send.parent is None
    assert [s.context.trace_id for s in (process, send_audit, process_audit)] == [trace_id] * 3
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert send_audit.parent is not None and send_audit.parent.span_id == process.context.span_id
    assert process_audit.parent is not None
    assert process_audit.parent.span_id == send_audit.context.span_id

    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert dict(send.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": orders,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.kafka.message.key": "user-7",
        "trpc.service": "orders.producer",
        "trpc.method": "send",
    }
    assert dict(process.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": orders,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.consumer.group.name": group,
        "messaging.kafka.message.key": "user-7",
        "trpc.service": "orders",
    }
    # The W3C header on the wire is the producer span's context.
    traceparent = header(got[orders], "traceparent") or b""
    assert traceparent[:-3] == f"00-{trace_id:032x}-{send.context.span_id:016x}".encode()
    assert int(traceparent[-2:], 16) & 1 == 1  # sampled
    assert all(s.status.status_code is StatusCode.UNSET for s in (send, process))


async def test_a_foreign_producers_traceparent_parents_and_links_the_consumer_span(
    kafka_bootstrap: str, topic: str
) -> None:
    """A record written by another client (a Go or Java service) with W3C headers."""
    trace_id, span_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    produce(
        kafka_bootstrap,
        topic,
        [b"v"],
        headers=[
            ("traceparent", f"00-{trace_id:032x}-{span_id:016x}-01".encode()),
            ("tracestate", b"congo=t61rcWkgMzE"),
        ],
    )
    server = one_service(address(kafka_bootstrap, topic))
    server.service("consumer").add_filter(KafkaTracing().server_filter)
    handled: list[int] = []
    inside: list[trace.SpanContext] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        inside.append(trace.get_current_span().get_span_context())
        handled.append(msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: bool(handled))
    (span,) = spans_of(topic)
    assert span.context.trace_id == trace_id
    assert span.parent is not None and span.parent.span_id == span_id and span.parent.is_remote
    (link,) = span.links
    assert (link.context.trace_id, link.context.span_id) == (trace_id, span_id)
    assert link.context.trace_state.get("congo") == "t61rcWkgMzE"
    # The handler runs inside the span: what it does is part of the trace.
    assert inside[0].span_id == span.context.span_id


async def test_failures_are_recorded_with_their_trpc_code(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"fail", b"skip"])
    server = one_service(address(kafka_bootstrap, topic, extra="maxRetry=1&retryInterval=10"))
    server.service("consumer").add_filter(KafkaTracing().server_filter)
    calls: list[bytes | None] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append(msg.value)
        if msg.value == b"fail":
            raise business_error(1234, "no such order")
        if msg.value == b"skip":
            raise ContinueWithoutCommit
        raise AssertionError("unexpected message")

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: b"skip" in calls)
        await wait_until(lambda: len(spans_of(topic)) == 3, what="3 spans")
    fail1, fail2, skip = sorted(spans_of(topic), key=lambda s: s.start_time or 0)
    for span in (fail1, fail2):  # the first attempt and its retry (maxRetry=1)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "1234"
        assert span.attributes["trpc.error.code"] == 1234
        assert span.attributes["messaging.kafka.offset"] == 0
        (event,) = span.events
        assert event.name == "exception" and event.attributes is not None
        assert "no such order" in str(event.attributes["exception.message"])
    assert skip.status.status_code is StatusCode.UNSET
    assert skip.attributes is not None and skip.attributes["trpc_kafka.skipped"] is True

    # The producer side: a call refused (a key of a bad type, 121) and a plain exception.
    tracing = KafkaTracing()
    proxy_filtered = new_client_proxy(
        "p", target=f"kafka://{kafka_bootstrap}?topic={topic}", filters=[tracing.client_filter]
    )
    with pytest.raises(TrpcError) as info:
        await proxy_filtered.send_message(topic, 12, b"v")  # type: ignore[arg-type]
    assert info.value.code == 121
    (refused,) = [s for s in spans_of(topic) if s.kind is SpanKind.PRODUCER]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes is not None and refused.attributes["error.type"] == "121"
    assert refused.attributes["trpc.error.code"] == 121
    assert "messaging.kafka.message.key" not in refused.attributes
    await proxy_filtered.close()


async def test_a_batch_span_links_every_records_context(kafka_bootstrap: str, topic: str) -> None:
    tracing = KafkaTracing()
    proxy = new_client_proxy(
        "p",
        target=f"kafka://{kafka_bootstrap}?topic={topic}",
        filters=[tracing.client_filter],
        timeout=10,
    )
    for i in range(3):
        await proxy.send_message(topic, None, f"{i}".encode())  # null keys: no key attribute
    await proxy.close()
    srv = Server()
    srv.add_service(
        Service(
            "batch",
            address=address(kafka_bootstrap, topic, extra="batch=3&batchFlush=5000"),
            filters=[tracing.server_filter],
        )
    )
    batches: list[int] = []

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        batches.append(len(msgs))

    register_batch_handler_service(srv, handle)
    async with serving(srv):
        await wait_until(lambda: sum(batches) == 3)
    sends = [s for s in spans_of(topic) if s.kind is SpanKind.PRODUCER]
    (batch,) = [s for s in spans_of(topic) if s.kind is SpanKind.CONSUMER]
    assert batches == [3]
    assert batch.attributes is not None and batch.attributes["messaging.batch.message_count"] == 3
    assert "messaging.kafka.offset" not in batch.attributes
    assert {link.context.span_id for link in batch.links} == {s.context.span_id for s in sends}
    assert all(s.attributes and "messaging.kafka.message.key" not in s.attributes for s in sends)


async def test_blocking_sends_and_headers_of_the_caller_are_kept(
    kafka_bootstrap: str, topic: str
) -> None:
    tracing = KafkaTracing()
    proxy = new_client_proxy(
        "p",
        target=f"kafka://{kafka_bootstrap}?topic={topic}",
        filters=[tracing.client_filter],
        timeout=10,
    )
    stale = b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"
    raw = ProducerMessage(topic, b"v", b"k", headers={"a": b"1", "traceparent": stale})
    await asyncio.to_thread(proxy.send_raw_message_sync, raw)
    proxy.close_sync()
    assert raw.headers == {"a": b"1", "traceparent": stale}  # the caller's message is untouched
    (span,) = spans_of(topic)
    seen: list[ConsumerMessage] = []
    server = one_service(address(kafka_bootstrap, topic))

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        seen.append(msg)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: bool(seen))
    names = [k for k, _ in seen[0].headers]
    assert names == ["a", "traceparent"]  # the stale traceparent replaced, not repeated
    assert (header(seen[0], "traceparent") or b"")[:-3] == (
        f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}".encode()
    )


async def test_plain_def_handlers_and_blocking_sends_continue_the_trace(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """A plain ``def`` handler runs on a thread and sends with a blocking twin: its send span
    is still the child of the handling span."""
    orders, audit = new_topic(), new_topic()
    tracing = KafkaTracing()
    forward = new_client_proxy(
        "fwd", target=f"kafka://{kafka_bootstrap}?topic={audit}", filters=[tracing.client_filter]
    )
    produce(kafka_bootstrap, orders, [b"v"])
    server = one_service(address(kafka_bootstrap, orders))
    server.service("consumer").add_filter(tracing.server_filter)
    sent: list[tuple[int, int]] = []

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        sent.append(forward.send_message_sync(audit, msg.key, b"audited"))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: bool(sent))
    forward.close_sync()
    (process,) = spans_of(orders)
    (send,) = spans_of(audit)
    assert send.context.trace_id == process.context.trace_id
    assert send.parent is not None and send.parent.span_id == process.context.span_id

    # A blocking send from a thread with a span of its own: the send span is its child.
    tracer = trace.get_tracer("test")

    def send_in_span() -> int:
        with tracer.start_as_current_span("job") as job:
            again = new_client_proxy(
                "fwd2",
                target=f"kafka://{kafka_bootstrap}?topic={audit}",
                filters=[tracing.client_filter],
            )
            again.send_message_sync(audit, None, b"x")
            again.close_sync()
            return job.get_span_context().span_id

    job_id = await asyncio.to_thread(send_in_span)
    second = [s for s in spans_of(audit) if s.context.span_id != send.context.span_id]
    assert len(second) == 1 and second[0].parent is not None
    assert second[0].parent.span_id == job_id


async def test_a_tracer_provider_and_propagator_of_its_own() -> None:
    """KafkaTracing(tracer_provider=..., propagator=...): spans to that provider only, headers
    written and read by that propagator (here B3-like single header of a toy propagator)."""
    from opentelemetry.propagators.textmap import (
        CarrierT,
        Getter,
        Setter,
        TextMapPropagator,
        default_getter,
        default_setter,
    )
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    class ToyPropagator(TextMapPropagator):
        """Writes ``x-trace: <trace id hex>-<span id hex>``."""

        def inject(
            self,
            carrier: CarrierT,
            context: Any = None,
            setter: Setter[CarrierT] = default_setter,
        ) -> None:
            sc = trace.get_current_span(context).get_span_context()
            setter.set(carrier, "x-trace", f"{sc.trace_id:032x}-{sc.span_id:016x}")

        def extract(
            self,
            carrier: CarrierT,
            context: Any = None,
            getter: Getter[CarrierT] = default_getter,
        ) -> Any:
            found = getter.get(carrier, "x-trace")
            if not found:
                return context
            trace_id, span_id = found[0].split("-")
            remote = SpanContext(
                int(trace_id, 16), int(span_id, 16), True, TraceFlags(TraceFlags.SAMPLED)
            )
            return set_span_in_context(NonRecordingSpan(remote), context)

        @property
        def fields(self) -> set[str]:
            return {"x-trace"}

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = KafkaTracing(tracer_provider=provider, propagator=ToyPropagator())
    sent: list[ProducerMessage] = []

    async def producer_core(ctx: Context, req: Any) -> tuple[int, int]:
        sent.append(req)
        return (2, 40)

    ctx = Context(callee_service="p", rpc_name="/p/send", callee_method="send")
    rsp = await tracing.client_filter(ctx, ProducerMessage("own-topic", b"v", b"k"), producer_core)
    assert rsp == (2, 40)
    (send,) = exporter.get_finished_spans()
    assert sent[0].headers == [
        ("x-trace", f"{send.context.trace_id:032x}-{send.context.span_id:016x}")
    ]
    assert (
        send.attributes is not None and send.attributes["messaging.destination.partition.id"] == "2"
    )
    assert send.attributes["messaging.kafka.offset"] == 40
    assert not spans_of("own-topic")  # nothing went to the global provider

    wire = [(k, v.encode()) for k, v in sent[0].headers]
    msg = ConsumerMessage("own-topic", 2, 40, key=b"k", value=b"v", headers=wire)

    async def handler(ctx: Context, req: Any) -> None:
        return None

    await tracing.server_filter(Context(callee_service="c"), msg, handler)
    process = exporter.get_finished_spans()[1]
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert (
        process.attributes is not None and "messaging.consumer.group.name" not in process.attributes
    )
