"""Wrong password, unknown user, untrusted certificate, missing permissions: clear and quick.

A producer call fails within its timeout with code 111 and "authentication or TLS handshake
failed", later calls fail at once, and the broker sees few attempts (no reconnect loop). A
consumer service logs the failure once and keeps serving, like with unreachable brokers.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import trpc_kafka
from tests.security._util import consuming, new_group, wait_until
from tests.security.conftest import Secured
from trpc_kafka import TrpcError
from trpc_kafka._runtime.errors import RET_CLIENT_CONNECT_ERR, RET_CLIENT_NETWORK_ERR

TIMEOUT = 5.0
AUTH_FAILED = "authentication or TLS handshake failed"
ATTEMPT_WINDOW = 3.0
# librdkafka re-bootstraps when all brokers are down, which restarts its reconnect backoff;
# with reconnect.backoff.ms=1000 for secured addresses that is about 2 attempts a second
# (librdkafka's 100 ms made ~20 a second for a failed TLS handshake). A loop would be dozens.
MAX_ATTEMPTS_PER_SECOND = 3.5


def _wrong(cluster: Secured, case: str) -> str:
    """The address of a client that cannot get in: the case names why."""
    if case == "wrong password":
        return cluster.address(password="not-" + cluster.creds.password("alice"))
    if case == "unknown user":
        return cluster.address(user="alice").replace("user=alice", "user=mallory")
    assert case == "untrusted certificate"
    return cluster.address().replace(cluster.creds.ca_file, cluster.creds.untrusted_ca_file)


async def _attempts_while_idle(cluster: Secured, seconds: float = ATTEMPT_WINDOW) -> int:
    before = cluster.failed_authentications()
    await asyncio.sleep(seconds)
    return cluster.failed_authentications() - before


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "untrusted certificate"])
async def test_producer_fails_fast_and_clearly(sasl_ssl: Secured, case: str) -> None:
    topic = sasl_ssl.new_topic(case)
    proxy = trpc_kafka.new_client_proxy(
        "bad-producer", target=f"kafka://{_wrong(sasl_ssl, case)}", timeout=5
    )
    try:
        began = time.monotonic()
        with pytest.raises(TrpcError) as info:
            await proxy.send_message(topic, b"k", b"v")
        first = time.monotonic() - began
        # Not the timeout (code 101): the cause, within a fraction of it.
        assert info.value.code == RET_CLIENT_CONNECT_ERR, info.value
        assert first < TIMEOUT / 2, first
        text = str(info.value)
        assert AUTH_FAILED in text
        assert ("certificate verify failed" if "certificate" in case else "SASL") in text

        # While it keeps failing, later sends (async, blocking, several at once) fail at once.
        began = time.monotonic()
        results = await asyncio.gather(
            *(proxy.send_message(topic, b"k", b"v") for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, TrpcError) and AUTH_FAILED in str(r) for r in results), results
        with pytest.raises(TrpcError, match=AUTH_FAILED):
            await asyncio.to_thread(proxy.send_message_sync, topic, b"k", b"v")
        # At once: far below the timeout each would otherwise wait (a margin for a busy box).
        assert time.monotonic() - began < TIMEOUT / 2

        attempts = await _attempts_while_idle(sasl_ssl)
        assert attempts <= MAX_ATTEMPTS_PER_SECOND * ATTEMPT_WINDOW, attempts
    finally:
        await proxy.close(0.5)


async def test_hash_partitioner_fails_fast_too(sasl_ssl: Secured) -> None:
    # roundrobin and hash look the partition count up first: that fails with the cause as well.
    topic = sasl_ssl.new_topic("hash")
    target = f"kafka://{_wrong(sasl_ssl, 'wrong password')}&partitioner=hash"
    async with trpc_kafka.new_client_proxy("bad-hash", target=target, timeout=5) as proxy:
        began = time.monotonic()
        with pytest.raises(TrpcError, match=AUTH_FAILED) as info:
            await proxy.send_message(topic, b"k", b"v")
        assert info.value.code == RET_CLIENT_CONNECT_ERR
        assert time.monotonic() - began < TIMEOUT / 2


async def test_plain_wrong_password(sasl_plaintext: Secured) -> None:
    topic = sasl_plaintext.new_topic("plain-wrong")
    target = f"kafka://{sasl_plaintext.address(password='wrong')}"
    async with trpc_kafka.new_client_proxy("bad-plain", target=target, timeout=5) as proxy:
        with pytest.raises(TrpcError) as info:
            await proxy.send_message(topic, b"k", b"v")
    assert info.value.code == RET_CLIENT_CONNECT_ERR
    assert "Invalid username or password" in str(info.value)
    assert AUTH_FAILED in str(info.value)


async def test_async_send_reports_the_cause_to_the_callback(sasl_ssl: Secured) -> None:
    topic = sasl_ssl.new_topic("async-cb")
    failures: list[BaseException] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_error(err: BaseException, *_: object) -> None:
        failures.append(err)
        loop.call_soon_threadsafe(done.set)

    proxy = trpc_kafka.new_client_proxy(
        "bad-async",
        target=f"kafka://{_wrong(sasl_ssl, 'wrong password')}",
        error_callback=on_error,
    )
    try:
        await proxy.async_send_message(topic, b"k", b"v")
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        await proxy.close(0.5)
    assert isinstance(failures[0], TrpcError)
    assert failures[0].code == RET_CLIENT_CONNECT_ERR
    assert AUTH_FAILED in str(failures[0])


@pytest.mark.parametrize("case", ["wrong password", "untrusted certificate"])
async def test_consumer_service_reports_and_keeps_serving(
    sasl_ssl: Secured, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = sasl_ssl.new_topic(case)
    address = f"{_wrong(sasl_ssl, case)}&topics={topic}&group={new_group()}"
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.consumer"):
        async with consuming(address) as (server, task):
            await wait_until(
                lambda: AUTH_FAILED in caplog.text, timeout=TIMEOUT, what="the failure logged"
            )
            attempts = await _attempts_while_idle(sasl_ssl)
            assert not task.done(), "the server keeps serving"
            assert not server.closing
            assert server.service("secured-consumer").failure is None
    assert attempts <= MAX_ATTEMPTS_PER_SECOND * ATTEMPT_WINDOW, attempts
    ours = [
        r.getMessage()
        for r in caplog.records
        if r.name == "trpc_kafka.consumer" and AUTH_FAILED in r.getMessage()
    ]
    assert ours[0].startswith("kafka server transport: consume fail: ")
    # Reported once (and summarised later), not once per reconnect attempt.
    assert len(ours) <= 2, ours


async def test_user_without_permission_producing_is_told_the_topic(sasl_ssl: Secured) -> None:
    topic = sasl_ssl.new_topic("bob-produce")
    async with trpc_kafka.new_client_proxy(
        "bob-producer", target=f"kafka://{sasl_ssl.address(user='bob')}", timeout=TIMEOUT
    ) as proxy:
        began = time.monotonic()
        with pytest.raises(TrpcError) as info:
            await proxy.send_message(topic, b"k", b"v")
        assert time.monotonic() - began < TIMEOUT / 2
    assert info.value.code == RET_CLIENT_NETWORK_ERR
    assert "Topic authorization failed" in str(info.value)
    assert f"not authorized on topic {topic!r}; check the user's ACLs" in str(info.value)


async def test_user_without_permission_consuming_is_told_plainly(
    sasl_ssl: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    topic = sasl_ssl.new_topic("bob-consume")
    address = sasl_ssl.address(user="bob", extra=f"topics={topic}&group={new_group()}")
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.consumer"):
        async with consuming(address) as (_, task):
            await wait_until(lambda: "not authorized" in caplog.text, what="the refusal")
            assert not task.done()
    # bob may not even use the group: librdkafka stops there.
    assert "Group authorization failed" in caplog.text
    assert "not authorized; check the user's ACLs" in caplog.text


async def test_consuming_a_topic_without_permission_names_it(
    sasl_ssl: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    # alice's own group, a topic outside her prefix.
    topic = sasl_ssl.new_topic("foreign", prefix="other-")
    address = sasl_ssl.address(extra=f"topics={topic}&group={new_group()}")
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.consumer"):
        async with consuming(address) as (_, task):
            await wait_until(lambda: topic in caplog.text, what="the topic named")
            assert not task.done()
    assert f"not authorized on topic {topic!r}; check the user's ACLs" in caplog.text
