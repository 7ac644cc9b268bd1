"""A rebalance storm: members started and SIGTERMed every few seconds under load.

Every stop is graceful, so every handled message must be committed by the member that handled
it (at its revoke or its shutdown): no commit may fail and no message may be handled twice,
whatever the assignment strategy (issue 9, section 3).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.consumer._util import address, committed, new_group, produce_spread
from tests.consumer.test_process import App, _config, _done, _in_progress

NewTopic = Callable[..., str]

PARTITIONS = 12
PER_PARTITION = 2500  # 30k messages
HANDLE_MS = 20  # per message and partition: the 30k take >= 50 s, so the storm hits a backlog
EVENT_EVERY = 3.0  # seconds between two storm events (a start or a SIGTERM)
EVENTS = 18
STRATEGY = os.environ.get("TRPC_KAFKA_STORM_STRATEGY", "sticky")
"""The default, librdkafka's cooperative-sticky: the one that failed. ``range`` (the eager
protocol) passes this test too: set the variable to run it (the suite runs one, to stay short)."""
# The transport logs a failed commit (its own, or one librdkafka made) as a warning or error.
COMMIT_FAILED = re.compile(r"(WARNING|ERROR|CRITICAL) trpc_kafka\.consumer: .*commit", re.I)
RETRIED = "committed on shutdown after the rejoin"


@pytest.mark.slow
def test_graceful_stops_in_a_rebalance_storm_commit_everything_handled(
    kafka_bootstrap: str, new_topic: NewTopic, tmp_path: Path
) -> None:
    topic = new_topic(partitions=PARTITIONS)
    produce_spread(kafka_bootstrap, topic, PARTITIONS, PER_PARTITION)
    total = PARTITIONS * PER_PARTITION
    group = new_group()
    config = _config(tmp_path, address(kafka_bootstrap, topic, group, f"strategy={STRATEGY}"))
    apps: list[App] = []
    live: list[App] = []
    stopped: list[App] = []

    def start() -> None:
        run = len(apps)
        app = App(tmp_path, config, tmp_path / f"handled-{run}.txt", HANDLE_MS, run)
        apps.append(app)
        live.append(app)

    def handled_so_far() -> int:
        return sum(len(_done(app.lines())) for app in apps)

    def stop_oldest() -> int:
        app = live.pop(0)
        app.proc.send_signal(signal.SIGTERM)
        stopped.append(app)
        return handled_so_far()

    try:
        for _ in range(3):
            start()
        deadline = time.monotonic() + 60
        while handled_so_far() < 300:
            assert time.monotonic() < deadline, "the members handle nothing"
            time.sleep(0.1)
        # The storm: stop the oldest member, start a new one, alternately, every EVENT_EVERY s.
        backlog_at_stop = []
        next_event = time.monotonic()
        for event in range(EVENTS):
            next_event += EVENT_EVERY
            time.sleep(max(0.0, next_event - time.monotonic()))
            if event % 2 == 0:
                backlog_at_stop.append(total - stop_oldest())
            else:
                start()
        # Then the members left drain the topic and stop, gracefully too.
        deadline = time.monotonic() + 120
        while len({key for app in apps for key in _done(app.lines())}) < total:
            assert time.monotonic() < deadline, f"not drained: {handled_so_far()} of {total}"
            time.sleep(0.2)
        while live:
            stop_oldest()
        for app in stopped:
            assert app.proc.wait(60) == 0, app.tail()
    finally:
        for app in apps:
            if app.proc.poll() is None:
                app.proc.kill()
                app.proc.wait(10)

    # The storm really hit members with work in hand.
    assert sum(1 for left in backlog_at_stop if left > 500) >= EVENTS // 2 - 3, backlog_at_stop
    failures = []
    retried = 0
    for app in apps:
        log = app.log.read_text(encoding="utf-8", errors="replace")
        failures += [line for line in log.splitlines() if COMMIT_FAILED.search(line)]
        retried += log.count(RETRIED)
        assert not _in_progress(app.lines()), f"a handler was abandoned at a graceful stop: {log}"
    counts = Counter(key for app in apps for key in _done(app.lines()))
    duplicates = sum(n - 1 for n in counts.values())
    stops = len(stopped)
    print(
        f"strategy={STRATEGY}: {stops} graceful stops, {len(failures)} failed commits, "
        f"{retried} shutdown commits retried after a rejoin, {duplicates} duplicate "
        f"handlings of {total}; messages left at the storm's stops: {backlog_at_stop}"
    )
    assert len(counts) == total
    assert failures == [], "\n".join(failures[:20])
    assert duplicates == 0, sorted(k for k, n in counts.items() if n > 1)[:50]
    assert committed(kafka_bootstrap, group, topic, PARTITIONS) == dict.fromkeys(
        range(PARTITIONS), PER_PARTITION
    )
