"""Prometheus metrics of producers and consumer services: ``pip install trpc-kafka[prometheus]``.

Two tRPC filters, registered under the name ``prometheus`` when this module is imported (which a
``filter: [prometheus]`` list in a config file does by itself), count into prometheus_client's
default registry, so an application that already serves ``/metrics`` serves these too; one that
does not calls :func:`start_http_server` once::

    from trpc_kafka import prometheus
    prometheus.start_http_server(9464)          # GET http://host:9464/metrics

Metrics (``service`` is the proxy's or the consumer service's name; ``code`` the tRPC code, 0
for success):

- ``trpc_kafka_sent_messages_total{service,topic,method,outcome,code}``: producer calls by
  outcome ``ok`` / ``error``; ``method`` is ``send``, ``asyncSend``, ``produce`` or ``sendRaw``
  (an asynchronous send is ``ok`` once queued; if it is then not delivered,
  ``trpc_kafka_async_delivery_failures_total{service,topic,code}`` counts it, for every proxy of
  the process);
- ``trpc_kafka_send_duration_seconds{service,topic,method}``: histogram of producer calls;
- ``trpc_kafka_handled_messages_total{service,topic,outcome,code}``: handled messages by outcome
  ``ok``, ``error`` (each failed attempt), ``skipped`` (``ContinueWithoutCommit``) or
  ``cancelled`` (a handling cut short by shutdown or revocation, delivered again later);
- ``trpc_kafka_handle_duration_seconds{service,topic}``: histogram of handler calls (one per
  message, or per batch for batch handlers);
- ``trpc_kafka_handler_retries_total{service,topic}``: failed handlings tried again;
- ``trpc_kafka_dead_letters_total{service,topic,dead_letter_topic}``: messages sent to the dead
  letter topic once their retries were exhausted, and
  ``trpc_kafka_dropped_messages_total{service,topic}``: the same without a dead letter topic
  (marked consumed and lost: worth an alert);
- ``trpc_kafka_consumer_lag{service,group,topic,partition}``: messages written to a partition
  after the last one the service handled (from the high watermark librdkafka last fetched,
  computed at scrape time, so a stuck handler shows a growing lag); partitions the service no
  longer holds disappear;
- with librdkafka statistics on (:func:`enable_rdkafka_stats`, or
  ``rdkafka.statistics.interval.ms=N`` on an address), per client (``client`` is librdkafka's
  instance name, ``<client.id>#producer-1``): ``trpc_kafka_rdkafka_queue_messages`` /
  ``_queue_bytes`` (messages waiting in the producer's queue), ``_replyq`` (events waiting for a
  poll), per broker ``_broker_rtt_seconds{stat=avg|p50|p99}`` (of the requests of the last
  interval; a consumer's fetches wait up to ``maxWaitTime`` at the broker),
  ``_broker_outbuf_requests``, ``_broker_waitresp_requests``, ``_broker_up``,
  ``_broker_tx_errors_total``, ``_broker_request_timeouts_total``, per partition
  ``_consumer_lag`` and ``_fetch_queue_messages``, and ``_rebalances_total``. A client that
  stopped reporting (closed) disappears after three of its intervals.

:class:`KafkaMetrics` makes the same set in a registry of one's own.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from bisect import bisect_left as _bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from trpc_kafka._consumer.message import ConsumerMessage, ContinueWithoutCommit
from trpc_kafka._consumer.raw import Claim
from trpc_kafka._observe import claim_of
from trpc_kafka._producer.message import ProducerMessage
from trpc_kafka._rdkafka_stats import add_stats_listener, remove_stats_listener
from trpc_kafka._rdkafka_stats import set_default_interval as _set_stats_interval
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.errors import error_code
from trpc_kafka._runtime.filters import (
    Handler,
    add_consumer_observer,
    add_producer_observer,
    register_filter,
    remove_consumer_observer,
    remove_producer_observer,
)

__all__ = [
    "KafkaMetrics",
    "client_filter",
    "default_metrics",
    "enable_rdkafka_stats",
    "server_filter",
    "start_http_server",
]

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
"""Seconds: an acked send on a healthy cluster takes ~0.3 ms, a handler up to its timeout."""

_monotonic = time.monotonic  # module-level: the staleness test replaces it
_perf_counter = time.perf_counter
_get_ident = threading.get_ident

_OK: Final = "ok"
_ERROR: Final = "error"
_SKIPPED: Final = "skipped"
_CANCELLED: Final = "cancelled"
_STALE_INTERVALS: Final = 3
"""A client's statistics are dropped when this many of its intervals passed without a new one."""
_STALE_FIRST: Final = 60.0
"""Seconds a client's only statistics document stays (no interval known yet)."""


