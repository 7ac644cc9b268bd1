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

The entries themselves (delivery thread, failing-cluster causes, partition counts) are
``entry.py``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import KafkaException

from trpc_kafka._config.address import KafkaConfig, resolve_brokers
from trpc_kafka._config.rdkafka import producer_settings
from trpc_kafka._consumer.threads import DaemonThreadPool
from trpc_kafka._kafka_errors import (
    kafka_error_of,
    to_trpc_error,
)
from trpc_kafka._producer import syncloop
from trpc_kafka._producer.callbacks import success_listeners, success_observed
from trpc_kafka._producer.entry import (
    ERRORS_ONLY,
    PURGE_GRACE,
    ProducerEntry,
    set_producer_factory,
)
from trpc_kafka._producer.errors import SEND
from trpc_kafka._runtime.errors import (
    RET_CLIENT_ROUTE_ERR,
    RET_CLIENT_TIMEOUT_ERR,
    TrpcError,
    framework_error,
)

log = logging.getLogger("trpc_kafka.producer")

ATEXIT_FLUSH_TIMEOUT: Final = 5.0
"""How long the interpreter-exit hook waits for queued messages before purging them."""
BACKGROUND_THREADS: Final = 32
"""Most threads of the pool's executor (producer creations and partition-count look-ups)."""


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


def pool_key(cfg: KafkaConfig, errors_only: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The pool key of ``cfg`` and its librdkafka settings.

    ``errors_only``: a producer that reports failed messages only (:data:`ERRORS_ONLY`), an
    entry of its own: acked sends on the same address never share it.

    With ``discover`` the settings' ``bootstrap.servers`` is still the service name: discovery
    may block, so it runs when the producer is built (off the event loop), not here.
    """
    undiscovered = cfg
    if cfg.discover:
        undiscovered = cfg.copy()
        undiscovered.discover = ""
    settings = producer_settings(undiscovered)
    if errors_only:
        settings[ERRORS_ONLY] = True
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
            entry = ProducerEntry(key, cfg, settings, _submit)
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
        slot.creating = None
        if entry.errors_only and success_observed(None):
            # A success callback was assigned while it was built: nobody may use it (the
            # waiters' claims fail and they ask again, for a reporting producer).
            entry.begin_close(0.0)
        else:
            slot.entry = entry
    job.set_result(entry)


def _find_or_create(
    cfg: KafkaConfig, *, inline: bool, fire_and_forget: bool
) -> tuple[_Slot, ProducerEntry | concurrent.futures.Future[ProducerEntry]]:
    """The live entry of ``cfg`` (one more user counted), or the shared creation to wait for.

    ``inline``: build it on the calling thread (a blocking caller); otherwise on the pool's
    executor, so an event loop never waits for it and a slow address never delays another.
    ``fire_and_forget``: see :func:`acquire`.
    """
    key, settings = pool_key(cfg, fire_and_forget and not success_observed(None))
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


def acquire(
    cfg: KafkaConfig, deadline: float | None = None, *, fire_and_forget: bool = False
) -> ProducerEntry:
    """The live producer for ``cfg``, created if needed; counts one more user. Blocking.

    ``fire_and_forget``: the caller's sends are all fire-and-forget and it has no success
    callback of its own; while the package's success callback is the default one, it gets a
    producer that reports failures only (``errors_only``, 14-21 % less CPU per message:
    bench/results/producer-go.md). Assigning a success callback retires those producers
    (:func:`_retire_errors_only`).
    """
    while True:
        slot, found = _find_or_create(cfg, inline=True, fire_and_forget=fire_and_forget)
        if isinstance(found, ProducerEntry):
            return found
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            entry = found.result(left)
        except concurrent.futures.TimeoutError:
            raise _creation_timeout() from None
        if _claim(slot, entry):
            return entry


async def acquire_async(
    cfg: KafkaConfig, deadline: float | None = None, *, fire_and_forget: bool = False
) -> ProducerEntry:
    """:func:`acquire` for the event loop: waits for a creation without blocking the loop."""
    while True:
        slot, found = _find_or_create(cfg, inline=False, fire_and_forget=fire_and_forget)
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


def _retire_errors_only() -> None:
    """A success callback was assigned: close every producer that reports failures only.

    Each drains for its messages' own bound (``message.timeout.ms``): what is queued is
    delivered as usual, failures still reach the error callback, but those messages' successes
    are not reported (they were sent while nothing observed success). Their proxies' next
    sends find the entry closed and bind a reporting producer.
    """
    with _pool_lock:
        slots = list(_slots.values())
    for slot in slots:
        with slot.lock:
            entry = slot.entry
            if entry is None or not entry.errors_only or entry.closed:
                continue
            slot.entry = None
            entry.retired = True
            entry.begin_close(entry.message_timeout_s + PURGE_GRACE)


success_listeners.append(_retire_errors_only)


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
    "BACKGROUND_THREADS",
    "PURGE_GRACE",
    "ProducerEntry",
    "acquire",
    "acquire_async",
    "close_all_producers",
    "close_all_producers_sync",
    "live_entries",
    "release",
    "set_producer_factory",
]
