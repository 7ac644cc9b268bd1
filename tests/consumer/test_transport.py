"""The transport's commit decisions: unit tests with a scripted stand-in for librdkafka, and
the wiring of librdkafka's commit reports against the real broker.

A real group in a rebalance storm is tests/faults/test_rebalance_storm.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from tests.consumer._util import address, one_service, produce, serving, wait_until
from trpc_kafka._consumer import ConsumerMessage, register_kafka_handler_service
from trpc_kafka._consumer import transport as transport_module
from trpc_kafka._consumer.partition import PartitionState
from trpc_kafka._consumer.raw import Claim
from trpc_kafka._consumer.transport import KafkaServiceTransport
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.server import Service

ADDR = "127.0.0.1:9?topics=t&group=g"


class ScriptedConsumer:
    """``commit()`` raises the scripted errors (KafkaError codes) in turn, then succeeds."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.commits: list[list[tuple[str, int, int]]] = []
        self.stored: list[list[tuple[str, int, int]]] = []

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))


@dataclass
class PartitionResult:
    """A TopicPartition as librdkafka reports a commit result (``error`` is read-only there)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None


def _transport(consumer: Any, handled: dict[int, int]) -> KafkaServiceTransport:
    transport = KafkaServiceTransport(Service("svc", address=ADDR))
    transport._consumer = consumer
    for partition, offset in handled.items():
        state = PartitionState("t", partition, Claim(transport, "t", partition))
        state.handled = offset
        transport._states[state.key] = state
    return transport


def _finish_commit(transport: KafkaServiceTransport, bound: float) -> int:
    """Drive ``_final_commit_done`` as the poll loop does; return how many loop turns it took."""
    turns = 1
    while not transport._final_commit_done():
        assert turns < 1000, "the final commit never ends"
        time.sleep(0.01)
        turns += 1
    assert time.monotonic() <= transport._close_by + bound
    return turns


def _commit_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trpc_kafka.consumer" and r.levelno >= level and "commit" in r.getMessage()
    ]


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.STALE_MEMBER_EPOCH,  # the new group protocol (KIP-848)
        KafkaError.FENCED_MEMBER_EPOCH,
    ],
)
def test_the_final_commit_is_retried_once_the_member_has_rejoined(
    code: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "COMMIT_RETRY_STEP", 0.02)
    consumer = ScriptedConsumer(code, code)
    transport = _transport(consumer, {0: 41, 1: 7})
    transport._close_by = time.monotonic() + 5.0
    caplog.set_level(logging.INFO, "trpc_kafka.consumer")
    turns = _finish_commit(transport, 0.0)
    assert turns > 1, "the loop did not get to serve the rebalance between two tries"
    assert consumer.commits == [[("t", 0, 42), ("t", 1, 8)]] * 3
    assert _commit_logs(caplog, logging.WARNING) == []
    info = [r.getMessage() for r in caplog.records if r.name == "trpc_kafka.consumer"]
    assert len(info) == 2, info  # once for the retries, once for the success
    assert "rebalancing" in info[0] and "retried once this member has rejoined" in info[0]
    assert "committed on shutdown after the rejoin" in info[1]
    # close() revokes everything next: nothing new to commit, so no commit that could fail.
    assert transport._commit(list(transport._states.values()), "revoke") is None
    assert len(consumer.commits) == 3


def test_the_final_commit_gives_up_at_the_bound_with_an_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "COMMIT_RETRY_STEP", 0.02)
    consumer = ScriptedConsumer(*[KafkaError.REBALANCE_IN_PROGRESS] * 1000)
    transport = _transport(consumer, {0: 3})
    transport._close_by = time.monotonic() + 0.3
    caplog.set_level(logging.INFO, "trpc_kafka.consumer")
    _finish_commit(transport, 0.1)
    errors = _commit_logs(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    assert "commit on shutdown failed" in errors[0]
    assert "rebalance in progress" in errors[0]
    assert 2 <= len(consumer.commits) < 100
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1, "one line for the retries, however many"


def test_other_commit_errors_are_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    consumer = ScriptedConsumer(KafkaError.GROUP_AUTHORIZATION_FAILED)
    transport = _transport(consumer, {0: 3})
    transport._close_by = time.monotonic() + 5.0
    caplog.set_level(logging.INFO, "trpc_kafka.consumer")
    assert transport._final_commit_done()
    assert len(consumer.commits) == 1
    errors = _commit_logs(caplog, logging.ERROR)
    assert len(errors) == 1 and "commit on shutdown failed" in errors[0], errors


def test_nothing_handled_commits_nothing() -> None:
    consumer = ScriptedConsumer()
    transport = _transport(consumer, {0: -1})
    transport._close_by = time.monotonic() + 5.0
    assert transport._final_commit_done()
    assert consumer.commits == []


def test_librdkafka_commit_failures_are_logged_unless_covered_or_rebalancing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = _transport(ScriptedConsumer(), {0: 9, 1: 9})
    assert transport._commit(list(transport._states.values()), "revoke") is None  # 10 and 10
    caplog.set_level(logging.DEBUG, "trpc_kafka.consumer")

    def failed(code: int, offset: int) -> list[str]:
        caplog.clear()
        transport._on_commit(KafkaError(code), [TopicPartition("t", 0, offset)])
        return _commit_logs(caplog, logging.WARNING)

    warned = failed(KafkaError.GROUP_AUTHORIZATION_FAILED, 12)
    assert len(warned) == 1 and "t[0]@12" in warned[0], warned
    assert failed(KafkaError.GROUP_AUTHORIZATION_FAILED, 10) == [], "covered by our commit"
    assert failed(KafkaError.REBALANCE_IN_PROGRESS, 12) == [], "the revoke commit follows"
    assert failed(KafkaError._NO_OFFSET, 12) == []
    # A partition-level error without a request-level one.
    caplog.clear()
    too_large = PartitionResult("t", 1, 15, KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE))
    transport._on_commit(None, cast(Any, [too_large, PartitionResult("t", 0, 11, None)]))
    warned = _commit_logs(caplog, logging.WARNING)
    assert len(warned) == 1 and "t[1]@15" in warned[0] and "t[0]" not in warned[0], warned
    caplog.clear()
    transport._on_commit(None, cast(Any, [PartitionResult("t", 0, 11, None)]))
    assert _commit_logs(caplog, logging.DEBUG) == []


def test_librdkafka_commit_failures_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    transport = _transport(ScriptedConsumer(), {0: 9})
    caplog.set_level(logging.DEBUG, "trpc_kafka.consumer")
    for offset in range(20, 40):
        transport._on_commit(
            KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), [TopicPartition("t", 0, offset)]
        )
    assert len(_commit_logs(caplog, logging.WARNING)) == 1
    transport._commit_log._seen[KafkaError.GROUP_AUTHORIZATION_FAILED][0] -= 60
    transport._on_commit(
        KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), [TopicPartition("t", 0, 50)]
    )
    warned = _commit_logs(caplog, logging.WARNING)
    assert len(warned) == 2 and "19 similar suppressed" in warned[1], warned


async def test_librdkafka_commit_results_reach_the_transport(
    kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Integration: the periodic commit (every 3 s) reports to ``_on_commit``."""
    produce(kafka_bootstrap, topic, [b"a", b"b", b"c"])
    results: list[tuple[KafkaError | None, list[tuple[int, int]]]] = []
    on_commit = KafkaServiceTransport._on_commit

    def spy(self: KafkaServiceTransport, err: KafkaError | None, parts: list[Any]) -> None:
        results.append((err, [(tp.partition, tp.offset) for tp in parts]))
        on_commit(self, err, parts)

    monkeypatch.setattr(KafkaServiceTransport, "_on_commit", spy)
    server = one_service(address(kafka_bootstrap, topic))
    register_kafka_handler_service(server, _ignore)
    async with serving(server):
        await wait_until(lambda: (None, [(0, 3)]) in results, what="the periodic commit of 3")
    assert all(err is None for err, _ in results), results


async def _ignore(ctx: Context, msg: ConsumerMessage) -> None:
    return None
