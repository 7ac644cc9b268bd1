"""Clusters of the fault tests: each test starts its own in its tmp dir and stops it after.

The tests kill and restart nodes, so no cluster is shared with other tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trpc_kafka._tools.broker import LocalBroker

StartCluster = Callable[[int], LocalBroker]


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[StartCluster]:
    """``start_cluster(brokers) -> LocalBroker``, started (usable); stopped at teardown."""
    started: list[LocalBroker] = []

    def start(brokers: int) -> LocalBroker:
        broker = LocalBroker(tmp_path / f"kafka-{len(started) + 1}", brokers=brokers)
        started.append(broker)
        broker.start()
        return broker

    try:
        yield start
    finally:
        for broker in started:
            broker.stop()
