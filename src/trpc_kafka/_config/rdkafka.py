"""The one mapping from a :class:`KafkaConfig` to librdkafka settings.

Keys of the reference with a librdkafka equivalent map to it here. Keys whose meaning is our own
logic (partitioner roundrobin/hash, handler retries, batches, rate limits, metadata retries of
our own partition lookups) are read by the producer or consumer code instead; the table in the
README says which is which. ``version`` has no setting: librdkafka asks each broker which
protocol versions it speaks (ApiVersionRequest), the problem that key solves for Sarama.
``rdkafka.*`` pass-through settings are applied last, so a user can override any value here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from confluent_kafka import KafkaException, Producer

from trpc_kafka._config.discovery import resolve_brokers
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.keys import (
    RDKAFKA_PREFIX,
    TLS_SPECS,
    check_text,
    is_object_setting,
    shorten,
)
from trpc_kafka._config.model import KafkaConfig
from trpc_kafka._config.secrets import MASK, is_secret_key
from trpc_kafka._kafka_errors import kafka_error_of
from trpc_kafka._rdkafka_stats import with_stats

# Sarama's sticky is an eager protocol librdkafka does not implement; librdkafka's sticky
# assignor is the cooperative (incremental) one. Members of one group must agree on the
# protocol, so mixed Go (Sarama sticky) and Python groups should use range or roundrobin.
ASSIGNORS: Final = {"sticky": "cooperative-sticky", "range": "range", "roundrobin": "roundrobin"}
OFFSET_RESET: Final = {"newest": "latest", "oldest": "earliest"}
ISOLATION: Final = {"ReadUncommitted": "read_uncommitted", "ReadCommitted": "read_committed"}
# groupProtocol=consumer (KIP-848): the broker assigns, with its assignors (group.consumer.
# assignors: uniform, range). Its uniform assignor is sticky; roundrobin has none (refused at
# parse time, see KafkaConfig._validate_group_mode).
REMOTE_ASSIGNORS: Final = {"sticky": "uniform", "range": "range"}
SHARE_POLL_RECORDS: Final = 100
"""Records a share group member acquires per poll (``max.poll.records``) for a single-message
handler. It holds their locks (30 s by default) while handling them one after the other, so a
smaller poll keeps a slow handler inside the lock; a batch handler polls ``batch``."""

# With SASL or TLS, reconnects start this far apart (librdkafka: 100 ms). A failed TLS handshake
# takes milliseconds and librdkafka's re-bootstrap (KIP-899, on by default) starts every cycle
# at the initial backoff again: at 100 ms a consumer with an untrusted certificate reconnected
# ~20 times a second, at 1000 ms about twice. It bounds the first reconnect of a healthy client
# after a broker restart as well. rdkafka.reconnect.backoff.ms overrides it.
SECURED_RECONNECT_BACKOFF_MS: Final = 1000

# Kafka's protocol request overhead on top of a fetch; librdkafka needs this much headroom.
_RECEIVE_HEADROOM: Final = 512
_LIBRDKAFKA_RECEIVE_DEFAULT: Final = 100_000_000


def _common(cfg: KafkaConfig, client_id: str) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "bootstrap.servers": ",".join(resolve_brokers(cfg)),
        "client.id": client_id,
        "max.in.flight.requests.per.connection": cfg.net_max_open_requests,
        "socket.connection.setup.timeout.ms": cfg.net_dial_timeout_ms,
        # librdkafka has one socket timeout for reads and writes.
        "socket.timeout.ms": max(cfg.net_read_timeout_ms, cfg.net_write_timeout_ms),
        "topic.metadata.refresh.interval.ms": (
            cfg.metadata_refresh_frequency_s * 1000 if cfg.metadata_refresh_frequency_s else -1
        ),
        "topic.metadata.refresh.sparse": not cfg.metadata_full,
        "allow.auto.create.topics": cfg.metadata_allow_auto_topic_creation,
    }
    if cfg.metadata_retry_backoff_ms:
        # librdkafka's retry interval of metadata after an error.
        settings["topic.metadata.refresh.fast.interval.ms"] = min(
            max(cfg.metadata_retry_backoff_ms, 1), 60_000
        )
    protocol = cfg.security_protocol
    if protocol != "PLAINTEXT" or cfg.protocol:
        settings["security.protocol"] = protocol
    if cfg.mechanism:
        settings["sasl.mechanism"] = cfg.mechanism
        settings["sasl.username"] = cfg.user
        settings["sasl.password"] = cfg.password
    if protocol.endswith("SSL"):
        settings.update(tls_settings(cfg))
    if protocol != "PLAINTEXT":
        settings["reconnect.backoff.ms"] = SECURED_RECONNECT_BACKOFF_MS
    return settings


def tls_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """The ``ssl.*`` settings of the ``tls*`` keys (without ``security.protocol``)."""
    settings: dict[str, Any] = {
        "ssl.endpoint.identification.algorithm": "https" if cfg.tls_verify_hostname else "none"
    }
    if cfg.tls_ca_file:
        settings["ssl.ca.location"] = cfg.tls_ca_file
    if cfg.tls_cert_file:
        settings["ssl.certificate.location"] = cfg.tls_cert_file
        settings["ssl.key.location"] = cfg.tls_key_file
    if cfg.tls_key_password:
        settings["ssl.key.password"] = cfg.tls_key_password
    return settings


def producer_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka producer settings for ``cfg``; may block while a discovery resolves brokers."""
    settings = _common(cfg, cfg.client_id)
    settings.update(
        {
            "compression.type": cfg.compression,
            "acks": cfg.required_acks,
            "retries": cfg.producer_max_retry,
            "retry.backoff.ms": max(cfg.producer_retry_interval_ms, 1),  # librdkafka: >= 1
            "enable.idempotence": cfg.idempotent,
            "message.max.bytes": cfg.max_message_bytes,
            # Keyless (and every message for random): librdkafka spreads them at random.
            # roundrobin and hash pick the partition in Python, as Sarama does.
            "partitioner": "random",
        }
    )
    batch_messages = [n for n in (cfg.flush_messages, cfg.flush_max_messages) if n > 0]
    if batch_messages:
        settings["batch.num.messages"] = min(batch_messages)
    if cfg.flush_bytes:
        settings["batch.size"] = cfg.flush_bytes
    # Sarama sends at once unless flushFrequency asks it to wait; librdkafka would wait 5 ms.
    settings["linger.ms"] = cfg.flush_frequency_ms
    settings.update(cfg.rdkafka)
    with_stats(settings)
    return settings


