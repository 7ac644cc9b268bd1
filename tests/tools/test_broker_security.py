"""The local broker secured: SASL (SCRAM, PLAIN) and/or TLS, users, ACLs, certificates, CLI.

tests/security runs SCRAM over TLS, PLAIN alone and TLS alone; here the other two
combinations start (SCRAM alone, PLAIN over TLS), and the CLI starts SCRAM over TLS.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from tests.security._util import load_scaled
from trpc_kafka._tools import security
from trpc_kafka._tools.broker import BrokerError, LocalBroker, create_topic, processes_using, stop
from trpc_kafka._tools.security import Credentials
from trpc_kafka._tools.tls import TlsError, generate

CLI = Path(sys.executable).with_name("trpc-kafka")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _produce(bootstrap: str, settings: dict[str, str], topic: str) -> KafkaError | None:
    """One acked send; the delivery error (None when it was written)."""
    outcome: list[KafkaError | None] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        outcome.append(err)

    producer = Producer({**settings, "bootstrap.servers": bootstrap, "message.timeout.ms": 10000})
    producer.produce(topic, b"v", on_delivery=delivered)
    assert producer.flush(20) == 0
    return outcome[0]


def _consume_one(bootstrap: str, settings: dict[str, str], topic: str, group: str) -> bytes:
    consumer = Consumer(
        {
            **settings,
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                value = msg.value()
                assert value is not None
                return value
    finally:
        consumer.close()
    raise AssertionError(f"nothing read from {topic}")


@pytest.mark.parametrize(("sasl", "tls"), [("scram", False), ("plain", True)])
def test_secured_broker(tmp_path: Path, sasl: str, tls: bool) -> None:
    local = LocalBroker(tmp_path / "secured", sasl=sasl, tls=tls)
    began = time.monotonic()
    try:
        bootstrap = local.start()
        took = time.monotonic() - began
        within = load_scaled(30)  # about 6 s on an idle machine
        assert took < within, f"{sasl}, tls={tls}: started in {took:.1f} s (> {within:.0f} s)"
        print(f"{local.protocol} ({sasl}) started in {took:.1f} s")
        creds = local.credentials()
        assert creds is not None
        assert creds.protocol == ("SASL_SSL" if tls else "SASL_PLAINTEXT") == local.protocol
        assert local.status().protocol == creds.protocol
        assert creds.mechanisms == security.SASL_MECHANISMS[sasl]
        assert set(creds.passwords) == {"admin", "alice", "bob"}
        assert len(set(creds.passwords.values())) == 3
        # Secrets stay with the owner: credentials and properties (PLAIN users) are 0600.
        assert _mode(local.directory / "credentials.json") == 0o600
        assert _mode(local.directory / "node-1" / "server.properties") == 0o600
        assert all(p not in repr(creds) for p in creds.passwords.values())
        if tls:
            assert Path(creds.ca_file).is_file()
            assert _mode(Path(creds.ca_file).with_name("broker.pem")) == 0o600

        for mechanism in creds.mechanisms:
            admin = creds.client_settings("admin", mechanism)
            topic = f"open-{uuid.uuid4().hex[:8]}"
            create_topic(bootstrap, topic, client_settings=admin)
            assert _produce(bootstrap, admin, topic) is None
            assert _consume_one(bootstrap, admin, topic, f"g-{uuid.uuid4().hex[:6]}") == b"v"

        # ACLs: alice has her prefix (topics auto-created there), bob has nothing.
        alice = creds.client_settings("alice")
        mine = f"{creds.allowed_prefix}{uuid.uuid4().hex[:8]}"
        assert _produce(bootstrap, alice, mine) is None
        group = f"{creds.allowed_prefix}g"
        assert _consume_one(bootstrap, alice, mine, group) == b"v"
        refused = _produce(bootstrap, alice, f"other-{uuid.uuid4().hex[:8]}")
        assert refused is not None
        assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        refused = _produce(bootstrap, creds.client_settings("bob"), mine)
        assert refused is not None
        assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

        # A second start finds it; a start asking for other security refuses to touch it.
        assert LocalBroker(local.directory, sasl=sasl, tls=tls).start() == bootstrap
        with pytest.raises(BrokerError, match=r"already runs in .*; stop it first"):
            LocalBroker(local.directory).start()

        log = (local.directory / "node-1" / "server.log").read_text(errors="replace")
        for password in [*creds.passwords.values(), creds.client_key_password]:
            assert not password or password not in log
    finally:
        local.stop()
    assert not (local.directory / "credentials.json").exists()
    assert local.credentials() is None
    assert processes_using(local.directory) == []


def test_cli_start_with_sasl_and_tls(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "broker", *args, "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    try:
        began = time.monotonic()
        started = run("start", "--sasl", "scram", "--tls")
        took = time.monotonic() - began
        assert started.returncode == 0, started.stderr
        print(f"CLI SASL_SSL (scram) started in {took:.1f} s")
        bootstrap = started.stdout.splitlines()[-1]
        assert bootstrap.startswith("127.0.0.1:")
        assert f"security: SASL_SSL (credentials: {tmp_path / 'credentials.json'})" in (
            started.stdout
        )
        raw: Any = json.loads((tmp_path / "credentials.json").read_text())
        for user, password in raw["passwords"].items():
            # On stderr for the developer, never on stdout (scripts and CI logs keep that).
            assert f"user {user} (" in started.stderr and password in started.stderr
            assert password not in started.stdout
        assert f"tlsCAFile={tmp_path / 'tls' / 'ca.pem'}" in started.stderr
        assert "mechanism=SCRAM-SHA-512&user=alice&password=" in started.stderr

        status = run("status")
        assert status.returncode == 0
        assert "security: SASL_SSL" in status.stdout
        assert status.stdout.splitlines()[-1] == bootstrap

        refused = run("start")
        assert refused.returncode == 1
        assert "a SASL_SSL cluster already runs" in refused.stderr
    finally:
        stop(tmp_path)
    assert processes_using(tmp_path) == []


def test_broker_properties_of_each_mode(tmp_path: Path) -> None:
    plain = Credentials("SASL_PLAINTEXT", ("PLAIN",), {"admin": "a", "alice": "b", "bob": "c"})
    props = security.listener_properties(plain)
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin;User:ANONYMOUS"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.client.plain.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'user_admin="a" user_alice="b" user_bob="c";'
    )
    assert security.scram_format_args(plain) == []

    scram = Credentials(
        "SASL_SSL",
        security.SASL_MECHANISMS["scram"],
        {"admin": "a"},
        ca_file=str(tmp_path / "ca.pem"),
    )
    props = security.listener_properties(scram)
    assert props["listener.name.client.scram-sha-512.sasl.jaas.config"].endswith(
        "ScramLoginModule required;"
    )
    assert props["listener.name.client.ssl.keystore.type"] == "PEM"
    assert props["listener.name.client.ssl.keystore.location"] == str(tmp_path / "broker.pem")
    assert props["listener.name.client.ssl.truststore.location"] == str(tmp_path / "ca.pem")
    assert "listener.name.client.ssl.client.auth" not in props
    assert security.scram_format_args(scram) == [
        "--add-scram",
        "SCRAM-SHA-256=[name=admin,password=a]",
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=a]",
    ]

    tls_only = Credentials("SSL", (), {}, ca_file=str(tmp_path / "ca.pem"))
    props = security.listener_properties(tls_only)
    assert props["listener.name.client.ssl.client.auth"] == "requested"
    assert props["ssl.principal.mapping.rules"] == "RULE:^CN=([^,]+)$/$1/,DEFAULT"
    assert tls_only.address_keys() == f"protocol=SSL&tlsCAFile={tmp_path / 'ca.pem'}"


def test_certificates(tmp_path: Path) -> None:
    made = generate(tmp_path)

    def openssl(*args: str) -> str:
        done = subprocess.run(
            ["openssl", *args], capture_output=True, text=True, check=True, timeout=30
        )
        return done.stdout + done.stderr

    assert "OK" in openssl("verify", "-CAfile", str(made.ca), str(made.broker))
    assert "OK" in openssl("verify", "-CAfile", str(made.ca), str(made.client_cert))
    assert "OK" in openssl(
        "verify", "-CAfile", str(made.untrusted_ca), str(made.untrusted_client_cert)
    )
    bad = subprocess.run(
        ["openssl", "verify", "-CAfile", str(made.untrusted_ca), str(made.broker)],
        capture_output=True,
        check=False,
    )
    assert bad.returncode != 0
    text = openssl("x509", "-in", str(made.broker), "-noout", "-ext", "subjectAltName")
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert "CN = alice" in openssl("x509", "-in", str(made.client_cert), "-noout", "-subject")
    assert "ENCRYPTED PRIVATE KEY" in made.client_key.read_text()
    assert made.client_key_password not in repr(made)
    for key in (made.broker, made.client_key, tmp_path / "ca.key"):
        assert _mode(key) == 0o600


def test_missing_openssl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSSL", "/nonexistent/openssl")
    with pytest.raises(TlsError, match="openssl not found"):
        generate(tmp_path)
    with pytest.raises(BrokerError, match="cannot make the certificates of the TLS listener"):
        LocalBroker(tmp_path / "b", tls=True).start()
    assert processes_using(tmp_path / "b") == []


def test_unknown_sasl_mode(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="sasl='kerberos': allowed: 'scram', 'plain' or None"):
        LocalBroker(tmp_path, sasl="kerberos")
    assert os.listdir(tmp_path) == []
