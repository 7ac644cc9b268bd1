"""One pooled librdkafka producer (:class:`ProducerEntry`): its delivery thread, what it knows
about a failing cluster, and the partition counts it looks up.

Each entry owns exactly one background thread, its *delivery thread*, which polls delivery
reports (``poll(0.1)``), runs the async-send callbacks and completes the futures of acked sends
in batches: one ``loop.call_soon_threadsafe`` per event loop per poll, not one per message.

An acked send that is alone in the queue may poll for its own report on the calling thread
instead (:meth:`ProducerEntry.poll_here`: the blocking twin, or the event loop for at most
``LOOP_POLL_BUDGET``): that saves the hand-off from the delivery thread, a third of such a
send's latency and CPU (bench/results/producer-latency.md). ``poll_lock`` is the token of the
one thread polling at a time, so reports are still served one at a time and exactly once; the
delivery thread steps out of ``poll`` for ``CALLER_POLL_PARK`` after a caller polled (or asked
to) while nothing else is queued, and any send that does not poll for itself wakes it.
Fire-and-forget callbacks served on a caller's poll are passed to the delivery thread
(:meth:`ProducerEntry.defer`): they run there, in order, as always.

Closing an entry lets its delivery thread drain the queue within the bound, then purge what is
left and report every purged message to its callback (error) or future (code 141); nothing
vanishes. Who closes it is the pool's business (``pool.py``).

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
import collections
import concurrent.futures
import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from trpc_kafka import _sdk
from trpc_kafka._config.address import KafkaConfig, redact_address
from trpc_kafka._kafka_errors import (
    is_auth_failure,
    is_unreachable,
    kafka_error_of,
    to_trpc_error,
)
from trpc_kafka._producer.delivery import (
    AckedResult,
    Done,
    caller_polling,
    delivery_thread,
    dispatch,
)
from trpc_kafka._producer.errors import SEND
from trpc_kafka._rdkafka_log import RateLimiter, rdkafka_log, suppressed_note

log = logging.getLogger("trpc_kafka.producer")
_rdkafka_log = rdkafka_log("trpc_kafka.rdkafka")

_MAIN_THREAD: Final = threading.main_thread().ident
_WATCHED_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
# asyncio's handlers that never raise: loop.add_signal_handler's (a no-op: the work is
# scheduled through the wake-up fd; Server.serve uses it) and asyncio.run's SIGINT handler,
# which cancels the main task (it raises KeyboardInterrupt only at a second Ctrl-C).
_ASYNCIO_NOOP: Final = getattr(getattr(asyncio, "unix_events", None), "_sighandler_noop", None)
_RUNNER_ON_SIGINT: Final = getattr(getattr(asyncio, "Runner", None), "_on_sigint", None)


def never_raises(handler: Callable[..., None]) -> Callable[..., None]:
    """Mark a signal handler that only notes or schedules work, never raises (see
    :func:`callbacks_safe_here`)."""
    handler.never_raises = True  # type: ignore[attr-defined]
    return handler


def callbacks_safe_here() -> bool:
    """Whether this thread may run librdkafka's Python callbacks (poll it) without a signal
    handler raising inside one.

    confluent-kafka 2.16 mishandles an exception a signal handler raises while ``poll()`` runs
    a callback: ``poll`` then fails with SystemError, or the exception is lost (a Ctrl-C that
    does nothing; README "Signals and librdkafka callbacks"), and the interrupted delivery
    report is never completed. Python runs signal handlers on the main thread only, so other
    threads are safe; the main thread is when SIGINT's and SIGTERM's handlers do not raise.
    """
    if threading.get_ident() != _MAIN_THREAD:
        return True
    for signum in _WATCHED_SIGNALS:
        handler = signal.getsignal(signum)
        if handler in (signal.SIG_IGN, signal.SIG_DFL, None) or handler is _ASYNCIO_NOOP:
            continue  # SIG_DFL: the process ends without running Python
        if getattr(handler, "never_raises", False):
            continue
        if isinstance(handler, functools.partial) and (
            getattr(handler.func, "__func__", None) is _RUNNER_ON_SIGINT is not None
        ):
            continue
        return False  # Python's default_int_handler, flush_on_signals' blocking handler...
    return True


POLL_INTERVAL: Final = 0.1
CALLER_POLL_PARK: Final = 0.005
"""Seconds the delivery thread stays out of ``poll`` after a caller polled for its own report
(:meth:`ProducerEntry.poll_here`), while nothing else is queued."""
_MIN_POLL: Final = 0.001
"""The binding's ``poll`` works in whole milliseconds: below 1 ms it does not wait at all."""
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
ERRORS_ONLY: Final = "delivery.report.only.error"
"""The binding's setting (a bool) that skips building and passing a report per delivered
message: failed ones only reach their ``on_delivery``."""
UNKNOWN_TOPIC_WAIT_MS: Final = 2_000
"""Default ``topic.metadata.propagation.max.ms``: how long a missing topic is waited for."""
_METADATA_SLICE: Final = 0.5
"""A partition-count look-up waits in slices this long, to end early on an auth failure."""

