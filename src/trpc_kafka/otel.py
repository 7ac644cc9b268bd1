"""OpenTelemetry tracing of producer calls and consumer handlings: ``pip install trpc-kafka[otel]``.

Two tRPC filters, registered under the name ``otel`` when this module is imported (which a
``filter: [otel]`` list in a config file does by itself):

- the **client** filter makes a ``PRODUCER`` span ``send <topic>`` around every producer call
  and writes the span's W3C trace context into the record's headers (``traceparent``,
  ``tracestate``; whatever the global propagator writes, ``baggage`` included), replacing
  headers of those names the caller set;
- the **server** filter makes a ``CONSUMER`` span ``process <topic>`` around every handling,
  the child of the context found in the record's headers and linked to it, so a Go, Java or
  Python producer's trace goes on in the consumer; a batch handling is linked to the context
  of each of its records instead.

Attributes follow the OpenTelemetry messaging semantic conventions (``messaging.system``,
``messaging.operation.type`` / ``.name``, ``messaging.destination.name``,
``messaging.destination.partition.id``, ``messaging.kafka.offset``,
``messaging.consumer.group.name``, ``messaging.kafka.message.key``, ...), as the
confluent-kafka instrumentation and faststream's middleware do. A failure is recorded on the
span with its tRPC code (``error.type`` and ``trpc.error.code``); a handler's
``ContinueWithoutCommit`` is not a failure (``trpc_kafka.skipped`` is set).

An asynchronous send's span ends when the message is queued: its delivery outcome goes to the
callbacks, as with the confluent-kafka instrumentation. Spans go to the global tracer provider
unless a :class:`KafkaTracing` is given one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry import propagate, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from trpc_kafka import __version__
from trpc_kafka._consumer.message import ConsumerMessage, ContinueWithoutCommit, Header
from trpc_kafka._consumer.raw import Claim
from trpc_kafka._observe import claim_of
from trpc_kafka._producer.message import ProducerMessage
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.errors import TrpcError, error_code
from trpc_kafka._runtime.filters import Handler, register_filter

__all__ = ["KafkaTracing", "client_filter", "server_filter"]

# Attribute names of the messaging semantic conventions (kept here: only opentelemetry-api is
# a dependency, not the semantic-conventions package).
SYSTEM: Final = "messaging.system"
OPERATION_TYPE: Final = "messaging.operation.type"
OPERATION_NAME: Final = "messaging.operation.name"
DESTINATION: Final = "messaging.destination.name"
PARTITION: Final = "messaging.destination.partition.id"
OFFSET: Final = "messaging.kafka.offset"
KEY: Final = "messaging.kafka.message.key"
TOMBSTONE: Final = "messaging.kafka.message.tombstone"
GROUP: Final = "messaging.consumer.group.name"
BATCH_COUNT: Final = "messaging.batch.message_count"
ERROR_TYPE: Final = "error.type"
TRPC_CODE: Final = "trpc.error.code"
TRPC_SERVICE: Final = "trpc.service"
TRPC_METHOD: Final = "trpc.method"
SKIPPED: Final = "trpc_kafka.skipped"

_MAX_CLAIMS: Final = 4096
"""Claims whose group is remembered at most (one per partition and assignment)."""

_MAX_LINKS: Final = 128
"""Links of one batch span at most (the SDK's default span link limit)."""


class _HeaderGetter(Getter[Sequence[Header]]):
    """Reads a propagator's fields from record headers (``(name, bytes)`` pairs)."""

    def get(self, carrier: Sequence[Header], key: str) -> list[str] | None:
        found = [
            # str values: a message built by hand (a handler's own unit test)
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for k, v in carrier
            if v is not None and isinstance(k, str) and k.lower() == key
        ]
        return found or None

    def keys(self, carrier: Sequence[Header]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER: Final = _HeaderGetter()


class KafkaTracing:
    """A pair of filters, :attr:`client_filter` and :attr:`server_filter`, making spans with
    ``tracer_provider`` (default: the global one) and propagating context with ``propagator``
    (default: the global one, W3C trace context and baggage unless configured otherwise).

    For a tracer provider of its own, register the pair under a name of its own::

        tracing = KafkaTracing(tracer_provider=provider)
        trpc_kafka.register_filter(
            "tracing", server=tracing.server_filter, client=tracing.client_filter)
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("trpc_kafka", __version__, tracer_provider=tracer_provider)
        self._propagator = propagator
        # The group of each partition claim (a claim belongs to one service's assignment).
        self._groups: dict[Claim, str] = {}

    def _inject(self, carrier: dict[str, str]) -> None:
        if self._propagator is None:
            propagate.inject(carrier)
        else:
            self._propagator.inject(carrier)

    def _extract(self, headers: Sequence[Header]) -> tuple[OtelContext, SpanContext]:
        """The context written into ``headers`` by a producer and its span, invalid if none."""
        if self._propagator is None:
            found = propagate.extract(headers, OtelContext(), _GETTER)
        else:
            found = self._propagator.extract(headers, OtelContext(), _GETTER)
        return found, trace.get_current_span(found).get_span_context()

    async def client_filter(self, ctx: Context, req: Any, next: Handler) -> Any:
        """The producer side: a PRODUCER span, trace context written into the headers."""
        if not isinstance(req, ProducerMessage):
            return await next(ctx, req)
        topic = req.topic if isinstance(req.topic, str) else ""
        attributes: dict[str, Any] = {
            SYSTEM: "kafka",
            OPERATION_TYPE: "send",
            OPERATION_NAME: "send",
            DESTINATION: topic,
            TRPC_SERVICE: ctx.callee_service,
            TRPC_METHOD: ctx.callee_method,
        }
        _message_attributes(attributes, req.key, req.value)
        if isinstance(req.partition, int):
            attributes[PARTITION] = str(req.partition)
        with self._tracer.start_as_current_span(
            f"send {topic}" if topic else "send",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            self._inject(carrier)
            if carrier:
                headers = _with_headers(req.headers, carrier)
                if headers is not None:
                    # A copy: the caller's message (send_raw_message) is left as it was.
                    req = dataclasses.replace(req, headers=headers)
            try:
                rsp = await next(ctx, req)
            except BaseException as exc:
                record_error(span, exc)
                raise
            if isinstance(rsp, tuple) and len(rsp) == 2 and rsp[0] >= 0:
                span.set_attribute(PARTITION, str(rsp[0]))
                if rsp[1] >= 0:
                    span.set_attribute(OFFSET, rsp[1])
            return rsp

    async def server_filter(self, ctx: Context, req: Any, next: Handler) -> Any:
        """The consumer side: a CONSUMER span, child of and linked to the record's context."""
        if isinstance(req, ConsumerMessage):
            msgs: list[ConsumerMessage] = [req]
        elif isinstance(req, list) and req and isinstance(req[0], ConsumerMessage):
            msgs = req
        else:
            return await next(ctx, req)
        first = msgs[0]
        attributes: dict[str, Any] = {
            SYSTEM: "kafka",
            OPERATION_TYPE: "process",
            OPERATION_NAME: "process",
            DESTINATION: first.topic,
            PARTITION: str(first.partition),
            TRPC_SERVICE: ctx.callee_service,
        }
        claim = claim_of(ctx)
        if claim is not None:
            group = self._groups.get(claim)
            if group is None:
                if len(self._groups) >= _MAX_CLAIMS:
                    self._groups.clear()
                group = self._groups[claim] = claim.view().session.group
            attributes[GROUP] = group
        links: list[Link] = []
        parent: OtelContext | None = None  # no context in the record: the current one
        if req is first:
            found, remote = self._extract(first.headers)
            if remote.is_valid:
                parent = found
                links.append(Link(remote))
            attributes[OFFSET] = first.offset
            _message_attributes(attributes, first.key, first.value)
        else:
            # A batch has many parents: it is linked to each instead.
            seen = set()
            for msg in msgs:
                _, remote = self._extract(msg.headers)
                if remote.is_valid and remote.span_id not in seen and len(links) < _MAX_LINKS:
                    seen.add(remote.span_id)
                    links.append(Link(remote))
            attributes[BATCH_COUNT] = len(msgs)
        with self._tracer.start_as_current_span(
            f"process {first.topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await next(ctx, req)
            except ContinueWithoutCommit:
                span.set_attribute(SKIPPED, True)
                raise
            except BaseException as exc:
                record_error(span, exc)
                raise


def record_error(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: the exception event, ERROR status, the tRPC code."""
    code = error_code(exc)
    span.set_attribute(ERROR_TYPE, str(code) if isinstance(exc, TrpcError) else _type_name(exc))
    span.set_attribute(TRPC_CODE, code)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"


def _message_attributes(attributes: dict[str, Any], key: object, value: object) -> None:
    if isinstance(key, bytes):
        # A key that is not text has no canonical text form: left out, as the conventions say.
        with contextlib.suppress(UnicodeDecodeError):
            attributes[KEY] = key.decode()
    elif isinstance(key, str):
        attributes[KEY] = key
    if value is None:
        attributes[TOMBSTONE] = True


def _with_headers(headers: object, fields: dict[str, str]) -> list[tuple[str, Any]] | None:
    """``headers`` as a list with ``fields`` in place of headers of the same names; None when
    ``headers`` is not of a type the producer takes (it reports that itself)."""
    if headers is None:
        items: list[tuple[str, Any]] = []
    elif isinstance(headers, Mapping):
        items = list(headers.items())
    elif isinstance(headers, (list, tuple)):
        items = list(headers)
    else:
        return None
    names = {k.lower() for k in fields}
    kept = [h for h in items if not (isinstance(h, tuple) and len(h) == 2 and _is(h[0], names))]
    kept.extend(fields.items())
    return kept


def _is(name: object, names: set[str]) -> bool:
    return isinstance(name, str) and name.lower() in names


_default = KafkaTracing()
client_filter = _default.client_filter
"""The client filter of the ``otel`` name (global tracer provider and propagator)."""
server_filter = _default.server_filter
"""The server filter of the ``otel`` name (global tracer provider and propagator)."""

register_filter("otel", server=server_filter, client=client_filter)
