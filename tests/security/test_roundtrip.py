"""Produce and consume through secured brokers: SCRAM-SHA-256/512 over TLS, PLAIN, TLS alone."""

from __future__ import annotations

import pytest

import trpc_kafka
from tests.security._util import consuming, load_scaled, new_group, wait_until
from tests.security.conftest import Secured
from trpc_kafka import ConsumerMessage


async def round_trip(cluster: Secured, topic: str, address: str, count: int = 5) -> None:
    """``count`` acked sends through a client proxy, read back by a consumer service."""
    sent = [f"{cluster.name}-{i}".encode() for i in range(count)]
    async with trpc_kafka.new_client_proxy(
        "secured-producer", target=f"kafka://{address}", timeout=20
    ) as proxy:
        offsets = [await proxy.send_message(topic, b"k", value) for value in sent]
    assert [offset for _, offset in offsets] == list(range(count))

    received: list[ConsumerMessage] = []
    consumer = f"{address}&topics={topic}&group={new_group()}&initial=oldest"
    async with consuming(consumer, received) as (_, task):
        await wait_until(
            lambda: len(received) >= count or task.done(), timeout=60, what="all messages"
        )
        assert not task.done()
    assert [m.value for m in received] == sent


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_over_tls(sasl_ssl: Secured, mechanism: str) -> None:
    assert sasl_ssl.creds.protocol == "SASL_SSL"
    topic = sasl_ssl.new_topic(mechanism)
    await round_trip(sasl_ssl, topic, sasl_ssl.address(mechanism=mechanism))


async def test_plain(sasl_plaintext: Secured) -> None:
    assert sasl_plaintext.creds.protocol == "SASL_PLAINTEXT"
    topic = sasl_plaintext.new_topic("plain")
    address = sasl_plaintext.address(mechanism="PLAIN")
    assert "protocol=SASL_PLAINTEXT&mechanism=PLAIN" in address
    await round_trip(sasl_plaintext, topic, address)


async def test_the_protocol_is_implied(sasl_ssl: Secured, sasl_plaintext: Secured) -> None:
    # No protocol key: tlsCAFile implies SASL_SSL, a mechanism alone SASL_PLAINTEXT.
    address = _without(sasl_ssl.address(mechanism="SCRAM-SHA-512"), "protocol=SASL_SSL&")
    await round_trip(sasl_ssl, sasl_ssl.new_topic("implied-tls"), address, count=1)
    address = _without(sasl_plaintext.address(), "protocol=SASL_PLAINTEXT&")
    await round_trip(sasl_plaintext, sasl_plaintext.new_topic("implied"), address, count=1)


def _without(address: str, part: str) -> str:
    """``address`` with ``part`` removed; fails if it was not there (or the test re-tests)."""
    assert part in address, f"{part!r} not in {address!r}"
    result = address.replace(part, "")
    assert "protocol=" not in result
    return result


async def test_tls_alone_verifying_the_broker_name(ssl: Secured) -> None:
    assert ssl.creds.protocol == "SSL"
    topic = ssl.new_topic("tls")
    # The certificate names 127.0.0.1 and localhost; the host name is verified by default.
    assert "127.0.0.1" in ssl.address()
    address = ssl.address().replace("127.0.0.1", "localhost", 1)
    assert "tlsCAFile=" in address and "tlsVerifyHostname" not in address
    await round_trip(ssl, topic, address)


async def test_tls_with_a_client_certificate(ssl: Secured) -> None:
    creds = ssl.creds
    mtls = (
        f"tlsCertFile={creds.client_cert_file}&tlsKeyFile={creds.client_key_file}"
        f"&tlsKeyPassword={creds.client_key_password}"
    )
    await round_trip(ssl, ssl.new_topic("mtls"), ssl.address(extra=mtls), count=2)
    # The certificate made the client alice (CN=alice): outside her prefix she is refused.
    foreign = ssl.new_topic("not-alice", prefix="other-")
    async with trpc_kafka.new_client_proxy(
        "mtls-producer", target=f"kafka://{ssl.address(extra=mtls)}", timeout=20
    ) as proxy:
        with pytest.raises(trpc_kafka.TrpcError) as info:
            await proxy.send_message(foreign, b"k", b"v")
    assert f"not authorized on topic {foreign!r}" in str(info.value)


def test_secured_brokers_start_quickly(
    sasl_ssl: Secured, sasl_plaintext: Secured, ssl: Secured
) -> None:
    # The three start side by side (see conftest); each within half a minute nonetheless
    # (more when other work keeps the cores busy).
    bound = load_scaled(30)
    for cluster in (sasl_ssl, sasl_plaintext, ssl):
        print(f"{cluster.creds.protocol} broker started in {cluster.started_in:.1f} s")
        assert cluster.started_in < bound, (cluster.name, cluster.started_in, bound)
