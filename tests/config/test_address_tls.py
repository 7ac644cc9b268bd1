"""Security keys of the address: SASL and TLS, their librdkafka mapping and missing pieces."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from trpc_kafka._config.address import (
    KafkaConfig,
    get_default_config,
    parse_address,
    redact_address,
    register_addr_config,
)
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.rdkafka import (
    SECURED_RECONNECT_BACKOFF_MS,
    consumer_settings,
    producer_settings,
)
from trpc_kafka._tools.tls import TlsFiles, generate

H = "127.0.0.1:9092"
SASL = "mechanism=SCRAM-SHA-512&user=alice&password=pw"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return generate(tmp_path_factory.mktemp("tls"))


def security(settings: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in settings.items() if k.startswith(("ssl.", "sasl.", "security."))}


def test_a_ca_file_alone_means_ssl(certs: TlsFiles) -> None:
    cfg = parse_address(f"{H}?tlsCAFile={certs.ca}")
    assert cfg.protocol == "SSL"
    assert security(producer_settings(cfg)) == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(certs.ca),
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_sasl_with_a_tls_key_means_sasl_ssl(certs: TlsFiles) -> None:
    cfg = parse_address(f"{H}?{SASL}&tlsCAFile={certs.ca}")
    assert cfg.protocol == "SASL_SSL"
    assert security(consumer_settings(cfg)) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "pw",
        "ssl.ca.location": str(certs.ca),
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_any_tls_key_implies_tls_even_the_default_verification() -> None:
    assert parse_address(f"{H}?tlsVerifyHostname=true").protocol == "SSL"
    cfg = parse_address(f"{H}?tlsVerifyHostname=false&{SASL}")
    assert cfg.protocol == "SASL_SSL"
    assert producer_settings(cfg)["ssl.endpoint.identification.algorithm"] == "none"


def test_explicit_ssl_protocol_without_tls_keys_uses_system_cas() -> None:
    settings = producer_settings(parse_address(f"{H}?protocol=SSL"))
    assert security(settings) == {
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_client_certificate_and_encrypted_key(certs: TlsFiles) -> None:
    cfg = parse_address(
        f"{H}?tlsCAFile={certs.ca}&tlsCertFile={certs.client_cert}&tlsKeyFile={certs.client_key}"
        f"&tlsKeyPassword={certs.client_key_password}"
    )
    settings = producer_settings(cfg)
    assert settings["ssl.certificate.location"] == str(certs.client_cert)
    assert settings["ssl.key.location"] == str(certs.client_key)
    assert settings["ssl.key.password"] == certs.client_key_password
    assert certs.client_key_password not in repr(cfg)
    assert certs.client_key_password not in str(cfg)


def test_secured_connections_back_off_reconnects(certs: TlsFiles) -> None:
    for address in (f"{H}?{SASL}", f"{H}?tlsCAFile={certs.ca}", f"{H}?protocol=SASL_SSL&{SASL}"):
        assert producer_settings(parse_address(address))["reconnect.backoff.ms"] == (
            SECURED_RECONNECT_BACKOFF_MS
        )
    assert "reconnect.backoff.ms" not in producer_settings(parse_address(H))
    assert "security.protocol" not in producer_settings(parse_address(H))
    # rdkafka.* still wins.
    cfg = parse_address(f"{H}?{SASL}&rdkafka.reconnect.backoff.ms=10")
    assert producer_settings(cfg)["reconnect.backoff.ms"] == "10"


def test_code_built_config_infers_the_protocol(certs: TlsFiles) -> None:
    cfg = get_default_config()
    cfg.brokers = [H]
    cfg.tls_ca_file = str(certs.ca)
    assert cfg.security_protocol == "SSL"
    assert producer_settings(cfg)["security.protocol"] == "SSL"
    cfg.mechanism, cfg.user, cfg.password = "PLAIN", "u", "p"
    assert producer_settings(cfg)["security.protocol"] == "SASL_SSL"
    register_addr_config("tls_fake_address", cfg)


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ("mechanism=PLAIN", "needs key 'user' and key 'password'"),
        ("mechanism=PLAIN&user=u", "needs key 'password'"),
        ("password=p", "need key 'mechanism'"),
        ("user=u&password=p", "need key 'mechanism'"),
        ("protocol=SASL_SSL", "key 'protocol' (SASL_SSL) authenticates with SASL: it needs key"),
        ("protocol=SASL_PLAINTEXT&user=u&password=p", "need key 'mechanism'"),
        (f"protocol=SSL&{SASL}", "needs a SASL protocol, but key 'protocol' is SSL"),
        (f"protocol=PLAINTEXT&{SASL}", "needs a SASL protocol, but key 'protocol' is PLAINTEXT"),
        ("tlsCAFile=/no/such/ca.pem", "key 'tlsCAFile': '/no/such/ca.pem' does not exist"),
        ("tlsCAFile=/", "key 'tlsCAFile': '/' is not a file"),
        ("tlsCertFile={cert}", "key 'tlsCertFile' (the client certificate) needs key 'tlsKeyFile'"),
        ("tlsKeyFile={key}", "key 'tlsKeyFile' (a client private key) needs key 'tlsCertFile'"),
        ("tlsKeyPassword=x", "key 'tlsKeyPassword' needs key 'tlsKeyFile'"),
        (
            "tlsCAFile={ca}&protocol=PLAINTEXT",
            "key 'protocol' is PLAINTEXT, which has no TLS, but TLS keys are set (tlsCAFile); "
            "use SSL",
        ),
        (
            "tlsVerifyHostname=false&protocol=SASL_PLAINTEXT&" + SASL,
            "key 'protocol' is SASL_PLAINTEXT, which has no TLS, but TLS keys are set "
            "(tlsVerifyHostname); use SASL_SSL",
        ),
        ("tlsVerifyHostname=maybe", "invalid value 'maybe' for key 'tlsVerifyHostname'"),
        # librdkafka loads the files at parse time.
        ("tlsCAFile={key}", "keys 'tlsCAFile': librdkafka cannot use the TLS files"),
        (
            "tlsCertFile={cert}&tlsKeyFile={key}",
            "encrypted and tlsKeyPassword is missing or wrong",
        ),
        (
            "tlsCertFile={cert}&tlsKeyFile={key}&tlsKeyPassword=wrong-one",
            "encrypted and tlsKeyPassword is missing or wrong",
        ),
    ],
)
def test_missing_pieces_are_named(certs: TlsFiles, keys: str, fragment: str) -> None:
    address = f"{H}?" + keys.format(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    with pytest.raises(ConfigError) as info:
        parse_address(address)
    assert fragment in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    ca.chmod(0)
    with pytest.raises(ConfigError, match="is not readable by this process"):
        parse_address(f"{H}?tlsCAFile={ca}")


def test_code_built_config_with_missing_pieces_is_refused(certs: TlsFiles) -> None:
    cfg = KafkaConfig(brokers=[H], tls_cert_file=str(certs.client_cert))
    with pytest.raises(ConfigError, match="needs key 'tlsKeyFile'"):
        register_addr_config("tls_fake_address_2", cfg)
    cfg = KafkaConfig(brokers=[H], tls_ca_file=str(certs.ca), protocol="SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="authenticates with SASL"):
        register_addr_config("tls_fake_address_3", cfg)


def test_key_password_is_a_secret(certs: TlsFiles, caplog: pytest.LogCaptureFixture) -> None:
    secret = "K3y-Pa55-" + certs.client_key_password
    caplog.set_level(logging.DEBUG)
    address = (
        f"kafka://{H}?tlsCertFile={certs.client_cert}&tlsKeyFile={certs.client_key}"
        f"&tlsKeyPassword={secret}"
    )
    with pytest.raises(ConfigError) as info:
        parse_address(address)  # wrong password: librdkafka cannot decrypt the key
    assert secret not in str(info.value)
    assert secret not in repr(info.value.args)
    with pytest.raises(ConfigError) as info:
        parse_address(address + "&nope=1")
    assert secret not in str(info.value)
    assert secret not in redact_address(address)
    assert "tlsKeyPassword=******" in redact_address(address)
    assert secret not in caplog.text
