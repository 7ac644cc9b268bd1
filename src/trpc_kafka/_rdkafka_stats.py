"""librdkafka's statistics (``stats_cb``), handed to listeners such as the Prometheus metrics.

librdkafka emits a JSON document per client every ``statistics.interval.ms`` (0, off, by
default): queue depths, per-broker round-trip times, per-partition consumer lag. It is switched
on per address with ``rdkafka.statistics.interval.ms=N`` or for every client created afterwards
with :func:`set_default_interval` (what ``trpc_kafka.prometheus.enable_rdkafka_stats`` calls).
The settings builder (``_config/rdkafka.py``) calls :func:`with_stats` last; a client without
statistics gets no callback, so nothing changes for it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger("trpc_kafka")

StatsListener = Callable[[dict[str, Any]], None]
"""Called with each parsed statistics document, on the thread that polls the client."""

_INTERVAL: Final = "statistics.interval.ms"

_lock = threading.Lock()
# Replaced whole under the lock, read without it: [the listeners], [the default interval].
_listeners: list[tuple[StatsListener, ...]] = [()]
_default_interval_ms: list[int] = [0]


def add_stats_listener(listener: StatsListener) -> None:
    with _lock:
        if listener not in _listeners[0]:
            _listeners[0] = (*_listeners[0], listener)


def remove_stats_listener(listener: StatsListener) -> None:
    with _lock:
        _listeners[0] = tuple(x for x in _listeners[0] if x != listener)


def set_default_interval(ms: int) -> None:
    """``statistics.interval.ms`` for clients created from now on whose address sets none."""
    if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= 86_400_000:
        raise ValueError(f"statistics interval: an int of ms in 0..86400000, got {ms!r}")
    _default_interval_ms[0] = ms


def with_stats(settings: dict[str, Any]) -> None:
    """Add the default interval and the callback to librdkafka ``settings`` when statistics
    are on (an ``rdkafka.statistics.interval.ms`` of the address wins over the default)."""
    if _INTERVAL not in settings and _default_interval_ms[0]:
        settings[_INTERVAL] = _default_interval_ms[0]
    try:
        on = int(settings.get(_INTERVAL) or 0) > 0
    except (TypeError, ValueError):
        return  # librdkafka reports the bad value when the client is made
    if on:
        settings["stats_cb"] = _dispatch


def _dispatch(text: str) -> None:
    listeners = _listeners[0]
    if not listeners:
        return
    try:
        stats = json.loads(text)
    except ValueError:
        log.warning("librdkafka statistics: not JSON, ignored (%d characters)", len(text))
        return
    for listener in listeners:
        try:
            listener(stats)
        except Exception:
            log.exception("librdkafka statistics listener %r failed", listener)
