"""The one mapper from librdkafka errors to tRPC errors with the FAQ's hints."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from trpc_kafka._kafka_errors import describe, kafka_error_of, to_trpc_error
from trpc_kafka._runtime import errors as codes


def test_crc_error_suggests_compression_none() -> None:
    err = to_trpc_error(KafkaError(KafkaError.INVALID_MSG), "SendMessage", "t")
    assert err.code == codes.RET_CLIENT_NETWORK_ERR
    assert str(err).startswith("type:framework, code:141, msg:kafka client transport SendMessage:")
    assert "compression=none" in str(err)


def test_unreachable_brokers_ask_if_cluster_reachable() -> None:
    for code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
        assert describe(KafkaError(code)).endswith("(Is your cluster reachable?)")


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
