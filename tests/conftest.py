"""Shared fixtures: the real Kafka broker of the test session and fresh topics on it.

``make test`` starts one broker and exports ``TRPC_KAFKA_BOOTSTRAP``; without it the session
starts its own 1-node broker (the same code as ``trpc-kafka broker start``) and stops it at the
end. A broker that cannot start errors the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest

from trpc_kafka._tools.broker import LocalBroker, create_topic

BOOTSTRAP_ENV = "TRPC_KAFKA_BOOTSTRAP"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's broker: ``$TRPC_KAFKA_BOOTSTRAP`` or one started here."""
    configured = os.environ.get(BOOTSTRAP_ENV)
    if configured:
        yield configured
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), brokers=1)
    # A BrokerError propagates: every test that needs the broker errors with cause and log.
    bootstrap = broker.start()
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture
def new_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory ``new_topic(partitions=1, *, replication_factor=1, config=None) -> name``.

    Every call creates a uniquely named topic and returns once all its partitions have a
    leader. Topics are not deleted: the broker is thrown away after the session.
    """
    # The test's name inside the topic's name leads from a broker log line back to the test.
    stem = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:80]

    def create(
        partitions: int = 1,
        *,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> str:
        name = f"test-{stem}-{uuid.uuid4().hex[:8]}"
        create_topic(
            kafka_bootstrap,
            name,
            partitions=partitions,
            replication_factor=replication_factor,
            config=config,
        )
        return name

    return create


@pytest.fixture
def topic(new_topic: Callable[..., str]) -> str:
    """A fresh topic with one partition."""
    return new_topic()
