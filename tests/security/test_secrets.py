"""Passwords never leak: not in reprs, not in any log line (librdkafka's debug included), not in
error messages, not on stderr; for succeeding and failing runs, producer and consumer."""

from __future__ import annotations

import secrets

import pytest

import trpc_kafka
from tests.security._util import Everything, capture_all_logs, consuming, new_group, wait_until
from tests.security.conftest import Secured
from trpc_kafka import ConsumerMessage, TrpcError, parse_address

# librdkafka's own debug logs, forwarded to the trpc_kafka loggers ("conf" dumps the settings).
DEBUG = "rdkafka.debug=security,broker,protocol,conf"
AUTH_FAILED = "authentication or TLS handshake failed"


async def _produce_and_consume(address: str, topic: str) -> list[str]:
    """One acked send and the consumer service reading it; returns what was said about it."""
    said = []
    async with trpc_kafka.new_client_proxy(
        "leak-producer", target=f"kafka://{address}", timeout=20
    ) as proxy:
        said.append(repr(proxy))
        await proxy.send_message(topic, b"k", b"v")
    received: list[ConsumerMessage] = []
    consumer = f"{address}&topics={topic}&group={new_group()}&initial=oldest"
    async with consuming(consumer, received) as (server, _):
        await wait_until(lambda: bool(received), timeout=60, what="the message")
        service = server.service("secured-consumer")
        # What the transport shows of its librdkafka settings (secrets masked).
        said += [repr(server), repr(service), repr(getattr(service.transport, "settings", None))]
    return said


async def _fail_to_produce_and_consume(address: str, topic: str, logs: Everything) -> list[str]:
    said = []
    async with trpc_kafka.new_client_proxy(
        "leak-bad-producer", target=f"kafka://{address}", timeout=5
    ) as proxy:
        with pytest.raises(TrpcError) as info:
            await proxy.send_message(topic, b"k", b"v")
        said += [str(info.value), repr(info.value), repr(info.value.__cause__)]
    seen = len(logs.lines)

    def consumer_failed() -> bool:
        return any(
            line.startswith("trpc_kafka.consumer ") and AUTH_FAILED in line
            for line in logs.lines[seen:]
        )

    async with consuming(f"{address}&topics={topic}&group={new_group()}"):
        # Failed attempts, logged by librdkafka (debug) and by the service's consume loop.
        await wait_until(consumer_failed, timeout=60, what="the consumer's auth failure")
    return said


async def test_passwords_are_nowhere(
    sasl_ssl: Secured, sasl_plaintext: Secured, ssl: Secured, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = "Wr0ng-" + secrets.token_urlsafe(12)
    scram = sasl_ssl.address(mechanism="SCRAM-SHA-512", extra=DEBUG)
    plain = sasl_plaintext.address(extra=DEBUG)
    key = ssl.creds
    mtls = ssl.address(
        extra=f"{DEBUG}&tlsCertFile={key.client_cert_file}&tlsKeyFile={key.client_key_file}"
        f"&tlsKeyPassword={key.client_key_password}"
    )
    hidden = {
        "SCRAM password": sasl_ssl.creds.password("alice"),
        "PLAIN password": sasl_plaintext.creds.password("alice"),
        "wrong password": wrong,
        "TLS key password": key.client_key_password,
    }
    said: list[str] = []
    with capture_all_logs() as logs:
        said += await _produce_and_consume(scram, sasl_ssl.new_topic("leak-scram"))
        said += await _produce_and_consume(plain, sasl_plaintext.new_topic("leak-plain"))
        said += await _produce_and_consume(mtls, ssl.new_topic("leak-mtls"))
        for cluster in (sasl_ssl, sasl_plaintext):
            bad = cluster.address(password=wrong, extra=DEBUG)
            said += await _fail_to_produce_and_consume(bad, cluster.new_topic("leak-fail"), logs)
        for address in (scram, plain, mtls):
            cfg = parse_address(address)
            said += [repr(cfg), str(cfg)]
    out, err = capfd.readouterr()

    # The capture saw the runs, librdkafka's debug lines and its failures included.
    assert any("trpc_kafka.rdkafka DEBUG" in line and "SASL" in line for line in logs.lines)
    assert any("trpc_kafka.consumer.rdkafka DEBUG" in line for line in logs.lines)
    assert "sasl.password = [redacted]" in logs.text
    assert AUTH_FAILED in logs.text
    assert len(logs.lines) > 1000
    for what, secret in hidden.items():
        assert secret not in logs.text, f"{what} in a log line"
        for text in said:
            assert secret not in text, f"{what} in {text!r}"
        assert secret not in out, f"{what} on stdout"
        assert secret not in err, f"{what} on stderr"
