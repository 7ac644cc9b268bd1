"""The one mapper from librdkafka errors to tRPC errors and actionable text.

Producer and consumer both use it, so the FAQ's failure stories read the same everywhere: a CRC
mismatch suggests ``compression=none``, unreachable brokers ask "Is your cluster reachable?",
an inconsistent group protocol names the ``strategy`` key.
"""

from __future__ import annotations

from typing import Final

from confluent_kafka import KafkaError, KafkaException

from trpc_kafka._runtime import errors as codes
from trpc_kafka._runtime.errors import TrpcError, framework_error

_UNREACHABLE: Final = frozenset(
    {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE}
)
_AUTH: Final = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._SSL,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
    }
)
_AUTHORIZATION: Final = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
UNREACHABLE_HINT: Final = (
    "no broker of the address answers (Is your cluster reachable? check the hosts and ports of "
    "the address, DNS and firewalls; version= is not the cause here: librdkafka asks each broker "
    "its protocol versions)"
)
"""The FAQ's hint for "client has run out of available brokers to talk to"."""
_TIMEOUTS: Final = frozenset({KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT})
# librdkafka reports some TLS and SASL failures as a transport error of a connection that was in
# one of these states ("... (after 2ms in state SSL_HANDSHAKE)").
_AUTH_STATES: Final = ("in state SSL_HANDSHAKE", "in state AUTH_")
# A connection the broker closed, reset or refused proves nothing about credentials, even in a
# handshake ("SSL handshake failed: Disconnected: connection reset by peer"): brokers do that
# when they stop. Such errors keep their own text and are retried as usual.
_DISCONNECTS: Final = ("disconnected", "connection reset", "closed by peer", "connection refused")


def kafka_error_of(exc: BaseException | KafkaError) -> KafkaError | None:
    """The KafkaError inside a KafkaException (or the error itself), else None."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def describe(err: KafkaError, topic: str | None = None) -> str:
    """librdkafka's text for ``err`` plus a hint that tells the user what to change."""
    code = err.code()
    text = err.str()
    if is_auth_failure(err):
        return (
            f"{text}: authentication or TLS handshake failed; check mechanism, user, password "
            f"and certificates"
        )
    if code in _UNREACHABLE:
        where = f" (sending to topic {topic!r})" if topic else ""
        return f"{text}{where}: {UNREACHABLE_HINT}"
    if code == KafkaError.INVALID_MSG:  # CorruptMessage: "does not match its CRC"
        return (
            f"{text}: the broker rejected the record's CRC; some brokers (e.g. CKafka) do not "
            f"accept the compressed batches: try compression=none in the address"
        )
    if code == KafkaError.INCONSISTENT_GROUP_PROTOCOL:
        return (
            f"{text}: the members of this consumer group use different balance strategies; "
            f"give every member the same 'strategy' key (sticky, range or roundrobin; this "
            f"library's sticky is librdkafka's cooperative-sticky, which Sarama's sticky "
            f"members cannot join: use range or roundrobin for mixed Go/Python groups)"
        )
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        where = f"topic {topic!r}" if topic else "the topic"
        return f"{text}: {where} does not exist on the cluster (and auto-creation is off)"
    if code == KafkaError._UNKNOWN_PARTITION:
        return f"{text}: the partition does not exist in topic {topic!r}"
    if code in _AUTHORIZATION:
        subject = (
            f" on topic {topic!r}"
            if topic and code == KafkaError.TOPIC_AUTHORIZATION_FAILED
            else ""
        )
        return f"{text}: not authorized{subject}; check the user's ACLs"
    if code in (KafkaError.MSG_SIZE_TOO_LARGE,):
        return f"{text}: the message exceeds maxMessageBytes (or the broker's message.max.bytes)"
    return text


def is_auth_failure(err: KafkaError) -> bool:
    """Whether ``err`` says authentication (SASL) or the TLS handshake failed."""
    code = err.code()
    if code not in _AUTH and code != KafkaError._TRANSPORT:
        return False
    text = err.str()
    if any(word in text.lower() for word in _DISCONNECTS):
        return False
    return code in _AUTH or any(state in text for state in _AUTH_STATES)


def trpc_code(err: KafkaError) -> int:
    """The tRPC framework code for a librdkafka error."""
    code = err.code()
    if code in _TIMEOUTS:
        return codes.RET_CLIENT_TIMEOUT_ERR
    if is_auth_failure(err):
        return codes.RET_CLIENT_CONNECT_ERR
    return codes.RET_CLIENT_NETWORK_ERR


def is_unreachable(err: KafkaError) -> bool:
    """Whether ``err`` says a broker could not be reached (refused, unresolvable, all down)."""
    return err.code() in _UNREACHABLE and not is_auth_failure(err)


def to_trpc_error(err: KafkaError, operation: str, topic: str | None = None) -> TrpcError:
    """A framework error in the reference's shape: ``kafka client transport <op>: <cause>``."""
    return framework_error(
        trpc_code(err), f"kafka client transport {operation}: {describe(err, topic)}"
    )


def timeout_with_cause(
    cause: KafkaError, operation: str, topic: str | None, waiting_for: str
) -> TrpcError:
    """A call whose deadline passed while ``cause`` was known: the cause's code and text."""
    return framework_error(
        trpc_code(cause),
        f"kafka client transport {operation}: {describe(cause, topic)} (timeout {waiting_for})",
    )
