"""The one mapper from librdkafka errors to tRPC errors with the FAQ's hints."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from trpc_kafka._kafka_errors import (
    describe,
    is_auth_failure,
    is_unreachable,
    kafka_error_of,
    timeout_with_cause,
    to_trpc_error,
)
from trpc_kafka._runtime import errors as codes


def test_crc_error_suggests_compression_none() -> None:
    err = to_trpc_error(KafkaError(KafkaError.INVALID_MSG), "SendMessage", "t")
    assert err.code == codes.RET_CLIENT_NETWORK_ERR
    assert str(err).startswith("type:framework, code:141, msg:kafka client transport SendMessage:")
    assert "compression=none" in str(err)


def test_unreachable_brokers_ask_if_cluster_reachable() -> None:
    for code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
        text = describe(KafkaError(code, "Connect to ipv4#127.0.0.1:1 failed"), "orders")
        assert text.startswith("Connect to ipv4#127.0.0.1:1 failed (sending to topic 'orders')")
        assert "(Is your cluster reachable?" in text and "version=" in text
        assert is_unreachable(KafkaError(code))
    assert not is_unreachable(
        KafkaError(
            KafkaError._TRANSPORT, "b/1: SSL handshake failed (after 2ms in state SSL_HANDSHAKE)"
        )
    )


def test_a_timeout_with_a_known_cause_reports_the_cause() -> None:
    cause = KafkaError(KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:1 failed")
    err = timeout_with_cause(cause, "SendMessage", "orders", "waiting for the acknowledgement")
    assert err.code == codes.RET_CLIENT_NETWORK_ERR
    assert err.msg.startswith("kafka client transport SendMessage: Connect to ipv4#127.0.0.1:1")
    assert "topic 'orders'" in err.msg and "Is your cluster reachable?" in err.msg
    assert err.msg.endswith("(timeout waiting for the acknowledgement)")
    auth = KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED, "bad password")
    assert timeout_with_cause(auth, "SendMessage", "t", "x").code == codes.RET_CLIENT_CONNECT_ERR


def test_inconsistent_group_protocol_names_strategy_key() -> None:
    text = describe(KafkaError(KafkaError.INCONSISTENT_GROUP_PROTOCOL))
    assert "'strategy' key" in text and "range or roundrobin" in text


def test_authorization_names_topic() -> None:
    text = describe(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "secret-topic")
    assert "not authorized on topic 'secret-topic'" in text


def test_codes() -> None:
    assert to_trpc_error(KafkaError(KafkaError._MSG_TIMED_OUT), "SendMessage").code == 101
    assert to_trpc_error(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED), "x").code == 111
    assert to_trpc_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "x", "t").code == 141


def test_kafka_error_of() -> None:
    err = KafkaError(KafkaError._TRANSPORT)
    assert kafka_error_of(KafkaException(err)) is err
    assert kafka_error_of(err) is err
    assert kafka_error_of(ValueError("x")) is None


def test_auth_and_tls_failures() -> None:
    for code in (
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    ):
        err = KafkaError(code)
        assert is_auth_failure(err)
        assert to_trpc_error(err, "x").code == codes.RET_CLIENT_CONNECT_ERR
        assert "authentication or TLS handshake failed" in describe(err)
    # librdkafka reports some failed handshakes as a transport error in that state.
    handshake = KafkaError(
        KafkaError._TRANSPORT,
        "ssl://127.0.0.1:9093/bootstrap: error:0A000086:SSL routines::certificate verify failed "
        "(after 2ms in state SSL_HANDSHAKE)",
    )
    assert is_auth_failure(handshake)
    assert "authentication or TLS handshake failed" in describe(handshake)
    assert "reachable" not in describe(handshake)
    refused = KafkaError(KafkaError._TRANSPORT, "Connection refused (after 0ms in state CONNECT)")
    assert not is_auth_failure(refused)
    assert "(Is your cluster reachable?" in describe(refused)
    # A broker that stops resets its connections, handshakes included: no verdict on them.
    reset = KafkaError(
        KafkaError._SSL,
        "SSL handshake failed: Disconnected: connection reset by peer: connecting to a "
        "PLAINTEXT broker listener? (after 33ms in state SSL_HANDSHAKE)",
    )
    assert not is_auth_failure(reset)
    assert to_trpc_error(reset, "x").code == codes.RET_CLIENT_NETWORK_ERR
    closed = KafkaError(KafkaError._TRANSPORT, "Disconnected (after 5ms in state AUTH_REQ)")
    assert not is_auth_failure(closed)