class KafkaMetrics:
    """The metrics of this module in ``registry``, and the filters that fill them.

    ``rdkafka_stats`` False leaves librdkafka's statistics out. :meth:`close` unregisters
    everything (tests, or a registry of one's own that goes away).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        rdkafka_stats: bool = True,
    ) -> None:
        self.registry = registry
        self._bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        self.retries = Counter(
            "trpc_kafka_handler_retries",
            "Failed handlings tried again",
            ["service", "topic"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "trpc_kafka_dead_letters",
            "Messages sent to the dead letter topic after their retries were exhausted",
            ["service", "topic", "dead_letter_topic"],
            registry=registry,
        )
        self.delivery_failures = Counter(
            "trpc_kafka_async_delivery_failures",
            "Asynchronous sends queued but not delivered, by proxy, topic and tRPC code",
            ["service", "topic", "code"],
            registry=registry,
        )
        self.dropped = Counter(
            "trpc_kafka_dropped_messages",
            "Messages given up after their retries were exhausted, with no dead letter topic",
            ["service", "topic"],
            registry=registry,
        )
        # Sends and handlings are counted in plain objects, one per thread and label set, so
        # the hot path takes no lock (prometheus_client's Counter and Histogram take one per
        # value: ~3x the cost); they are summed at scrape time.
        # (thread, service, topic, method) -> timing and ok count of sends
        self._sends: dict[tuple[int, str, str, str], _Timing] = {}
        # (thread, service, topic, method, outcome, code) -> count of failed sends
        self._send_failures: dict[tuple[int, str, str, str, str, str], _Count] = {}
        # (thread, service, topic) -> timing and ok count of handlings
        self._handlings: dict[tuple[int, str, str], _Timing] = {}
        # (thread, service, topic, outcome, code) -> count of failed or skipped messages
        self._handling_outcomes: dict[tuple[int, str, str, str, str], _Count] = {}
        # The last offset each partition claim (one per partition and assignment) handled.
        self._positions: dict[Claim, int] = {}
        self._claim_services: dict[Claim, str] = {}
        self._stats_lock = threading.Lock()
        self._stats: dict[str, tuple[float, float, dict[str, Any]]] = {}
        self._collector = _Collector(self)
        if registry is not None:
            registry.register(self._collector)
        add_consumer_observer(self)
        add_producer_observer(self)
        self._rdkafka_stats = rdkafka_stats
        if rdkafka_stats:
            add_stats_listener(self._on_stats)

    def close(self) -> None:
        """Unregister the metrics from the registry and stop listening."""
        remove_consumer_observer(self)
        remove_producer_observer(self)
        if self._rdkafka_stats:
            remove_stats_listener(self._on_stats)
        registry = self.registry
        if registry is not None:
            for collector in (
                self.delivery_failures,
                self.retries,
                self.dead_letters,
                self.dropped,
                self._collector,
            ):
                registry.unregister(collector)
            self.registry = None

    # -- the filters -------------------------------------------------------------------------

    async def client_filter(self, ctx: Context, req: Any, next: Handler) -> Any:
        """Counts and times every producer call."""
        start = _perf_counter()
        try:
            rsp = await next(ctx, req)
        except BaseException as exc:
            self._sent(ctx, req, start, _ERROR, error_code(exc))
            raise
        self._sent(ctx, req, start, _OK, 0)
        return rsp

    def _sent(self, ctx: Context, req: Any, start: float, outcome: str, code: int) -> None:
        elapsed = _perf_counter() - start
        topic = req.topic if isinstance(req, ProducerMessage) and isinstance(req.topic, str) else ""
        key = (_get_ident(), ctx.callee_service, topic, ctx.callee_method)
        timing = self._sends.get(key)
        if timing is None:
            timing = self._sends[key] = _Timing(len(self._bounds))
        timing.buckets[_bisect_left(self._bounds, elapsed)] += 1
        timing.seconds += elapsed
        if outcome is _OK:
            timing.ok += 1
            return
        full = (*key, outcome, str(code))
        counter = self._send_failures.get(full)
        if counter is None:
            counter = self._send_failures[full] = _Count()
        counter.n += 1

    async def server_filter(self, ctx: Context, req: Any, next: Handler) -> Any:
        """Counts and times every handling; keeps the partition's position for the lag."""
        if isinstance(req, ConsumerMessage):
            topic = req.topic
            count = 1
            last = req
        elif isinstance(req, list) and req and isinstance(req[0], ConsumerMessage):
            topic = req[0].topic
            count = len(req)
            last = req[-1]
        else:
            return await next(ctx, req)
        service = ctx.callee_service
        claim = claim_of(ctx)
        if claim is not None and claim not in self._positions:
            # Before the first handling: a handler stuck on it still shows the lag.
            self._new_claim(claim, service, (req[0] if count > 1 else last).offset - 1)
        start = _perf_counter()
        outcome = _OK
        code = 0
        try:
            return await next(ctx, req)
        except ContinueWithoutCommit:
            outcome = _SKIPPED
            raise
        except BaseException as exc:
            # Cancelled: stopped at shutdown or revocation (not the handler's failure).
            outcome = _CANCELLED if isinstance(exc, asyncio.CancelledError) else _ERROR
            code = error_code(exc)
            raise
        finally:
            elapsed = _perf_counter() - start
            key = (_get_ident(), service, topic)
            timing = self._handlings.get(key)
            if timing is None:
                timing = self._handlings[key] = _Timing(len(self._bounds))
            timing.buckets[_bisect_left(self._bounds, elapsed)] += 1
            timing.seconds += elapsed
            if outcome is _OK:
                timing.ok += count
            else:
                self._handling_outcome(key, outcome, code, count)
            if (outcome is _OK or outcome is _SKIPPED) and claim is not None:
                self._positions[claim] = last.offset

    def _handling_outcome(
        self, key: tuple[int, str, str], outcome: str, code: int, count: int
    ) -> None:
        full = (*key, outcome, str(code))
        counter = self._handling_outcomes.get(full)
        if counter is None:
            counter = self._handling_outcomes[full] = _Count()
        counter.n += count

    def _new_claim(self, claim: Claim, service: str, offset: int) -> None:
        # A partition assigned again gets a new claim: the old one's position goes.
        for old, old_service in list(self._claim_services.items()):
            if (
                old_service == service
                and old.topic == claim.topic
                and old.partition == claim.partition
            ):
                self._forget(old)
        self._claim_services[claim] = service
        self._positions[claim] = offset

    def _forget(self, claim: Claim) -> None:
        self._positions.pop(claim, None)
        self._claim_services.pop(claim, None)

    # -- consumer observer (retries, given-up messages) ---------------------------------------

    def retrying(self, service: str, topic: str, partition: int, attempt: int) -> None:
        self.retries.labels(service, topic).inc()

    def delivery_failed(self, service: str, topic: str, code: int) -> None:
        self.delivery_failures.labels(service, topic, str(code)).inc()

    def gave_up(self, service: str, topic: str, count: int, dead_letter_topic: str | None) -> None:
        if dead_letter_topic is None:
            self.dropped.labels(service, topic).inc(count)
        else:
            self.dead_letters.labels(service, topic, dead_letter_topic).inc(count)

    # -- scrape time ---------------------------------------------------------------------------

    def _call_metrics(self) -> Iterator[Metric]:
        """Sends and handlings: the per-thread objects summed by label set."""
        bounds = self._bounds
        sent = CounterMetricFamily(
            "trpc_kafka_sent_messages",
            "Producer calls by service, topic, method, outcome (ok, error) and tRPC code",
            labels=["service", "topic", "method", "outcome", "code"],
        )
        send_duration = HistogramMetricFamily(
            "trpc_kafka_send_duration_seconds",
            "Duration of producer calls (an acked send: until the broker acknowledged it)",
            labels=["service", "topic", "method"],
        )
        _add_timings(sent, send_duration, self._sends, bounds)
        _add_counts(sent, self._send_failures)
        handled = CounterMetricFamily(
            "trpc_kafka_handled_messages",
            "Messages handled by service, topic, outcome (ok, error, skipped, cancelled), code",
            labels=["service", "topic", "outcome", "code"],
        )
        handle_duration = HistogramMetricFamily(
            "trpc_kafka_handle_duration_seconds",
            "Duration of handler calls (one message, or one batch)",
            labels=["service", "topic"],
        )
        _add_timings(handled, handle_duration, self._handlings, bounds)
        _add_counts(handled, self._handling_outcomes)
        yield from (sent, send_duration, handled, handle_duration)

    def _lag_metric(self) -> Metric:
        lag = GaugeMetricFamily(
            "trpc_kafka_consumer_lag",
            "Messages in the partition after the last one the service handled",
            labels=["service", "group", "topic", "partition"],
        )
        for claim, offset in list(self._positions.items()):
            service = self._claim_services.get(claim)
            raw = claim.view()
            if service is None or (claim.topic, claim.partition) not in raw.session.assignment:
                self._forget(claim)  # revoked, or the service stopped
                continue
            high = raw.claim.high_watermark
            if high is None:
                continue
            lag.add_metric(
                [service, raw.session.group, claim.topic, str(claim.partition)],
                max(high - offset - 1, 0),
            )
        return lag

    def _on_stats(self, stats: dict[str, Any]) -> None:
        name = stats.get("name")
        if not isinstance(name, str):
            return
        now = _monotonic()
        with self._stats_lock:
            previous = self._stats.get(name)
            gap = now - previous[0] if previous is not None else 0.0
            self._stats[name] = (now, gap, stats)

    def _stats_metrics(self) -> Iterator[Metric]:
        now = _monotonic()
        with self._stats_lock:
            for name, (at, gap, _) in list(self._stats.items()):
                stale_after = _STALE_INTERVALS * gap if gap else _STALE_FIRST
                if now - at > stale_after:
                    del self._stats[name]
            documents = [doc for _, _, doc in self._stats.values()]
        yield from rdkafka_stats_metrics(documents)


