"""Example: testing a consumer service with ``trpc_kafka.testing`` (no broker, no Java).

Run: ``pytest examples/testing``. Each test takes milliseconds: the service runs as in
production (filters, retries, dead letters, partitioners, error codes) on an in-memory cluster.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from billing import build_server
from confluent_kafka import KafkaError

import trpc_kafka
from trpc_kafka.testing import InMemoryKafka

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def kafka() -> AsyncIterator[InMemoryKafka]:
    async with InMemoryKafka(partitions=3) as kafka:
        yield kafka


def payment(order: str, amount: int) -> bytes:
    return json.dumps({"order": order, "amount": amount}).encode()


async def test_a_payment_gets_a_receipt(kafka: InMemoryKafka) -> None:
    async with kafka.serving(build_server()):
        kafka.publish("payments", payment("o-1", 12), headers=[("trace-id", b"t-1")])
        await kafka.wait_handled("payments")

    (receipt,) = kafka.messages("receipts")
    assert receipt.key == b"o-1"
    assert json.loads(receipt.value or b"") == {"order": "o-1", "paid": 12}
    assert ("trace-id", b"t-1") in receipt.headers  # trpcMeta carried the metadata on
    assert kafka.committed("billing", "payments", 0) is not None


async def test_a_bad_payment_ends_in_the_dead_letter_topic(kafka: InMemoryKafka) -> None:
    async with kafka.serving(build_server()):
        kafka.publish("payments", payment("o-2", 0), key="o-2")
        await kafka.wait_handled("payments")

    assert kafka.messages("receipts") == []
    (letter,) = kafka.dead_letters("payments-dlq")
    assert letter.message.key == b"o-2"
    assert letter.error == "amount must be positive, got 0"
    assert letter.attempts == 3  # maxRetry=2
    assert letter.topic == "payments"


async def test_a_receipt_that_fails_once_is_retried(kafka: InMemoryKafka) -> None:
    # The first receipt send fails as if no broker answered (code 141): the handler raises,
    # the library retries the payment, the second send goes through.
    kafka.fail_sends(KafkaError._TRANSPORT, topic="receipts", count=1)
    async with kafka.serving(build_server()):
        kafka.publish("payments", payment("o-3", 5))
        await kafka.wait_handled("payments")

    assert [m.key for m in kafka.messages("receipts")] == [b"o-3"]
    assert kafka.dead_letters("payments-dlq") == []


async def test_a_producer_sees_code_141_when_the_cluster_is_down(kafka: InMemoryKafka) -> None:
    async with trpc_kafka.new_client_proxy(
        "p", target="kafka://127.0.0.1:9092?topic=receipts", timeout=10.0
    ) as proxy:
        with kafka.unreachable(), pytest.raises(trpc_kafka.TrpcError) as failed:
            await proxy.send_message("receipts", b"k", b"v")
    assert failed.value.code == 141
    assert "Is your cluster reachable?" in failed.value.msg
