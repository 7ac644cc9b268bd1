"""One secret vocabulary: every secret-bearing key through every path that can print.

The paths: ``redact_address``, ``repr`` of KafkaConfig, FileConfig, ServiceConfig and
Service, ``redact_settings`` of the librdkafka settings, ConfigError texts and fields of the
address parser and of the file loader, and the server's logs from ``new_server`` to a served
kafka service on the real broker (and a failed start). Each secret value is unique, so a
leak names the key that leaked.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.consumer._util import new_group, serving, wait_until
from trpc_kafka._config.address import parse_address, redact_address
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import get_global_config, parse_config, redact, set_global_config
from trpc_kafka._config.rdkafka import consumer_settings, producer_settings, redact_settings
from trpc_kafka._config.secrets import MASK, is_secret_key, redact_text
from trpc_kafka._consumer import register_kafka_handler_service
from trpc_kafka._runtime.server import new_server

# Address keys whose values are secrets, each with a unique value librdkafka accepts without
# a connection. The PEM and OAUTHBEARER values are only read when the protocol needs them.
ADDRESS_SECRETS = {
    "rdkafka.ssl.key.pem": "PEMKEYsecret0001",
    "rdkafka.sasl.oauthbearer.config": "principal=PRINCsecret0002",
    "rdkafka.ssl.keystore.password": "KSPWsecret0003",
    "rdkafka.sasl.password": "SASLPWsecret0004",
    "rdkafka.ssl.key.password": "KEYPWsecret0005",
    "rdkafka.sasl.oauthbearer.client.secret": "CLIENTsecret0006",
}
SASL = {"mechanism": "PLAIN", "user": "u", "password": "PWsecret0007"}
ALL_SECRETS = [*ADDRESS_SECRETS.values(), SASL["password"], "PRINCsecret0002"]


def secret_address(host: str = "127.0.0.1:9092", *, extra: str = "") -> str:
    keys = {"topics": "t", "group": "g", **SASL, **ADDRESS_SECRETS}
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in keys.items())
    return f"{host}?{query}{extra}"


def assert_clean(text: str) -> None:
    leaked = [s for s in ALL_SECRETS if s in text]
    assert not leaked, f"secrets leaked: {leaked} in {text[:500]!r}"


def test_one_predicate_for_every_spelling() -> None:
    for key in (
        "password",
        "tlsKeyPassword",
        "sasl.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "rdkafka.ssl.key.pem",
        "db_password",
        "PASSWD",
        "api_token",
        "client_secret",
        "credentials",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.jaas.config",
    ):
        assert is_secret_key(key), key
    for key in ("user", "topic", "group", "ssl.ca.location", "ssl.certificate.location", "name"):
        assert not is_secret_key(key), key
    # Keys are judged percent-decoded: a %2E does not hide a key.
    assert MASK in redact_text("h:1?rdkafka.ssl.key%2Epem=PEMKEYsecret0001")
    assert redact_text("x://bob:PWsecret0007@h:1") == f"x://bob:{MASK}@h:1"


def test_address_printers() -> None:
    address = secret_address()
    assert_clean(redact_address(address))
    assert redact_address(address).count(MASK) == len(ADDRESS_SECRETS) + 1
    cfg = parse_address(address)
    assert_clean(repr(cfg))
    assert_clean(str(cfg))
    assert_clean(repr(redact_settings(producer_settings(cfg))))
    assert_clean(repr(redact_settings(consumer_settings(cfg))))


@pytest.mark.parametrize(
    "suffix",
    [
        "&nope=1",  # unknown key after the secrets
        "&topics=again",  # duplicate key
        "&rdkafka.linger.ms=abc",  # librdkafka rejects another key
        "&groupSessionTimeout=5",  # out of range
        "&rdkafka.error_cb=x",  # a callback key
        "&clientid=a%00b",  # NUL
        "&",  # empty item: the message quotes the address
    ],
)
def test_address_errors(suffix: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(secret_address(extra=suffix))
    err = info.value
    assert_clean(str(err))
    assert_clean(repr(err.args))
    assert_clean(f"{err.key} {err.value}")


@pytest.mark.parametrize("key", [*ADDRESS_SECRETS, "password"])
def test_errors_about_the_secret_key_itself(key: str) -> None:
    """A bad value of the secret key: the message names the key, never the value."""
    value = "NULsecret0008%00" if key == "password" else "x\ud800secret0009"
    with pytest.raises(ConfigError) as info:
        parse_address(f"h:1?{key}={value}")
    assert key in str(info.value)
    assert "secret0008" not in str(info.value) and "secret0009" not in str(info.value)
    assert info.value.value is None


def test_librdkafka_rejection_of_a_secret_key_hides_its_value() -> None:
    with pytest.raises(ConfigError, match="rejected by librdkafka") as info:
        parse_address("h:1?rdkafka.no.such.password=KSPWsecret0003")
    assert "KSPWsecret0003" not in str(info.value)


def yaml_text(address: str) -> str:
    return textwrap.dedent(
        f"""\
        global:
          password: PWsecret0007
        server:
          service:
            - name: consumer
              protocol: kafka
              address: "{address}"
              tlsKeyPassword: KEYPWsecret0005
        client:
          service:
            - name: producer
              target: "kafka://{address}"
        plugins:
          auth:
            ssl.key.pem: PEMKEYsecret0001
            sasl.oauthbearer.config: principal=PRINCsecret0002
        """
    )


def test_file_reprs(tmp_path: Path) -> None:
    cfg = parse_config(yaml_text(secret_address()), file="f.yaml")
    assert_clean(repr(cfg))
    assert_clean(repr(cfg.server.services[0]))
    assert_clean(repr(cfg.client.services[0]))
    assert_clean(repr(redact(cfg.plugins)))


def test_file_errors() -> None:
    for suffix in ("&nope=1", "&rdkafka.linger.ms=abc", "&"):
        with pytest.raises(ConfigError) as info:
            parse_config(yaml_text(secret_address(extra=suffix)), file="f.yaml")
        assert_clean(str(info.value))
        assert_clean(f"{info.value.key} {info.value.value}")
    with pytest.raises(ConfigError) as info:  # a YAML syntax error on a secret line
        parse_config(yaml_text(secret_address()).replace("PWsecret0007", "PWsecret0007: ["))
    assert_clean(str(info.value))


@pytest.fixture
def keep_global_config() -> Any:
    saved = get_global_config()
    yield
    set_global_config(saved)


async def test_server_logs_from_load_to_serving(
    kafka_bootstrap: str,
    new_topic: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    keep_global_config: None,
) -> None:
    """new_server, Service repr, a failed start and a served kafka service: no secret logged.

    PLAINTEXT broker: SASL stays off (no mechanism); the rdkafka.* secrets are set but unused.
    """
    caplog.set_level(logging.DEBUG)
    topic = new_topic()
    secrets = "&".join(f"{k}={quote(v, safe='')}" for k, v in ADDRESS_SECRETS.items())
    address = f"{kafka_bootstrap}?topics={topic}&group={new_group()}&initial=oldest&{secrets}"
    path = tmp_path / "trpc_python.yaml"
    path.write_text(yaml_text(address).replace("kafka://", ""))
    server = new_server(path)
    service = server.service("consumer")
    assert_clean(repr(service))
    # No handler registered: the start fails with a ConfigError that quotes the address.
    with pytest.raises(ConfigError) as info:
        await asyncio.wait_for(server.serve(), 60)
    assert_clean(str(info.value))

    server = new_server(path)
    handled: list[bytes | None] = []

    async def handle(ctx: Any, msg: Any) -> None:
        handled.append(msg.value)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: any("started" in r.getMessage() for r in caplog.records))
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert "service consumer started" in text
    assert MASK in text  # the address was logged, masked
    assert_clean(text)
    assert_clean(caplog.text)


# -- the CLI ------------------------------------------------------------------------------


def _cli(*argv: str, tmp_path: Path) -> str:
    """Run ``trpc-kafka ARGV`` as users do (a process), stdout and stderr together."""
    out = subprocess.run(
        [sys.executable, "-m", "trpc_kafka._tools.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    return out.stdout + out.stderr


@pytest.mark.parametrize(
    "argv",
    [
        # A cluster that cannot be reached: the send fails, its error is printed.
        pytest.param(["produce", "-t", "t", "--timeout", "3", "hello"], marks=pytest.mark.slow),
        # The same address refused by librdkafka for its (secret) value: a ConfigError.
        ["produce", "-t", "t", "hello", "--extra", "&rdkafka.ssl.key.pem=PEMKEYsecret0001x"],
        pytest.param(["topics list"], marks=pytest.mark.slow),
    ],
)
def test_cli_prints_no_secret(argv: list[str], tmp_path: Path) -> None:
    extra = ""
    if "--extra" in argv:
        i = argv.index("--extra")
        extra = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    address = secret_address("127.0.0.1:1", extra=extra)
    text = _cli(*argv[0].split(), "-b", address, *argv[1:], tmp_path=tmp_path)
    assert "error" in text, text  # it failed, and said so
    assert_clean(text)


def test_cli_check_prints_no_secret(tmp_path: Path) -> None:
    bad = secret_address("127.0.0.1:1", extra="&fetchMax=1")  # out of range: an error line
    path = tmp_path / "trpc_python.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            server:
              service:
                - name: s
                  protocol: kafka
                  address: "{bad}"
            """
        )
    )
    text = _cli("check", "-v", str(path), tmp_path=tmp_path)
    assert "fetchMax" in text, text
    assert_clean(text)