class _Collector(Collector):
    """The metrics computed at scrape time: consumer lag and librdkafka statistics."""

    def __init__(self, metrics: KafkaMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        yield from self._metrics._call_metrics()
        yield self._metrics._lag_metric()
        yield from self._metrics._stats_metrics()

    def describe(self) -> Iterable[Metric]:
        # The families without samples: the registry refuses a second set of the same names.
        yield from self._metrics._call_metrics()
        yield self._metrics._lag_metric()
        yield from rdkafka_stats_metrics(())


class _Timing:
    """Latency buckets (the last one past every bound), their sum and the successes of one
    label set, written by one thread."""

    __slots__ = ("buckets", "ok", "seconds")

    def __init__(self, bounds: int) -> None:
        self.buckets = [0] * (bounds + 1)
        self.seconds = 0.0
        self.ok = 0


class _Count:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def _add_timings(
    counter: CounterMetricFamily,
    histogram: HistogramMetricFamily,
    timings: dict[Any, _Timing],
    bounds: tuple[float, ...],
) -> None:
    summed: dict[tuple[str, ...], tuple[list[int], float, int]] = {}
    for key, timing in list(timings.items()):
        labels = key[1:]  # without the thread
        buckets, seconds, ok = summed.get(labels, ([0] * (len(bounds) + 1), 0.0, 0))
        summed[labels] = (
            [a + b for a, b in zip(buckets, timing.buckets, strict=True)],
            seconds + timing.seconds,
            ok + timing.ok,
        )
    for labels, (buckets, seconds, ok) in summed.items():
        cumulative = list(itertools.accumulate(buckets))
        histogram.add_metric(
            list(labels),
            [
                (floatToGoString(b), c)  # type: ignore[no-untyped-call]
                for b, c in zip(bounds, cumulative, strict=False)
            ]
            + [("+Inf", cumulative[-1])],
            seconds,
        )
        if ok:
            counter.add_metric([*labels, _OK, "0"], ok)


def _add_counts(counter: CounterMetricFamily, counts: dict[Any, _Count]) -> None:
    summed: dict[tuple[str, ...], int] = {}
    for key, count in list(counts.items()):
        summed[key[1:]] = summed.get(key[1:], 0) + count.n
    for labels, n in summed.items():
        counter.add_metric(list(labels), n)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"trpc_kafka_rdkafka_{name}", doc, labels=labels)


