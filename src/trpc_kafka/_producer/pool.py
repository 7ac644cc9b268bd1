"""The producer pool: one librdkafka producer per distinct address, shared by proxies.

Entries are keyed by the librdkafka settings an address resolves to (plus our own metadata retry
policy), so two spellings of the same address share one producer. An entry is created on first
use. Creation for one address never waits on another: the pool-wide lock is held only for a
dictionary look-up; each address has its own lock, held while its producer object is built
(librdkafka connects in its own threads, so that takes milliseconds whether or not the brokers
answer). Concurrent first calls for the same address share one creation; a failed creation is
not cached. The pool owns one executor (daemon threads made on demand, up to
``BACKGROUND_THREADS``) for the work that may block: producer creation for an event loop (address
discovery included) and the partition-count look-ups of ``roundrobin`` and ``hash`` (never on
the event loop, never under a shared lock). :func:`close_all_producers` shuts it down; the next
call that needs it starts a new one. The pool answers partition counts only: choosing the
partition is the proxy's partitioner's job (``partitioner.py``).

Each entry owns exactly one background thread, its *delivery thread*, which polls delivery
reports (``poll(0.1)``), runs the async-send callbacks and completes the futures of acked sends
in batches: one ``loop.call_soon_threadsafe`` per event loop per poll, not one per message. Only
that thread ever calls ``poll``, so callbacks never run concurrently.

Closing an entry lets its delivery thread drain the queue within the bound, then purge what is
left and report every purged message to its callback (error) or future (code 141); nothing
vanishes. The doors, by who uses them:

- users: ``ClientProxy.close()`` / ``close_sync()`` (or the proxy's ``with`` block): the last
  proxy of an entry closes it; an earlier one waits, without polling, until the entry's queue was
  empty at a poll (or its bound). ``trpc_kafka.close_all_producers()`` / ``_sync()`` closes every
  entry (programs that stop without a ``Server``; ``flush_on_signals`` calls it);
- internal: a ``Server``'s shutdown calls :func:`close_all_producers` (``trpc_kafka/__init__.py``
  registers it), and the interpreter-exit hook (:func:`_at_exit`) flushes for
  ``ATEXIT_FLUSH_TIMEOUT`` seconds what is still open.

A failing cluster does not make sends wait for their timeout; one mechanism (the delivery
thread purging what is queued, every poll, while a cause is held, so pending and new sends fail
within a poll interval with that cause) serves two kinds of cause:

- Authentication and TLS failures (wrong password, unknown user, untrusted certificate): held
  from librdkafka's first report (error callback) until ``AUTH_HOLD`` seconds after the last
  one (code 111, "authentication or TLS handshake failed"). librdkafka keeps reconnecting
  meanwhile, paced by ``reconnect.backoff.ms`` (1 s for secured addresses, see ``rdkafka.py``);
  once a connection succeeds no failure is reported any more and sends go through again after
  the hold.
- No broker reachable (connection refused, name not resolved, all brokers down): librdkafka
  reports it at once but also for a single broker of a healthy cluster, or an idle connection
  the broker closed. So it is a *pending* cause first; ``UNREACHABLE_GRACE`` seconds later the
  delivery thread asks for metadata (``PROBE_TIMEOUT``): no answer confirms it (code 141, the
  cause, the topic, "Is your cluster reachable?"), an answer clears it. While confirmed, a probe
  every ``PROBE_INTERVAL`` seconds notices the cluster coming back. The Go plugin answers such a
  send in 0.75 s; here it is about ``UNREACHABLE_GRACE + PROBE_TIMEOUT`` (1.5 s).

A call whose timeout passes first, while a cause is pending or held, reports that cause, not a
bare timeout (:func:`ProducerEntry.known_cause`). Two librdkafka defaults are changed to
bound every send when the user did not set them: ``message.timeout.ms`` (300 s) becomes
``MESSAGE_TIMEOUT_MS`` (30 s, the Go plugin's dial and read timeouts) and
``topic.metadata.propagation.max.ms`` (30 s, how long a topic the cluster says does not exist
is waited for) becomes ``UNKNOWN_TOPIC_WAIT_MS`` (2 s; the Go plugin fails such a send in
0.76 s).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from trpc_kafka._config.address import KafkaConfig, redact_address, resolve_brokers
from trpc_kafka._config.rdkafka import producer_settings
from trpc_kafka._consumer.threads import DaemonThreadPool
from trpc_kafka._kafka_errors import (
    is_auth_failure,
    is_unreachable,
    kafka_error_of,
    to_trpc_error,
)
from trpc_kafka._producer import syncloop
from trpc_kafka._producer.delivery import AckedResult, Done, delivery_thread, dispatch
from trpc_kafka._producer.errors import SEND
from trpc_kafka._rdkafka_log import RateLimiter, rdkafka_log, suppressed_note
from trpc_kafka._runtime.errors import (
    RET_CLIENT_ROUTE_ERR,
    RET_CLIENT_TIMEOUT_ERR,
    TrpcError,
    framework_error,
)

log = logging.getLogger("trpc_kafka.producer")
_rdkafka_log = rdkafka_log("trpc_kafka.rdkafka")

POLL_INTERVAL: Final = 0.1
ATEXIT_FLUSH_TIMEOUT: Final = 5.0
"""How long the interpreter-exit hook waits for queued messages before purging them."""
PURGE_GRACE: Final = 2.0
"""Extra time a closing entry gets, after its drain bound, to purge and report."""
AUTH_HOLD: Final = 5.0
"""Seconds after an authentication or TLS failure during which sends fail with it at once."""
UNREACHABLE_GRACE: Final = 1.0
"""Seconds a reported unreachable broker is given before the cluster is probed."""
PROBE_TIMEOUT: Final = 0.5
"""How long a probe (a metadata request) waits for any broker of the address to answer."""
PROBE_INTERVAL: Final = 1.0
"""Seconds between probes while the cluster is unreachable."""
MESSAGE_TIMEOUT_MS: Final = 30_000
"""Default ``message.timeout.ms``: the bound of any send (librdkafka's own is 300 s)."""
UNKNOWN_TOPIC_WAIT_MS: Final = 2_000
"""Default ``topic.metadata.propagation.max.ms``: how long a missing topic is waited for."""
_METADATA_SLICE: Final = 0.5
"""A partition-count look-up waits in slices this long, to end early on an auth failure."""

BACKGROUND_THREADS: Final = 32
"""Most threads of the pool's executor (producer creations and partition-count look-ups)."""

ProducerFactory = Callable[[dict[str, Any]], Producer]
_producer_factory: list[ProducerFactory] = [Producer]
"""Test seam: what builds the librdkafka producer from its settings dict."""


def set_producer_factory(factory: ProducerFactory | None) -> None:
    """Replace how producers are built (tests inspect or extend the settings). None: default."""
    _producer_factory[0] = Producer if factory is None else factory


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _message_timeout_ms(linger_ms: object) -> int:
    """Our ``message.timeout.ms``; librdkafka wants it above ``linger.ms``."""
    try:
        linger = int(float(str(linger_ms or 0)))
    except ValueError:  # librdkafka rejects the value itself, naming it
        linger = 0
    return max(MESSAGE_TIMEOUT_MS, linger + 1000)


class _PartitionLookup:
    """One in-flight partition-count look-up of one topic, shared by every caller."""

    __slots__ = ("future", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.future: concurrent.futures.Future[int] = concurrent.futures.Future()
        # Running: a caller that gives up (timeout, cancel) cannot cancel it for the others.
        self.future.set_running_or_notify_cancel()


class ProducerEntry:
    """One librdkafka producer, its delivery thread and its per-topic partition state."""

    def __init__(self, key: tuple[Any, ...], cfg: KafkaConfig, settings: dict[str, Any]) -> None:
        self.key = key
        self.cfg = cfg
        self.label = redact_address(",".join(cfg.brokers))
        self.settings = settings
        """The settings handed to librdkafka (secrets included: never log this)."""
        full = dict(settings)
        if "message.timeout.ms" not in full and "delivery.timeout.ms" not in full:
            full["message.timeout.ms"] = _message_timeout_ms(full.get("linger.ms"))
        full.setdefault("topic.metadata.propagation.max.ms", UNKNOWN_TOPIC_WAIT_MS)
        full["logger"] = _rdkafka_log
        full["error_cb"] = self._on_error
        self.producer: Producer = _producer_factory[0](full)
        self.closed = False
        self.refs = 0
        # Completed acked sends of the current poll; only the delivery thread touches it.
        self._done: collections.deque[Done] = collections.deque()
        append = self._done.append

        def collect(fut: asyncio.Future[AckedResult], err: KafkaError | None, msg: Message) -> None:
            append((fut, err, msg))

        self.collect = collect
        """``on_delivery`` of an acked send, bound to its future with ``partial``."""
        self._closing_deadline: float | None = None
        # The last authentication or TLS failure and until when sends fail with it at once.
        self.auth_error: KafkaError | None = None
        self._auth_until = 0.0
        # Unreachable brokers (module docstring): since when, why, and whether a probe
        # confirmed it. Only the delivery thread (which serves error_cb) writes these.
        self._down_since: float | None = None
        self._down_cause: KafkaError | None = None
        self.unreachable = False
        self._next_probe = 0.0
        self._errors = RateLimiter()
        self.finished = threading.Event()
        self._lock = threading.Lock()  # partition state only; never held while blocking
        self._partitions: dict[str, tuple[int, float]] = {}
        self._lookups: dict[str, _PartitionLookup] = {}
        self._refresh_s = cfg.metadata_refresh_frequency_s
        # Callables to call once the queue was empty at a poll / once the thread finished.
        self._empty_waiters: list[Callable[[], None]] = []
        self._finished_waiters: list[Callable[[], None]] = []
        self._thread = threading.Thread(
            target=self._run, name=f"trpc-kafka-producer[{self.label}]", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"ProducerEntry({self.label!r}, refs={self.refs}, closed={self.closed})"

    # -- delivery reports (delivery thread) --------------------------------------------------

    def _dispatch(self) -> None:
        """Hand the completions of one poll to their loops (``delivery.dispatch``)."""
        done = list(self._done)
        self._done.clear()
        dispatch(done, self.known_cause())

    def known_cause(self) -> KafkaError | None:
        """Why sends fail or wait now: an auth failure, or unreachable brokers (pending too)."""
        return self.auth_error or self._down_cause

    def failing(self) -> bool:
        """Whether sends are failed at once now (a held auth failure, confirmed unreachable)."""
        return self.auth_error is not None or self.unreachable

    def _on_error(self, err: KafkaError) -> None:
        # librdkafka's client-level errors; it retries by itself, we fail sends on the causes
        # of the module docstring.
        if is_auth_failure(err):
            self.auth_error = err
            self._auth_until = time.monotonic() + AUTH_HOLD
        elif is_unreachable(err):
            if self._down_since is None:
                self._down_since = time.monotonic()
            # "Connect to ... failed: Connection refused" says more than "1/1 brokers are down".
            if self._down_cause is None or err.code() != KafkaError._ALL_BROKERS_DOWN:
                self._down_cause = err
        suppressed = self._errors.admit(err.code())
        if suppressed is not None:
            log.warning(
                "kafka producer %s: %s%s",
                self.label,
                to_trpc_error(err, SEND).msg,
                suppressed_note(suppressed),
            )

    def _check_causes(self) -> None:
        """Expire or confirm the causes (delivery thread); see the module docstring."""
        now = time.monotonic()
        if self.auth_error is not None and now >= self._auth_until:
            self.auth_error = None  # the next send tries the broker again
        since = self._down_since
        if since is None or now - since < UNREACHABLE_GRACE or now < self._next_probe:
            return
        if self._probe():
            self._down_since = None
            self._down_cause = None
            self.unreachable = False
        else:
            self.unreachable = True
            self._next_probe = time.monotonic() + PROBE_INTERVAL

    def _probe(self) -> bool:
        """Whether any broker of the address answers a metadata request."""
        try:
            self.producer.list_topics(timeout=PROBE_TIMEOUT)
        except (KafkaException, RuntimeError):
            return False
        return True

    def _fail_fast(self) -> None:
        """While a cause is held, fail what is queued (reported by the next poll)."""
        self._check_causes()
        if self.failing() and len(self.producer):
            self.producer.purge(True, False, False)  # queued only, without blocking

    def _run(self) -> None:
        delivery_thread.entry = self
        producer = self.producer
        poll = producer.poll
        try:
            while self._closing_deadline is None:
                poll(POLL_INTERVAL)
                if self._done:
                    self._dispatch()
                if self._empty_waiters and len(producer) == 0:
                    self._wake(self._empty_waiters)
                if self.auth_error is not None or self._down_since is not None:
                    self._fail_fast()
            self._drain(self._closing_deadline)
            if len(producer) == 0:
                # Destroyed now, not whenever the garbage collector breaks the cycle through
                # error_cb: until then librdkafka would keep reconnecting (with a wrong
                # password, failing over and over). With nothing queued close() does not wait.
                producer.close()
        except Exception:  # pragma: no cover - a bug; keep the thread's death visible
            log.exception("kafka producer %s: delivery thread failed", self.label)
        finally:
            self.finished.set()
            self._wake(self._empty_waiters)
            self._wake(self._finished_waiters)

    def _drain(self, deadline: float) -> None:
        producer = self.producer
        while len(producer) > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            producer.poll(min(POLL_INTERVAL, left))
            if self._done:
                self._dispatch()
            if self.auth_error is not None or self._down_since is not None:
                self._check_causes()
                if self.failing():
                    break  # nothing is deliverable: report it now, not at the bound
        # Purge what could not be delivered (twice: a straggling produce() that passed the
        # closed check just before the flag was set lands here as well).
        for _ in range(2):
            if len(producer) == 0:
                break
            cause = self.known_cause()
            log.warning(
                "kafka producer %s: %d message(s) not delivered at close; reporting them as "
                "failed (purged)%s",
                self.label,
                len(producer),
                "" if cause is None else f": {to_trpc_error(cause, SEND).msg}",
            )
            producer.purge(True, True, True)
            end = time.monotonic() + PURGE_GRACE
            while len(producer) > 0 and time.monotonic() < end:
                producer.poll(0.05)
                if self._done:
                    self._dispatch()
            time.sleep(0.01)
        if self._done:
            self._dispatch()

    # -- closing ----------------------------------------------------------------------------

    def begin_close(self, timeout: float) -> None:
        """Stop accepting sends; the delivery thread drains for ``timeout`` s, then purges."""
        self.closed = True
        if self._closing_deadline is None:
            self._closing_deadline = time.monotonic() + max(0.0, timeout)
        self._wake(self._empty_waiters)  # a proxy waiting for the queue waits no more

    def wait_closed(self, timeout: float | None) -> bool:
        return self.finished.wait(timeout)

    async def wait_closed_async(self, timeout: float) -> bool:
        """Wait (without polling) until the delivery thread finished; False at ``timeout``."""
        return await self._wait_async(self._finished_waiters, self.finished.is_set, timeout)

    def wait_empty(self, timeout: float) -> bool:
        """Wait until the queue was empty at a poll (or the entry closes); False at ``timeout``."""
        if self._empty_now():
            return True
        event = threading.Event()
        self._add_waiter(self._empty_waiters, event.set)
        try:
            return event.wait(timeout) or self._empty_now()
        finally:
            self._remove_waiter(self._empty_waiters, event.set)

    async def wait_empty_async(self, timeout: float) -> bool:
        """:meth:`wait_empty` for the event loop."""
        return await self._wait_async(self._empty_waiters, self._empty_now, timeout)

    def _empty_now(self) -> bool:
        return self.closed or self.finished.is_set() or len(self.producer) == 0

    async def _wait_async(
        self, waiters: list[Callable[[], None]], ready: Callable[[], bool], timeout: float
    ) -> bool:
        if ready():
            return True
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # on the delivery thread (or the closing one)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve, woken)

        self._add_waiter(waiters, wake)
        try:
            if ready():  # woken before the waiter was in place
                return True
            await asyncio.wait_for(woken, max(0.0, timeout))
        except asyncio.TimeoutError:
            return ready()
        finally:
            self._remove_waiter(waiters, wake)
        return True

    def _add_waiter(self, waiters: list[Callable[[], None]], wake: Callable[[], None]) -> None:
        with self._lock:
            waiters.append(wake)

    def _remove_waiter(self, waiters: list[Callable[[], None]], wake: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            waiters.remove(wake)

    def _wake(self, waiters: list[Callable[[], None]]) -> None:
        with self._lock:
            woken = list(waiters)
            waiters.clear()
        for wake in woken:
            wake()

    def queued(self) -> int:
        """Messages not yet reported (queued, in flight, or reports not yet served)."""
        return len(self.producer)

    # -- partition counts (roundrobin and hash) ----------------------------------------------

    def partitions_cached(self, topic: str) -> int | None:
        """The cached partition count of ``topic`` (starting a refresh when stale), or None."""
        cached = self._partitions.get(topic)
        if cached is None:
            return None
        count, stamp = cached
        if self._refresh_s and time.monotonic() - stamp > self._refresh_s:
            self.lookup(topic)  # refresh in the background; keep using the old count meanwhile
        return count

    def lookup(self, topic: str) -> concurrent.futures.Future[int]:
        """A shared look-up of the partition count of ``topic``, started if none runs."""
        with self._lock:
            running = self._lookups.get(topic)
            if running is not None:
                return running.future
            job = _PartitionLookup(topic)
            self._lookups[topic] = job
        _submit(self._lookup, job)
        return job.future

    def _lookup(self, job: _PartitionLookup) -> None:
        cfg = self.cfg
        topic = job.topic
        per_try = max(1.0, max(cfg.net_read_timeout_ms, cfg.net_dial_timeout_ms) / 1000)
        error: KafkaError | None = None
        count = 0
        for attempt in range(cfg.metadata_retry_max + 1):
            if attempt:
                time.sleep(cfg.metadata_retry_backoff_ms / 1000)
            if self.closed:
                error = KafkaError(KafkaError._DESTROY, "producer closed")
                break
            try:
                md = self._metadata(topic, per_try)
            except KafkaException as exc:
                error = kafka_error_of(exc)
                if error is not None and (is_auth_failure(error) or self.failing()):
                    break
                continue
            meta = md.topics.get(topic)
            if meta is None:
                error = KafkaError(KafkaError._UNKNOWN_TOPIC, f"no metadata for topic {topic}")
                continue
            if meta.error is not None and not meta.partitions:
                error = meta.error
                continue
            if meta.partitions:
                count = len(meta.partitions)
                break
            error = KafkaError(KafkaError._UNKNOWN_TOPIC, f"topic {topic} has no partitions")
        with self._lock:
            del self._lookups[topic]
            if count:
                self._partitions[topic] = (count, time.monotonic())
        if count:
            job.future.set_result(count)
        else:
            stale = self._partitions.get(topic)
            if stale is not None:  # a failed refresh keeps the old count
                job.future.set_result(stale[0])
            else:
                job.future.set_exception(KafkaException(error))

    def _metadata(self, topic: str, timeout: float) -> Any:
        """``list_topics`` for ``topic``, ending early with the auth failure when one comes."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            cause = self.known_cause() if self.failing() else None
            if cause is not None:
                raise KafkaException(cause)
            try:
                return self.producer.list_topics(topic, timeout=min(_METADATA_SLICE, left))
            except RuntimeError:  # closed meanwhile ("Handle has been closed")
                raise KafkaException(KafkaError(KafkaError._DESTROY, "producer closed")) from None
            except KafkaException as exc:
                if self.failing():
                    continue  # raised above
                err = kafka_error_of(exc)
                if err is None or err.code() != KafkaError._TIMED_OUT or left <= _METADATA_SLICE:
                    raise


# -- the executor ---------------------------------------------------------------------------

_executor: list[DaemonThreadPool] = []
_executor_lock = threading.Lock()


def _submit(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on the pool's executor (started on first use, again after a stop)."""
    while True:
        with _executor_lock:
            if not _executor:
                _executor.append(DaemonThreadPool(BACKGROUND_THREADS, "trpc-kafka-producer-bg"))
            executor = _executor[0]
        try:
            executor.submit(fn, *args)
            return
        except RuntimeError:  # shut down by a close_all_producers meanwhile: use a new one
            with _executor_lock:
                if _executor and _executor[0] is executor:
                    _executor.clear()


def _stop_background() -> None:
    """Stop the pool's executor and the blocking twins' loop (both restart when needed)."""
    with _executor_lock:
        executor = _executor.pop() if _executor else None
    if executor is not None:
        # Look-ups of closed producers end within a metadata slice; nobody waits for them.
        executor.shutdown(wait=False)
    syncloop.stop()


# -- the pool -----------------------------------------------------------------------------


class _Slot:
    """The pool's place for one address: its live entry, or the creation under way."""

    __slots__ = ("creating", "entry", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # this address only; never held while blocking
        self.entry: ProducerEntry | None = None
        self.creating: concurrent.futures.Future[ProducerEntry] | None = None


_slots: dict[tuple[Any, ...], _Slot] = {}
_pool_lock = threading.Lock()  # held for dictionary access only


def pool_key(cfg: KafkaConfig) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The pool key of ``cfg`` and its librdkafka settings.

    With ``discover`` the settings' ``bootstrap.servers`` is still the service name: discovery
    may block, so it runs when the producer is built (off the event loop), not here.
    """
    undiscovered = cfg
    if cfg.discover:
        undiscovered = cfg.copy()
        undiscovered.discover = ""
    settings = producer_settings(undiscovered)
    key = (
        tuple(sorted((k, repr(v)) for k, v in settings.items())),
        cfg.metadata_retry_max,
        cfg.metadata_retry_backoff_ms,
        cfg.metadata_refresh_frequency_s,
        cfg.discover,
        cfg.namespace,
    )
    return key, settings


def _create(
    slot: _Slot,
    job: concurrent.futures.Future[ProducerEntry],
    key: tuple[Any, ...],
    cfg: KafkaConfig,
    settings: dict[str, Any],
) -> None:
    """Build the entry of one address and publish it to everyone waiting for it."""
    try:
        if cfg.discover:
            try:
                brokers = resolve_brokers(cfg)
            except Exception as exc:
                raise framework_error(
                    RET_CLIENT_ROUTE_ERR,
                    f"kafka client transport {SEND}: service discovery {cfg.discover!r} "
                    f"failed for {cfg.brokers[0] if cfg.brokers else ''!r} in namespace "
                    f"{cfg.namespace!r}: {exc}",
                ) from exc
            settings = {**settings, "bootstrap.servers": ",".join(brokers)}
        try:
            entry = ProducerEntry(key, cfg, settings)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            if err is None:
                raise
            raise to_trpc_error(err, SEND) from exc
    except BaseException as exc:
        with slot.lock:  # a failed creation is not cached: the next call tries again
            slot.creating = None
        job.set_exception(exc)
        return
    with slot.lock:
        slot.entry = entry
        slot.creating = None
    job.set_result(entry)


def _find_or_create(
    cfg: KafkaConfig, *, inline: bool
) -> tuple[_Slot, ProducerEntry | concurrent.futures.Future[ProducerEntry]]:
    """The live entry of ``cfg`` (one more user counted), or the shared creation to wait for.

    ``inline``: build it on the calling thread (a blocking caller); otherwise on the pool's
    executor, so an event loop never waits for it and a slow address never delays another.
    """
    key, settings = pool_key(cfg)
    with _pool_lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _slots[key] = _Slot()
    with slot.lock:
        entry = slot.entry
        if entry is not None and not entry.closed:
            entry.refs += 1
            return slot, entry
        job = slot.creating
        start = job is None
        if job is None:
            job = slot.creating = concurrent.futures.Future()
            job.set_running_or_notify_cancel()  # a waiter giving up cannot cancel it for others
    if start:
        if inline and not cfg.discover:  # discovery may block: bounded by the caller's deadline
            _create(slot, job, key, cfg, settings)
        else:
            _submit(_create, slot, job, key, cfg, settings)
    return slot, job


def _claim(slot: _Slot, entry: ProducerEntry) -> bool:
    with slot.lock:
        if entry.closed:
            return False
        entry.refs += 1
        return True


def acquire(cfg: KafkaConfig, deadline: float | None = None) -> ProducerEntry:
    """The live producer for ``cfg``, created if needed; counts one more user. Blocking."""
    while True:
        slot, found = _find_or_create(cfg, inline=True)
        if isinstance(found, ProducerEntry):
            return found
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            entry = found.result(left)
        except concurrent.futures.TimeoutError:
            raise _creation_timeout() from None
        if _claim(slot, entry):
            return entry


async def acquire_async(cfg: KafkaConfig, deadline: float | None = None) -> ProducerEntry:
    """:func:`acquire` for the event loop: waits for a creation without blocking the loop."""
    while True:
        slot, found = _find_or_create(cfg, inline=False)
        if isinstance(found, ProducerEntry):
            return found
        if found.done():
            entry = found.result()
        else:
            waiter = asyncio.wrap_future(found)
            try:
                if deadline is None:
                    entry = await waiter
                else:
                    left = max(0.0, deadline - time.monotonic())
                    entry = await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                raise _creation_timeout() from None
        if _claim(slot, entry):
            return entry


def _creation_timeout() -> TrpcError:
    return framework_error(
        RET_CLIENT_TIMEOUT_ERR,
        f"kafka client transport {SEND}: timeout waiting for the producer of this address "
        "to be created",
    )


def release(entry: ProducerEntry, timeout: float) -> bool:
    """One user less. Returns True when that was the last one and the entry began closing."""
    with _pool_lock:
        slot = _slots.get(entry.key)
    if slot is None:
        return False
    with slot.lock:
        entry.refs -= 1
        if entry.refs > 0 or entry.closed:
            return False
        entry.begin_close(timeout)
        if slot.entry is entry:
            slot.entry = None
        return True


def live_entries() -> list[ProducerEntry]:
    with _pool_lock:
        slots = list(_slots.values())
    return [s.entry for s in slots if s.entry is not None and not s.entry.closed]


def _begin_close_all(timeout: float) -> list[ProducerEntry]:
    with _pool_lock:
        slots = list(_slots.values())
    entries: list[ProducerEntry] = []
    for slot in slots:
        with slot.lock:
            entry = slot.entry
            slot.entry = None
        if entry is not None and not entry.closed:
            entry.begin_close(timeout)
            entries.append(entry)
    return entries


async def close_all_producers(timeout: float = 10.0) -> None:
    """Flush every pooled producer within ``timeout`` seconds, then close it.

    Messages still queued at the bound are purged and reported to their error callback (async
    sends) or caller (acked sends, code 141). Proxies stay usable: a later call opens a new
    producer. The server's shutdown calls this.
    """
    entries = _begin_close_all(timeout)
    end = time.monotonic() + timeout + PURGE_GRACE
    for entry in entries:
        if not await entry.wait_closed_async(max(0.0, end - time.monotonic())):
            log.warning("kafka producer %s: delivery thread did not finish in time", entry.label)
    _stop_background()


def close_all_producers_sync(timeout: float = 10.0) -> None:
    """Blocking twin of :func:`close_all_producers`, for code without an event loop."""
    entries = _begin_close_all(timeout)
    end = time.monotonic() + timeout + PURGE_GRACE
    for entry in entries:
        if not entry.wait_closed(max(0.0, end - time.monotonic())):
            log.warning("kafka producer %s: delivery thread did not finish in time", entry.label)
    _stop_background()


def _at_exit() -> None:
    if live_entries():
        with contextlib.suppress(Exception):
            close_all_producers_sync(ATEXIT_FLUSH_TIMEOUT)


atexit.register(_at_exit)


__all__ = [
    "ATEXIT_FLUSH_TIMEOUT",
    "AUTH_HOLD",
    "BACKGROUND_THREADS",
    "MESSAGE_TIMEOUT_MS",
    "PURGE_GRACE",
    "UNKNOWN_TOPIC_WAIT_MS",
    "UNREACHABLE_GRACE",
    "ProducerEntry",
    "acquire",
    "acquire_async",
    "close_all_producers",
    "close_all_producers_sync",
    "live_entries",
    "release",
    "set_producer_factory",
]
