"""The typed config of one Kafka address (:class:`KafkaConfig`) and its validation.

Mutable, with the reference plugin's defaults. :meth:`KafkaConfig.validate` checks ranges and
combinations, so configs built in code (``get_default_config()`` then ``register_addr_config``)
meet the same rules as parsed addresses (``parse.py``).

Security: ``mechanism``/``user``/``password`` authenticate with SASL; ``protocol`` is the security
protocol; the ``tls*`` keys configure TLS (CA bundle, client certificate and key, host name
verification). Any ``tls*`` key implies TLS: ``protocol`` then defaults to SSL, or SASL_SSL with
a ``mechanism``. Missing or contradicting pieces are ConfigErrors naming what is missing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from trpc_kafka._config.discovery import check_discovery
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.keys import (
    RDKAFKA_PREFIX,
    SECRET_FIELDS,
    SPEC_LIST,
    TLS_SPECS,
    Spec,
    check_host,
    check_text,
)
from trpc_kafka._config.secrets import MASK, is_secret_key

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
Strategy = Literal["sticky", "range", "roundrobin"]
Partitioner = Literal["random", "roundrobin", "hash"]
Initial = Literal["newest", "oldest"]
IsolationLevel = Literal["ReadUncommitted", "ReadCommitted"]
GroupType = Literal["consumer", "share"]
GroupProtocol = Literal["classic", "consumer"]

# Side defaults of the two keys whose default differs between producer and consumer.
PRODUCER_MAX_RETRY: Final = 3
PRODUCER_RETRY_INTERVAL_MS: Final = 100
CONSUMER_MAX_RETRY: Final = 0  # 0 = retry the handler forever (reference)
CONSUMER_RETRY_INTERVAL_MS: Final = 3000
DEFAULT_CLIENT_ID: Final = "trpcgo"


@dataclass
class KafkaConfig:
    """Everything one address says, with the reference plugin's defaults.

    Mutable on purpose: the reference's ``GetDefaultConfig`` is changed in code and then
    registered for a placeholder address (``register_addr_config("fake_address", cfg)``).
    """

    brokers: list[str] = field(default_factory=list)
    client_id: str = DEFAULT_CLIENT_ID
    # Producer.
    topic: str = ""
    async_produce: bool = False
    compression: Compression = "gzip"
    partitioner: Partitioner = "random"
    max_message_bytes: int = 131072
    flush_messages: int = 0
    flush_max_messages: int = 0
    flush_bytes: int = 0
    flush_frequency_ms: int = 0
    required_acks: int = -1
    idempotent: bool = False
    # Consumer.
    topics: list[str] = field(default_factory=list)
    group: str = ""
    strategy: Strategy = "sticky"
    initial: Initial = "newest"
    fetch_default: int = 524288
    fetch_max: int = 1048576
    max_wait_time_ms: int = 1000
    batch: int = 0
    batch_flush_ms: int = 2000
    max_processing_time_ms: int = 100
    group_session_timeout_ms: int = 10000
    group_rebalance_timeout_ms: int = 60000
    group_rebalance_retry_max: int = 4
    isolation_level: IsolationLevel = "ReadUncommitted"
    limiter_rate: float | None = None  # messages per second; None = unlimited
    limiter_burst: int = 0
    dead_letter_topic: str = ""  # ours: where a message goes once its retries are exhausted
    group_type: GroupType = "consumer"  # share: a KIP-932 share group member (_consumer/share.py)
    group_protocol: GroupProtocol = "classic"  # consumer: KIP-848, broker-side assignment
    key_concurrency: int = 1  # >1: a partition's keys handled concurrently (_consumer/keyed.py)
    # Both sides.
    version: str = "1.1.1.0"
    max_retry: int | None = None  # None: producer 3, consumer 0 (see the side properties)
    retry_interval_ms: int | None = None  # None: producer 100, consumer 3000
    trpc_meta: bool = False
    net_max_open_requests: int = 5
    net_dial_timeout_ms: int = 30000
    net_read_timeout_ms: int = 30000
    net_write_timeout_ms: int = 30000
    metadata_retry_max: int = 1
    metadata_retry_backoff_ms: int = 1000
    metadata_refresh_frequency_s: int = 120
    metadata_full: bool = False
    metadata_allow_auto_topic_creation: bool = True
    # Security: SASL and TLS.
    user: str = ""
    password: str = field(default="", repr=False)
    mechanism: str = ""
    protocol: str = ""  # empty: PLAINTEXT, SASL_PLAINTEXT with a mechanism, *SSL with tls*
    tls_ca_file: str = ""  # PEM CA bundle that verifies the brokers; empty: the system's
    tls_cert_file: str = ""  # PEM client certificate (mTLS), with tls_key_file
    tls_key_file: str = ""
    tls_key_password: str = field(default="", repr=False)  # of an encrypted tls_key_file
    tls_verify_hostname: bool = True
    # Service discovery.
    discover: str = ""
    namespace: str = ""
    # librdkafka settings passed through as they are (``rdkafka.<name>=<value>``).
    rdkafka: dict[str, str] = field(default_factory=dict)

    # -- side-resolved values ------------------------------------------------------------
    @property
    def producer_max_retry(self) -> int:
        return PRODUCER_MAX_RETRY if self.max_retry is None else self.max_retry

    @property
    def producer_retry_interval_ms(self) -> int:
        if self.retry_interval_ms is None:
            return PRODUCER_RETRY_INTERVAL_MS
        return self.retry_interval_ms

    @property
    def consumer_max_retry(self) -> int:
        return CONSUMER_MAX_RETRY if self.max_retry is None else self.max_retry

    @property
    def consumer_retry_interval_ms(self) -> int:
        if self.retry_interval_ms is None:
            return CONSUMER_RETRY_INTERVAL_MS
        return self.retry_interval_ms

    @property
    def uses_tls(self) -> bool:
        """Whether a ``tls*`` setting is made (so the connection must be TLS)."""
        return bool(self._tls_keys_set())

    def _tls_keys_set(self) -> list[str]:
        return [
            spec.key
            for spec in TLS_SPECS
            if getattr(self, spec.field) != getattr(_DEFAULTS, spec.field)
        ]

    @property
    def security_protocol(self) -> str:
        """The effective security protocol: ``protocol``, else what the other keys imply."""
        if self.protocol:
            return self.protocol
        if self.uses_tls:
            return "SASL_SSL" if self.mechanism else "SSL"
        return "SASL_PLAINTEXT" if self.mechanism else "PLAINTEXT"

    @property
    def consumer_client_id(self) -> str:
        """A consumer left at the default client id uses its group name (reference)."""
        if self.client_id == DEFAULT_CLIENT_ID and self.group:
            return self.group
        return self.client_id

    def __repr__(self) -> str:
        fields = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                value = MASK if value else ""
            elif f.name == "rdkafka":
                value = {k: (MASK if is_secret_key(k) else v) for k, v in value.items()}
            fields.append(f"{f.name}={value!r}")
        return f"KafkaConfig({', '.join(fields)})"

    def copy(self) -> KafkaConfig:
        """A deep-enough copy: lists and dicts are not shared."""
        return dataclasses.replace(
            self, brokers=list(self.brokers), topics=list(self.topics), rdkafka=dict(self.rdkafka)
        )

    def validate(self) -> None:
        """Check ranges and combinations; raises ConfigError naming the key and the value."""
        self._validate(SPEC_DEFAULTS)

    def _validate(self, specs: Sequence[tuple[Spec, Any]]) -> None:
        """``validate`` with the per-key checks of ``specs`` (the parser: the keys it set)."""
        for spec, default in specs:
            value = getattr(self, spec.field)
            if value is default or (type(value) is type(default) and value == default):
                continue  # a default is valid; skipping it keeps a file of 40k addresses fast
            for text in value if isinstance(value, list) else (value,):
                if isinstance(text, str):
                    check_text(spec.key, text)
            if spec.check is not None:
                spec.check(spec, value)
        for broker in self.brokers:
            if not isinstance(broker, str):
                raise ConfigError(f"broker {broker!r} is not a string", key="hosts")
            check_text("hosts", broker)
        for broker in self.brokers:
            check_host(broker, discover=bool(self.discover))
        if self.discover:
            if not self.namespace:
                raise ConfigError(
                    f"key 'discover' (value {self.discover!r}) needs key 'namespace' as well",
                    key="namespace",
                )
            check_discovery(self.discover)
        if self.idempotent and self.required_acks != -1:
            raise ConfigError(
                f"key 'idempotent' is true, so key 'requiredAcks' must be -1 (all in-sync "
                f"replicas), got {self.required_acks}",
                key="requiredAcks",
                value=str(self.required_acks),
            )
        if self.fetch_default > self.fetch_max:
            raise ConfigError(
                f"key 'fetchDefault' ({self.fetch_default}) must not exceed key 'fetchMax' "
                f"({self.fetch_max})",
                key="fetchDefault",
                value=str(self.fetch_default),
            )
        if self.mechanism and not self.user:
            raise ConfigError(
                f"key 'mechanism' ({self.mechanism}) needs key 'user' and key 'password'",
                key="user",
            )
        if (self.user or self.password) and not self.mechanism:
            raise ConfigError(
                "keys 'user'/'password' need key 'mechanism' (SCRAM-SHA-512, SCRAM-SHA-256 "
                "or PLAIN)",
                key="mechanism",
            )
        if self.mechanism and not self.password:
            raise ConfigError(
                f"key 'mechanism' ({self.mechanism}) needs key 'password'", key="password"
            )
        self._validate_protocol()
        self._validate_tls_files()
        self._validate_group_mode()

    def _validate_protocol(self) -> None:
        protocol = self.protocol
        if protocol.startswith("SASL_") and not self.mechanism:
            raise ConfigError(
                f"key 'protocol' ({protocol}) authenticates with SASL: it needs key 'mechanism' "
                f"(SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN), key 'user' and key 'password'",
                key="mechanism",
            )
        if self.mechanism and protocol and not protocol.startswith("SASL_"):
            raise ConfigError(
                f"key 'mechanism' ({self.mechanism}) needs a SASL protocol, but key 'protocol' "
                f"is {protocol}; use SASL_SSL or SASL_PLAINTEXT (or leave 'protocol' out)",
                key="protocol",
                value=protocol,
            )
        if self.uses_tls and protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            given = ", ".join(self._tls_keys_set())
            raise ConfigError(
                f"key 'protocol' is {protocol}, which has no TLS, but TLS keys are set ({given});"
                f" use {'SASL_SSL' if self.mechanism else 'SSL'} (or leave 'protocol' out: the "
                f"TLS keys imply it)",
                key="protocol",
                value=protocol,
            )

    def _validate_tls_files(self) -> None:
        if self.tls_cert_file and not self.tls_key_file:
            raise ConfigError(
                "key 'tlsCertFile' (the client certificate) needs key 'tlsKeyFile' (its private "
                "key)",
                key="tlsKeyFile",
            )
        if self.tls_key_file and not self.tls_cert_file:
            raise ConfigError(
                "key 'tlsKeyFile' (a client private key) needs key 'tlsCertFile' (its certificate)",
                key="tlsCertFile",
            )
        if self.tls_key_password and not self.tls_key_file:
            raise ConfigError(
                "key 'tlsKeyPassword' needs key 'tlsKeyFile' (the encrypted private key) and "
                "key 'tlsCertFile'",
                key="tlsKeyFile",
            )
        for key, path in (
            ("tlsCAFile", self.tls_ca_file),
            ("tlsCertFile", self.tls_cert_file),
            ("tlsKeyFile", self.tls_key_file),
        ):
            if not path:
                continue
            if not os.path.isfile(path):
                what = "is not a file" if os.path.exists(path) else "does not exist"
                raise ConfigError(f"key {key!r}: {path!r} {what}", key=key, value=path)
            if not os.access(path, os.R_OK):
                raise ConfigError(
                    f"key {key!r}: {path!r} is not readable by this process", key=key, value=path
                )

    def _validate_group_mode(self) -> None:
        """The combinations of ``groupType`` / ``groupProtocol`` with other keys that cannot work.

        Keys are compared with their defaults (a code-built config cannot tell "set" from
        "default"), so only a value other than the default is refused.
        """
        if "group.protocol" in self.rdkafka:
            raise ConfigError(
                "key 'rdkafka.group.protocol': use key 'groupProtocol' (classic or consumer) or "
                "'groupType=share' instead, which also adapt the settings that depend on it",
                key="rdkafka.group.protocol",
            )
        if self.key_concurrency != 1:
            self._validate_key_concurrency()
        if self.group_type == "share":
            what = "groupType=share (a KIP-932 share group)"
            if self.group_protocol != "classic":
                raise ConfigError(
                    f"key 'groupProtocol' ({self.group_protocol}) does not apply to {what}: "
                    f"share groups have a protocol of their own; remove 'groupProtocol'",
                    key="groupProtocol",
                    value=self.group_protocol,
                )
            self._refuse_non_default(what, "strategy", "strategy", "the broker assigns partitions")
            self._refuse_non_default(
                what,
                "groupSessionTimeout",
                "group_session_timeout_ms",
                "the session timeout is the group config share.session.timeout.ms on the broker",
            )
            self._refuse_rdkafka(what, _SHARE_REFUSED)
        elif self.group_protocol == "consumer":
            what = "groupProtocol=consumer (KIP-848)"
            if self.strategy == "roundrobin":
                raise ConfigError(
                    f"key 'strategy' (roundrobin) does not work with {what}: the broker's "
                    f"assignors are uniform and range; use strategy=sticky (the uniform "
                    f"assignor) or strategy=range",
                    key="strategy",
                    value=self.strategy,
                )
            self._refuse_non_default(
                what,
                "groupSessionTimeout",
                "group_session_timeout_ms",
                "the session timeout is the broker's group.consumer.session.timeout.ms",
            )
            self._refuse_rdkafka(what, _CONSUMER_PROTOCOL_REFUSED)

    def _validate_key_concurrency(self) -> None:
        value = str(self.key_concurrency)
        if self.batch > 0:
            raise ConfigError(
                f"key 'keyConcurrency' ({value}) does not work with key 'batch' "
                f"({self.batch}): a batch handler takes a partition's records together, in "
                f"offset order; use keyConcurrency=1 (the default) or batch=0",
                key="keyConcurrency",
                value=value,
            )
        if self.group_type == "share":
            raise ConfigError(
                f"key 'keyConcurrency' ({value}) does not work with groupType=share: a share "
                f"group has no per-key order to keep (any member gets any record); scale a "
                f"share group with members, or use keyConcurrency=1 (the default)",
                key="keyConcurrency",
                value=value,
            )

    def _refuse_non_default(self, what: str, key: str, name: str, why: str) -> None:
        value = getattr(self, name)
        if value != getattr(_DEFAULTS, name):
            raise ConfigError(
                f"key {key!r} ({value}) cannot be set with {what}: {why}; remove {key!r}",
                key=key,
                value=str(value),
            )

    def _refuse_rdkafka(self, what: str, refused: Sequence[str]) -> None:
        for name in refused:
            if name in self.rdkafka:
                key = RDKAFKA_PREFIX + name
                raise ConfigError(
                    f"key {key!r} cannot be set with {what}: librdkafka refuses it there (the "
                    f"broker or this library decides it); remove {key!r}",
                    key=key,
                )


# librdkafka refuses these settings for a consumer of the new protocol (KIP-848): the broker
# decides session, heartbeat and assignment.
_CONSUMER_PROTOCOL_REFUSED: Final = (
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
)
# ...and these for a share consumer (KIP-932), where they are group configs or do not apply.
_SHARE_REFUSED: Final = (
    *_CONSUMER_PROTOCOL_REFUSED,
    "group.remote.assignor",
    "auto.offset.reset",
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "enable.partition.eof",
    "fetch.queue.backoff.ms",
    "allow.auto.create.topics",
    "group.instance.id",
    "share.acknowledgement.mode",
)


def get_default_config() -> KafkaConfig:
    """A new config holding the reference plugin's defaults (no brokers, no topics)."""
    return KafkaConfig()


_DEFAULTS: Final = KafkaConfig()
SPEC_DEFAULTS: Final = tuple((s, getattr(_DEFAULTS, s.field)) for s in SPEC_LIST)
"""Every key's spec with its default value (``validate`` skips values left at the default)."""
SPEC_DEFAULT: Final = {s.key: default for s, default in SPEC_DEFAULTS}
DEFAULT_FIELDS: Final = dict(vars(_DEFAULTS))
"""The attributes of a default config (the parser copies them instead of running __init__)."""