def rdkafka_stats_metrics(documents: Iterable[dict[str, Any]]) -> Iterator[Metric]:
    """Metric families of librdkafka statistics documents (one per client)."""
    client = ["client", "type"]
    broker = [*client, "broker"]
    partition = [*client, "topic", "partition"]
    queue_messages = _gauge("queue_messages", "Messages in the client's queues (msg_cnt)", client)
    queue_bytes = _gauge("queue_bytes", "Bytes of messages in the client's queues", client)
    replyq = _gauge("replyq", "Events waiting for the application to poll (replyq)", client)
    rtt = _gauge("broker_rtt_seconds", "Broker round-trip time (avg, p50, p99)", [*broker, "stat"])
    outbuf = _gauge("broker_outbuf_requests", "Requests waiting to be sent to the broker", broker)
    waitresp = _gauge("broker_waitresp_requests", "Requests sent, awaiting a response", broker)
    up = _gauge("broker_up", "1 when the connection to the broker is up", broker)
    tx_errors = CounterMetricFamily(
        "trpc_kafka_rdkafka_broker_tx_errors", "Transmission errors", labels=broker
    )
    timeouts = CounterMetricFamily(
        "trpc_kafka_rdkafka_broker_request_timeouts", "Requests timed out", labels=broker
    )
    lag = _gauge("consumer_lag", "librdkafka's consumer lag of the partition", partition)
    fetchq = _gauge("fetch_queue_messages", "Pre-fetched messages waiting", partition)
    rebalances = CounterMetricFamily(
        "trpc_kafka_rdkafka_rebalances", "Group rebalances", labels=client
    )
    for doc in documents:
        ids = [str(doc.get("name", "")), str(doc.get("type", ""))]
        queue_messages.add_metric(ids, _num(doc.get("msg_cnt")))
        queue_bytes.add_metric(ids, _num(doc.get("msg_size")))
        replyq.add_metric(ids, _num(doc.get("replyq")))
        for node in _values(doc.get("brokers")):
            if _num(node.get("nodeid"), -1) < 0:
                continue  # bootstrap and internal entries: no broker yet
            b = [*ids, str(node.get("name", ""))]
            node_rtt = node.get("rtt")
            if isinstance(node_rtt, dict) and _num(node_rtt.get("cnt")) > 0:
                # Over the last interval; none without requests in it (no sample, not a 0).
                for stat in ("avg", "p50", "p99"):
                    rtt.add_metric([*b, stat], _num(node_rtt.get(stat)) / 1e6)  # from us
            outbuf.add_metric(b, _num(node.get("outbuf_cnt")))
            waitresp.add_metric(b, _num(node.get("waitresp_cnt")))
            up.add_metric(b, 1.0 if node.get("state") == "UP" else 0.0)
            tx_errors.add_metric(b, _num(node.get("txerrs")))
            timeouts.add_metric(b, _num(node.get("req_timeouts")))
        if doc.get("type") == "consumer":
            for topic_name, topic in _items(doc.get("topics")):
                for part_id, part in _items(topic.get("partitions")):
                    if part_id == "-1" or _num(part.get("consumer_lag"), -1) < 0:
                        continue  # the internal partition, or not consumed by this member
                    p = [*ids, topic_name, part_id]
                    lag.add_metric(p, _num(part.get("consumer_lag")))
                    fetchq.add_metric(p, _num(part.get("fetchq_cnt")))
            cgrp = doc.get("cgrp")
            if isinstance(cgrp, dict):
                rebalances.add_metric(ids, _num(cgrp.get("rebalance_cnt")))
    yield from (queue_messages, queue_bytes, replyq, rtt, outbuf, waitresp, up, tx_errors)
    yield from (timeouts, lag, fetchq, rebalances)