def consumer_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka consumer settings for ``cfg``, for at-least-once consumption.

    Offsets are stored by our code only after a message was handled
    (``enable.auto.offset.store=false``); librdkafka commits stored offsets every 3 s (the
    reference's interval), on revocation and on close.
    """
    settings = _common(cfg, cfg.consumer_client_id)
    receive_max = max(_LIBRDKAFKA_RECEIVE_DEFAULT, cfg.fetch_max + _RECEIVE_HEADROOM)
    settings.update(
        {
            "group.id": cfg.group,
            "partition.assignment.strategy": ASSIGNORS[cfg.strategy],
            "auto.offset.reset": OFFSET_RESET[cfg.initial],
            "isolation.level": ISOLATION[cfg.isolation_level],
            "max.partition.fetch.bytes": cfg.fetch_default,
            "fetch.max.bytes": cfg.fetch_max,
            # librdkafka wants fetch.max.bytes >= message.max.bytes (1000000 by default),
            # which bounds only what a consumer sends.
            "message.max.bytes": min(cfg.fetch_max, 1_000_000),
            "receive.message.max.bytes": receive_max,
            "fetch.wait.max.ms": cfg.max_wait_time_ms,
            "session.timeout.ms": cfg.group_session_timeout_ms,
            # librdkafka sends this as the JoinGroup rebalance timeout (Sarama's
            # Rebalance.Timeout). Handling runs beside the poll loop, so it never expires.
            "max.poll.interval.ms": max(
                cfg.group_rebalance_timeout_ms, cfg.group_session_timeout_ms
            ),
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 3000,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            # librdkafka waits this long before fetching again once its prefetch queue was
            # full (default 1000 ms). The consumer service keeps that queue full on purpose
            # (it is the bounded buffer ahead of the handlers), so the default would stall a
            # backlog drain for ~1 s per refill: 120k instead of 670k messages/s in
            # bench/consumer.py.
            "fetch.queue.backoff.ms": 20,
        }
    )
    if cfg.group_protocol == "consumer":
        # KIP-848: the broker decides session, heartbeats and assignment; librdkafka refuses
        # the classic settings for them.
        del settings["partition.assignment.strategy"], settings["session.timeout.ms"]
        settings["group.protocol"] = "consumer"
        settings["group.remote.assignor"] = REMOTE_ASSIGNORS[cfg.strategy]
    settings.update(cfg.rdkafka)
    with_stats(settings)
    return settings


def share_consumer_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka share consumer settings for ``cfg`` (``groupType=share``, KIP-932).

    Acknowledgement is explicit: each record is accepted, released or rejected after its
    handling (``_consumer/share.py``). Offset reset and isolation are group configs on the
    broker (:func:`share_group_configs`); session, heartbeat and assignment are the broker's.
    """
    settings = _common(cfg, cfg.consumer_client_id)
    # Not supported by librdkafka's share consumer (it resolves topics by id).
    del settings["allow.auto.create.topics"]
    settings.update(
        {
            "group.id": cfg.group,
            "share.acknowledgement.mode": "explicit",
            "max.poll.records": cfg.batch if cfg.batch > 0 else SHARE_POLL_RECORDS,
            "max.partition.fetch.bytes": cfg.fetch_default,
            "fetch.max.bytes": cfg.fetch_max,
            "message.max.bytes": min(cfg.fetch_max, 1_000_000),
            "receive.message.max.bytes": max(
                _LIBRDKAFKA_RECEIVE_DEFAULT, cfg.fetch_max + _RECEIVE_HEADROOM
            ),
            "fetch.wait.max.ms": cfg.max_wait_time_ms,
            "max.poll.interval.ms": max(
                cfg.group_rebalance_timeout_ms, cfg.group_session_timeout_ms
            ),
        }
    )
    settings.update(cfg.rdkafka)
    return settings


def share_group_configs(cfg: KafkaConfig) -> dict[str, str]:
    """Group configs a share group member sets on the broker when it starts: the keys of the
    address that a share consumer cannot set itself, where they differ from the defaults
    (which are the broker's: latest, read_uncommitted)."""
    configs = {}
    if cfg.initial != "newest":
        configs["share.auto.offset.reset"] = OFFSET_RESET[cfg.initial]
    if cfg.isolation_level != "ReadUncommitted":
        configs["share.isolation.level"] = ISOLATION[cfg.isolation_level]
    return configs


def admin_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings of an AdminClient (or a look-up consumer) on ``cfg``'s cluster."""
    settings = _common(cfg, cfg.client_id)
    settings.update(cfg.rdkafka)
    return settings


def redact_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """librdkafka settings fit to show: secret values (passwords, keys) replaced."""
    return {k: (MASK if v and is_secret_key(k) else v) for k, v in settings.items()}


# -- librdkafka's own judgement, at parse time ---------------------------------------


def check_rdkafka_settings(settings: Mapping[str, Any]) -> None:
    """Let librdkafka judge pass-through settings now, with its own message, not at first use.

    Text librdkafka cannot take and settings that need Python objects are refused first:
    neither may reach confluent-kafka (a surrogate in a name crashes it).
    """
    for name, value in settings.items():
        key = RDKAFKA_PREFIX + str(name)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"key {key!r}: a librdkafka property name is text", key=key)
        check_text(key, name, is_name=True)
        if is_object_setting(name):
            raise ConfigError(
                f"key {key!r} is a confluent-kafka callback or object setting, which an "
                f"address cannot set; allowed: rdkafka.<librdkafka property> with a text value",
                key=key,
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(
                f"key {key!r}: the value must be text or a number, got {type(value).__name__}",
                key=key,
            )
        if isinstance(value, str):
            check_text(key, value)
    quiet = logging.getLogger("trpc_kafka.config.check")
    quiet.disabled = True  # property-kind warnings of a throwaway instance are noise
    for name, value in settings.items():
        try:
            # No bootstrap servers: the instance never connects anywhere.
            Producer({name: value, "logger": quiet})
        except (KafkaException, TypeError, ValueError) as exc:
            err = kafka_error_of(exc)
            text = str(exc) if err is None else err.str()
            secret = is_secret_key(name)
            if secret and str(value):
                text = text.replace(str(value), MASK)
            shown = MASK if secret else shorten(str(value))
            raise ConfigError(
                f"key {RDKAFKA_PREFIX + name!r} (value {shown!r}) rejected by librdkafka: "
                f"{text.strip()}",
                key=RDKAFKA_PREFIX + name,
            ) from None


def check_tls_files(cfg: KafkaConfig) -> None:
    """Let librdkafka load the CA, certificate and key now (a wrong key password, a file that
    is no PEM), with its own message, instead of failing at first use."""
    if not (cfg.tls_ca_file or cfg.tls_cert_file):
        return
    settings = tls_settings(cfg)
    try:
        # No bootstrap servers: the instance never connects anywhere.
        Producer({"security.protocol": "SSL", **settings, "log_level": 0})
    except KafkaException as exc:
        keys = [
            spec.key
            for spec in TLS_SPECS
            if spec.key != "tlsVerifyHostname" and getattr(cfg, spec.field)
        ]
        err = kafka_error_of(exc)
        text = str(exc) if err is None else err.str()
        if cfg.tls_key_password:
            text = text.replace(cfg.tls_key_password, MASK)
        if "ssl.key.location" in text:
            text += (
                " (the private key of tlsKeyFile cannot be read: it is no PEM key, or it is "
                "encrypted and tlsKeyPassword is missing or wrong)"
            )
        raise ConfigError(
            f"keys {', '.join(map(repr, keys))}: librdkafka cannot use the TLS files: {text}",
            key=keys[0],
        ) from None
