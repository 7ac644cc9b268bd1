"""Secured real brokers, one per security mode, shared by the tests of this folder.

- ``sasl_ssl``: SCRAM-SHA-256 and SCRAM-SHA-512 over TLS;
- ``sasl_plaintext``: PLAIN without TLS;
- ``ssl``: TLS alone (a client certificate, CN=alice, is alice; without one, ANONYMOUS).

All have ACLs on, users admin (super user), alice (topics and groups named ``alice-*``) and bob
(nothing). The three start together in the background the first time a test needs one (about
6 s, not 18), each in its own directory, and stop at the end of the session. Each start waits
until its cluster is usable, within a deadline scaled to the machine's load (three JVMs
starting at once on a busy 2-core machine took more than the former fixed 60 s).
"""

from __future__ import annotations

import concurrent.futures
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from trpc_kafka._producer import pool
from trpc_kafka._tools.broker import LocalBroker, create_topic
from trpc_kafka._tools.security import ALLOWED_PREFIX, Credentials

MODES = {"sasl_ssl": ("scram", True), "sasl_plaintext": ("plain", False), "ssl": (None, True)}
_FAILED_AUTH = "Failed authentication with"


@dataclass(frozen=True)
class Secured:
    """A running secured cluster and what clients need to use it."""

    name: str
    bootstrap: str
    creds: Credentials
    directory: Path
    started_in: float

    def address(
        self,
        *,
        user: str = "alice",
        mechanism: str | None = None,
        password: str | None = None,
        extra: str = "",
    ) -> str:
        """``host:port?<security keys>[&extra]`` connecting as ``user`` (a consumer address)."""
        keys = self.creds.address_keys(user, mechanism)
        if password is not None:
            keys = re.sub(r"password=[^&]*", f"password={quote(password, safe='')}", keys)
        return f"{self.bootstrap}?{keys}" + (f"&{extra}" if extra else "")

    def new_topic(self, stem: str = "t", *, prefix: str = ALLOWED_PREFIX) -> str:
        """A fresh one-partition topic (created as admin); alice's unless ``prefix`` says not."""
        name = f"{prefix}{re.sub(r'[^a-zA-Z0-9._-]+', '-', stem)[:60]}-{uuid.uuid4().hex[:8]}"
        create_topic(self.bootstrap, name, client_settings=self.creds.client_settings())
        return name

    def failed_authentications(self) -> int:
        """How many connections the broker refused so far (its log has a line for each)."""
        text = (self.directory / "node-1" / "server.log").read_text(errors="replace")
        return text.count(_FAILED_AUTH)


def _start(name: str, broker: LocalBroker) -> Secured:
    began = time.monotonic()
    bootstrap = broker.start()
    creds = broker.credentials()
    assert creds is not None
    return Secured(name, bootstrap, creds, broker.directory, time.monotonic() - began)


@pytest.fixture(scope="session")
def _secured_clusters(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, concurrent.futures.Future[Secured]]]:
    brokers = {
        name: LocalBroker(tmp_path_factory.mktemp(f"kafka-{name}"), sasl=sasl, tls=tls)
        for name, (sasl, tls) in MODES.items()
    }
    with concurrent.futures.ThreadPoolExecutor(len(brokers)) as starter:
        futures = {name: starter.submit(_start, name, b) for name, b in brokers.items()}
        try:
            yield futures
        finally:
            concurrent.futures.wait(futures.values())
            for broker in brokers.values():
                broker.stop()


def _cluster(clusters: dict[str, concurrent.futures.Future[Secured]], name: str) -> Secured:
    # A BrokerError propagates: the tests that need this cluster error with cause and log.
    # No deadline of its own: the start has one, scaled to the machine's load.
    return clusters[name].result()


@pytest.fixture
def sasl_ssl(_secured_clusters: dict[str, concurrent.futures.Future[Secured]]) -> Secured:
    """SCRAM-SHA-256/512 over TLS."""
    return _cluster(_secured_clusters, "sasl_ssl")


@pytest.fixture
def sasl_plaintext(_secured_clusters: dict[str, concurrent.futures.Future[Secured]]) -> Secured:
    """PLAIN without TLS."""
    return _cluster(_secured_clusters, "sasl_plaintext")


@pytest.fixture
def ssl(_secured_clusters: dict[str, concurrent.futures.Future[Secured]]) -> Secured:
    """TLS alone."""
    return _cluster(_secured_clusters, "ssl")


@pytest.fixture(autouse=True)
def _close_producers() -> Iterator[None]:
    """No producer of one test keeps reconnecting (and counting as failures) in the next."""
    yield
    pool.close_all_producers_sync(0.5)
