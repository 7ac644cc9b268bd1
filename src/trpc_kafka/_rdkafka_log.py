"""librdkafka's log lines and client errors, forwarded to Python logging without floods.

librdkafka repeats a failing connection's line on every reconnect attempt, several times a
second (a producer with no broker logged 3,217 ERROR lines during one 300 s send; a consumer
service 1,154 a minute). Every client (producers, consumer services, dead-letter producers)
forwards through this module: at most one line per :data:`LOG_WINDOW` seconds per client,
facility and cause (the text with its numbers masked, so "after 0ms" and "after 3ms" are one
cause); the next line let through says how many similar ones were suppressed. Debug lines
(``rdkafka.debug=...``, asked for explicitly) are never suppressed.

Connection failures (facility ``FAIL``) are logged at WARNING, not ERROR: librdkafka retries them
by itself, and the calls that fail because of them carry the error with its hint.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Hashable
from typing import Any, Final

LOG_WINDOW: Final = 10.0
"""Seconds during which lines of the same client, facility and cause after the first are
suppressed (and counted)."""
_MAX_KEYS: Final = 1024
"""Causes remembered at most; older ones are forgotten first (bounded memory)."""
_DOWNGRADED: Final = frozenset({"FAIL"})
"""librdkafka facilities logged at ERROR that are retried failures: logged at WARNING."""
_DIGITS: Final = re.compile(r"\d+")


class RateLimiter:
    """At most one event per ``window`` seconds per key; counts the ones it suppresses.

    Thread-safe: librdkafka serves logs and errors on the threads that poll its clients.
    """

    __slots__ = ("_lock", "_seen", "window")

    def __init__(self, window: float = LOG_WINDOW) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._seen: dict[Hashable, list[float]] = {}  # key -> [admitted at, suppressed since]

    def admit(self, key: Hashable) -> int | None:
        """None to suppress this event; else how many of its kind were suppressed before it."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.window:
                seen[1] += 1
                return None
            suppressed = 0 if seen is None else int(seen[1])
            if seen is None and len(self._seen) >= _MAX_KEYS:
                self._forget(now)
            self._seen[key] = [now, 0]
            return suppressed

    def _forget(self, now: float) -> None:
        stale = [k for k, (at, _) in self._seen.items() if now - at >= self.window]
        for k in stale or list(self._seen)[: _MAX_KEYS // 2]:
            del self._seen[k]


def suppressed_note(count: int, window: float = LOG_WINDOW) -> str:
    """The suffix of a line let through after ``count`` suppressed ones ("" for none)."""
    if not count:
        return ""
    return f" ({count} similar suppressed in the last {window:g}s)"


class RdkafkaLog:
    """What confluent-kafka's ``logger`` setting takes: ``log(level, fmt, fac, name, text)``."""

    __slots__ = ("limiter", "logger")

    def __init__(self, logger: logging.Logger, window: float = LOG_WINDOW) -> None:
        self.logger = logger
        self.limiter = RateLimiter(window)

    def log(self, level: int, msg: str, *args: Any) -> None:
        logger = self.logger
        if level <= logging.DEBUG:  # asked for with rdkafka.debug: everything, as is
            logger.log(level, msg, *args)
            return
        if len(args) != 3:  # pragma: no cover - confluent-kafka passes (fac, client, text)
            logger.log(level, msg, *args)
            return
        fac, client, text = args
        suppressed = self.limiter.admit((client, fac, _DIGITS.sub("#", str(text))))
        if suppressed is None:
            return
        if fac in _DOWNGRADED and level > logging.WARNING:
            level = logging.WARNING
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "%s [%s] %s%s",
            fac,
            client,
            text,
            suppressed_note(suppressed, self.limiter.window),
        )


_forwarders: dict[str, RdkafkaLog] = {}
_forwarders_lock = threading.Lock()


def rdkafka_log(name: str) -> RdkafkaLog:
    """The forwarder to the Python logger ``name`` (one per name: its limits are shared)."""
    with _forwarders_lock:
        found = _forwarders.get(name)
        if found is None:
            found = _forwarders[name] = RdkafkaLog(logging.getLogger(name))
        return found


__all__ = ["LOG_WINDOW", "RateLimiter", "RdkafkaLog", "rdkafka_log", "suppressed_note"]