ProducerFactory = Callable[[dict[str, Any]], Producer]
_producer_factory: list[ProducerFactory] = [_sdk.new_producer]
"""Test seam: what builds the librdkafka producer from its settings dict."""


def set_producer_factory(factory: ProducerFactory | None) -> None:
    """Replace how producers are built (tests inspect or extend the settings). None: default."""
    _producer_factory[0] = _sdk.new_producer if factory is None else factory


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _message_timeout_s(settings: dict[str, Any]) -> float:
    """The bound of any send of a producer with ``settings`` (0, librdkafka's "none", counts
    as librdkafka's default, 300 s)."""
    for name in ("delivery.timeout.ms", "message.timeout.ms"):
        if name in settings:
            try:
                return float(str(settings[name])) / 1000 or 300.0
            except ValueError:  # librdkafka rejected it when the producer was built
                break
    return MESSAGE_TIMEOUT_MS / 1000


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

    def __init__(
        self,
        key: tuple[Any, ...],
        cfg: KafkaConfig,
        settings: dict[str, Any],
        submit: Callable[..., None],
    ) -> None:
        """``submit(fn, *args)`` runs blocking work (look-ups) off this thread (the pool's)."""
        self.key = key
        self._submit = submit
        self.cfg = cfg
        self.label = redact_address(",".join(cfg.brokers))
        self.settings = settings
        """The settings handed to librdkafka (secrets included: never log this)."""
        full = dict(settings)
        if "message.timeout.ms" not in full and "delivery.timeout.ms" not in full:
            full["message.timeout.ms"] = _message_timeout_ms(full.get("linger.ms"))
        full.setdefault("topic.metadata.propagation.max.ms", UNKNOWN_TOPIC_WAIT_MS)
        self.errors_only = full.get(ERRORS_ONLY) is True
        """librdkafka reports failed messages only: no acked send may use this producer
        (``pool.py`` gives it to fire-and-forget proxies that nothing observes success of)."""
        self.message_timeout_s = _message_timeout_s(full)
        self.retired = False
        """Closed because a success callback was assigned (``pool._retire_errors_only``): a
        send waiting for room moves to the proxy's new producer instead of failing."""
        full["logger"] = _rdkafka_log
        full["error_cb"] = self._on_error
        self.producer: Producer = _producer_factory[0](full)
        self.produce = self.producer.produce
        """``producer.produce``, bound once: the hot paths call it once per message."""
        self.closed = False
        self.refs = 0
        # Completed acked sends of the current poll; only the delivery thread touches it.
        self._done: collections.deque[Done] = collections.deque()
        append = self._done.append

        def collect(fut: asyncio.Future[AckedResult], err: KafkaError | None, msg: Message) -> None:
            append((fut, err, msg))

        self.collect = collect
        """``on_delivery`` of an acked send, bound to its future with ``partial``."""
        self.poll_lock = threading.Lock()
        """The token of the one thread that polls (the delivery thread, or a caller)."""
        self.parked = False
        """The delivery thread waits outside ``poll``: a send that does not poll for itself
        calls :meth:`unpark`."""
        self._unpark = threading.Event()
        self._caller_polled = 0.0  # when a caller last polled for itself, or asked to
        self.blocking_senders: set[int] = set()
        """Threads in a blocking acked send now: with two or more the delivery thread keeps
        polling (callers taking turns at the token serve them worse)."""
        # Fire-and-forget reports a caller's poll served: run on the delivery thread, in order.
        self._deferred: collections.deque[Callable[[], None]] = collections.deque()
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

    def _dispatch(self, here: asyncio.AbstractEventLoop | None = None) -> None:
        """Hand the completions of one poll to their loops (``delivery.dispatch``); those of
        ``here``, the running loop of the calling thread, are settled at once."""
        done = list(self._done)
        self._done.clear()
        dispatch(done, self.known_cause(), here)

    # -- a caller polling for its own report (any thread) -------------------------------------

    def unpark(self) -> None:
        """Wake the delivery thread out of its pause: a send that will not poll for itself.

        Not while a caller polls: that one serves the report, or wakes the delivery thread
        when it lets go with messages still queued (:meth:`poll_here`).
        """
        if not self.poll_lock.locked():
            self._unpark.set()

    def defer(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the delivery thread (a report served on a caller's poll)."""
        self._deferred.append(callback)
        self._unpark.set()

    def poll_here(
        self,
        ready: Callable[[], bool],
        budget: float,
        here: asyncio.AbstractEventLoop | None = None,
    ) -> bool:
        """Poll on the calling thread until ``ready()``, for about ``budget`` seconds at most.

        Only when no other thread polls (``poll_lock``); returns False at once otherwise
        (asking the delivery thread to step aside after its current poll) or when ``budget``
        ran out: the caller then waits for the delivery thread as usual. ``here``: the running
        loop of the calling thread, whose futures are settled at once.
        """
        if not callbacks_safe_here():
            return False  # the delivery thread serves this report, as for every other send
        lock = self.poll_lock
        # Only when the delivery thread stepped aside (an earlier lone send asked it to, and
        # the queue emptied): with several senders at once it keeps polling, which serves
        # them better than callers taking turns.
        if not self.parked or not lock.acquire(False):
            self._caller_polled = time.monotonic()
            return False
        if self.closed:  # the delivery thread drains, then closes the producer: not ours
            lock.release()
            return False
        poll = self.producer.poll
        caller_polling.entry = self
        try:
            self._caller_polled = now = time.monotonic()
            end = now + budget
            while True:
                poll(max(_MIN_POLL, end - time.monotonic()))
                if self._done:
                    self._dispatch(here)
                if ready():
                    return True
                if time.monotonic() >= end:
                    self._caller_polled = 0.0
                    return False
        finally:
            caller_polling.entry = None
            lock.release()
            if len(self.producer):  # others' messages: the delivery thread polls for them
                self._unpark.set()

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
            lock = self.poll_lock
            acquire = lock.acquire
            done_q = self._done
            while self._closing_deadline is None:
                # Callers polled lately: maybe stay out of poll (checked only then: the loop
                # runs once per poll, with 1,000 sends in flight tens of thousands a second).
                # Otherwise take the token; a caller polling now hands it over when it lets go.
                if not (self._caller_polled and self._step_aside(producer)) and (
                    acquire(False) or acquire(timeout=CALLER_POLL_PARK)
                ):
                    done = None
                    try:
                        if self._deferred:  # deferred while we waited for the token
                            self._run_deferred()
                        poll(POLL_INTERVAL)
                        if done_q:
                            done = list(done_q)
                            done_q.clear()
                    finally:
                        lock.release()
                    if done:  # outside the token: a woken loop may poll for its next send
                        dispatch(done, self.known_cause())
                if self._empty_waiters and len(producer) == 0:
                    self._wake(self._empty_waiters)
                if self.auth_error is not None or self._down_since is not None:
                    self._fail_fast()
            with lock:  # a caller's poll ends within its budget; none starts after (closed)
                self._run_deferred()  # served before anything the drain serves
                self._drain(self._closing_deadline)
                if len(producer) == 0:
                    # Destroyed now, not whenever the garbage collector breaks the cycle
                    # through error_cb: until then librdkafka would keep reconnecting (with a
                    # wrong password, failing over and over). With nothing queued close() does
                    # not wait.
                    producer.close()
        except Exception:  # pragma: no cover - a bug; keep the thread's death visible
            log.exception("kafka producer %s: delivery thread failed", self.label)
        finally:
            self.finished.set()
            self._wake(self._empty_waiters)
            self._wake(self._finished_waiters)

    def _step_aside(self, producer: Producer) -> bool:
        """Whether the delivery thread paused instead of polling (it waited up to
        ``CALLER_POLL_PARK``): a caller polls for itself now, or just did and nothing else
        is queued. The pause ends early when a send needs the delivery thread, or the caller
        lets go of the token with messages queued."""
        if self._deferred:
            self._run_deferred()
        if time.monotonic() - self._caller_polled >= CALLER_POLL_PARK:
            self._caller_polled = 0.0  # back to polling; a caller asks again if it wants to
            return False
        self.parked = True
        if (
            (len(producer) == 0 or self.poll_lock.locked())
            and len(self.blocking_senders) <= 1
            and not self._deferred
        ):
            self._unpark.wait(CALLER_POLL_PARK)
            self._unpark.clear()
            self.parked = False
            return True
        self.parked = False
        return False

    def _run_deferred(self) -> None:
        deferred = self._deferred
        while deferred:
            deferred.popleft()()

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
        self._unpark.set()

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
        self._submit(self._lookup, job)
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


__all__ = [
    "AUTH_HOLD",
    "CALLER_POLL_PARK",
    "ERRORS_ONLY",
    "MESSAGE_TIMEOUT_MS",
    "PROBE_INTERVAL",
    "PROBE_TIMEOUT",
    "PURGE_GRACE",
    "UNKNOWN_TOPIC_WAIT_MS",
    "UNREACHABLE_GRACE",
    "ProducerEntry",
    "set_producer_factory",
]