def _num(value: object, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def _values(value: object) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield from (v for v in value.values() if isinstance(v, dict))


def _items(value: object) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        yield from ((str(k), v) for k, v in value.items() if isinstance(v, dict))


# -- the default set, in prometheus_client's default registry ---------------------------------

_default = KafkaMetrics()


def default_metrics() -> KafkaMetrics:
    """The metrics of the ``prometheus`` filters, in prometheus_client's default registry."""
    return _default


client_filter = _default.client_filter
"""The client filter of the ``prometheus`` name (the default registry)."""
server_filter = _default.server_filter
"""The server filter of the ``prometheus`` name (the default registry)."""


def enable_rdkafka_stats(interval: float = 15.0) -> None:
    """Turn on librdkafka's statistics every ``interval`` seconds for clients created from now
    on (an address's ``rdkafka.statistics.interval.ms`` wins); 0 turns the default off."""
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
        raise ValueError(f"enable_rdkafka_stats: interval must be seconds >= 0, got {interval!r}")
    _set_stats_interval(round(interval * 1000))


def start_http_server(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` of ``registry`` (default: prometheus_client's, which holds these
    metrics) on a daemon thread; returns the server (``shutdown()`` stops it) and the thread.
    ``port`` 0 picks a free port: ``server.server_port``."""
    server, thread = prometheus_client.start_http_server(port, addr, registry)
    return server, thread


register_filter("prometheus", server=server_filter, client=client_filter)
