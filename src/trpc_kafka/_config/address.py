"""The Kafka address: ``kafka://host:port,...?key=value&...`` parsed into a typed config.

One parser for both sides. A producer target carries the ``kafka://`` scheme, a consumer
service address does not; both forms are accepted everywhere. Every key of the reference
plugin (tRPC-Go kafka) is known here, with the reference's defaults. Parsing converts text to
typed values; :meth:`KafkaConfig.validate` checks ranges and combinations, so configs built in
code (``get_default_config()`` then ``register_addr_config``) meet the same rules.

Values are percent-decoded (``%26`` is ``&``) so passwords may hold any character; ``+`` stays
``+``.

Nothing reaches librdkafka unchecked: lone surrogates and NUL are refused in every key, value
and host (a surrogate in a property name crashed confluent-kafka); integers are ASCII digits
within librdkafka's range for the setting they become; confluent-kafka's callback settings
(``rdkafka.error_cb``...) are refused. Every error is a ConfigError naming the key.

Security: ``mechanism``/``user``/``password`` authenticate with SASL; ``protocol`` is the security
protocol; the ``tls*`` keys configure TLS (CA bundle, client certificate and key, host name
verification). Any ``tls*`` key implies TLS: ``protocol`` then defaults to SSL, or SASL_SSL with
a ``mechanism``. Missing or contradicting pieces are ConfigErrors naming what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import unquote

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.secrets import MASK, is_secret_key, redact_text

SCHEME: Final = "kafka://"
RDKAFKA_PREFIX: Final = "rdkafka."

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
    # -- group type and protocol (issue 14): keys groupType, groupProtocol ------------------
    group_type: GroupType = "consumer"  # share: a KIP-932 share group member (_consumer/share.py)
    group_protocol: GroupProtocol = "classic"  # consumer: KIP-848, broker-side assignment
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
            for spec in _TLS_SPECS
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
            if f.name in _SECRET_FIELDS:
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
        self._validate(_SPEC_DEFAULTS)

    def _validate(self, specs: Sequence[tuple[_Spec, Any]]) -> None:
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
            _check_host(broker, discover=bool(self.discover))
        if self.discover:
            if not self.namespace:
                raise ConfigError(
                    f"key 'discover' (value {self.discover!r}) needs key 'namespace' as well",
                    key="namespace",
                )
            if self.discover not in _discoveries:
                raise ConfigError(
                    f"key 'discover': no service discovery named {self.discover!r} is "
                    f"registered; registered: {', '.join(sorted(_discoveries)) or '(none)'}; "
                    f"register it with trpc_kafka.register_discovery",
                    key="discover",
                    value=self.discover,
                )
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
        validate_group_mode(self)

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


def get_default_config() -> KafkaConfig:
    """A new config holding the reference plugin's defaults (no brokers, no topics)."""
    return KafkaConfig()


# -- key specifications -----------------------------------------------------------------

Converter = Callable[["_Spec", str], Any]
Checker = Callable[["_Spec", Any], None]


@dataclass(frozen=True)
class _Spec:
    key: str  # the address key, spelled as the reference spells it
    field: str  # the KafkaConfig attribute
    convert: Converter
    check: Checker | None = None
    allowed: str = ""  # what is allowed, for error messages
    choices: Mapping[str, str] | None = None  # accepted spellings
    low: float | None = None
    high: float | None = None


def _fail(spec: _Spec, raw: object, reason: str = "") -> ConfigError:
    secret = is_secret_key(spec.key)
    shown = MASK if secret else _shorten(str(raw))
    reason = reason or f"allowed: {spec.allowed}"
    return ConfigError(
        f"invalid value {shown!r} for key {spec.key!r}; {reason}",
        key=spec.key,
        value=None if secret else str(raw),
    )


def _to_str(spec: _Spec, raw: str) -> str:
    return raw


def _to_list(spec: _Spec, raw: str) -> list[str]:
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items):
        raise _fail(spec, raw, "allowed: a comma-separated list of non-empty names")
    return items


# ASCII digits only: int() would also take other scripts' digits and any length (a ValueError
# past 4300 digits). Every integer key fits in 19 digits; longer is out of range.
_INT_RE: Final = re.compile(r"[+-]?[0-9]{1,19}")
_FLOAT_RE: Final = re.compile(
    r"[+-]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,3})?"
)


def _to_int(spec: _Spec, raw: str) -> int:
    if not _INT_RE.fullmatch(raw):
        if re.fullmatch(r"[+-]?[0-9]+", raw):
            raise _fail(spec, raw, f"out of range; allowed: {spec.allowed}")
        raise _fail(spec, raw)
    return int(raw)


def _to_float(spec: _Spec, raw: str) -> float:
    if not _FLOAT_RE.fullmatch(raw):
        raise _fail(spec, raw)
    value = float(raw)
    if not math.isfinite(value):
        raise _fail(spec, raw, f"out of range; allowed: {spec.allowed}")
    return value


# Go's strconv.ParseBool spellings, which the reference accepts.
_BOOLS: Final = {
    "1": True,
    "t": True,
    "T": True,
    "true": True,
    "TRUE": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "false": False,
    "FALSE": False,
    "False": False,
}


# The Go plugin produces asynchronously only for async=1; any other value (true, yes) silently
# means synchronous there. So an address means the same in both languages, only 0 and 1 are
# accepted here.
_ASYNC_VALUES: Final = {"1": True, "0": False}


def _to_async(spec: _Spec, raw: str) -> bool:
    try:
        return _ASYNC_VALUES[raw]
    except KeyError:
        hint = (
            " (the Go plugin would read it as synchronous: only 1 is async there)"
            if raw in _BOOLS or raw.lower() in ("yes", "no", "on", "off")
            else ""
        )
        raise _fail(spec, raw, f"allowed: {spec.allowed}{hint}") from None


def _to_bool(spec: _Spec, raw: str) -> bool:
    try:
        return _BOOLS[raw]
    except KeyError:
        raise _fail(spec, raw) from None


def _to_choice(spec: _Spec, raw: str) -> str:
    assert spec.choices is not None
    try:
        return spec.choices[raw]
    except KeyError:
        raise _fail(spec, raw) from None


def _check_range(spec: _Spec, value: float | None) -> None:
    if value is None:
        return
    if (
        not math.isfinite(value)
        or (spec.low is not None and value < spec.low)
        or (spec.high is not None and value > spec.high)
    ):
        raise _fail(spec, value)


def _check_choice(spec: _Spec, value: str) -> None:
    assert spec.choices is not None
    if value not in spec.choices.values():
        raise _fail(spec, value)


def _check_type(kind: type | tuple[type, ...]) -> Checker:
    def check(spec: _Spec, value: Any) -> None:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _fail(spec, value, f"expected {spec.allowed}")

    return check


# Kafka's legal topic names; anything else fails only at run time, as an unknown topic error.
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TOPICS: Final = "topic names of 1 to 249 characters a-z A-Z 0-9 . _ -"
_TOPIC_ALLOWED: Final = "a topic name (1 to 249 characters a-z A-Z 0-9 . _ -)"


def topic_name_problem(name: str) -> str | None:
    """Why ``name`` is not a legal Kafka topic name, or None when it is."""
    if name in (".", "..") or not _TOPIC_RE.fullmatch(name):
        return f"allowed: {_TOPICS}, not . or .."
    return None


def _check_topics(spec: _Spec, value: Any) -> None:
    names = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        return
    for name in names:
        if not isinstance(name, str):
            raise _fail(spec, value, f"allowed: {spec.allowed}")
        problem = topic_name_problem(name) if name else None
        if problem is not None:
            raise _fail(spec, name, problem)
        if not name and isinstance(value, list):
            raise _fail(spec, value, "allowed: a list of non-empty names")


_VERSION_RE: Final = re.compile(r"\d+\.\d+\.\d+(\.\d+)?")


def _check_version(spec: _Spec, value: Any) -> None:
    if not isinstance(value, str) or not _VERSION_RE.fullmatch(value):
        raise _fail(spec, value)
    if tuple(int(p) for p in value.split(".")[:2]) < (0, 10):
        raise _fail(
            spec,
            value,
            "Kafka versions before 0.10.0 are not supported by librdkafka "
            "with record headers; allowed: 0.10.0.0 or later",
        )


def _int(
    key: str, name: str, low: int | None = 0, high: int | None = None, *, optional: bool = False
) -> _Spec:
    if low is not None and high is not None:
        allowed = f"an integer from {low} to {high}"
    elif low is not None:
        allowed = f"an integer >= {low}"
    else:
        allowed = "an integer"

    def check(spec: _Spec, value: Any) -> None:
        if value is None and optional:
            return
        _check_type(int)(spec, value)
        _check_range(spec, value)

    return _Spec(key, name, _to_int, check, allowed, low=low, high=high)


def _bool(key: str, name: str) -> _Spec:
    return _Spec(
        key, name, _to_bool, _check_type(bool), "true or false (also 1/0, t/f, TRUE/FALSE)"
    )


def _choice(key: str, name: str, *values: str, aliases: Mapping[str, str] | None = None) -> _Spec:
    choices = {v: v for v in values}
    choices.update(aliases or {})
    return _Spec(key, name, _to_choice, _check_choice, " | ".join(values), choices=choices)


def _text(key: str, name: str) -> _Spec:
    return _Spec(key, name, _to_str, _check_type(str), "a string")


def _check_optional_choice(spec: _Spec, value: Any) -> None:
    if value != "":  # empty: the feature is off (no SASL)
        _check_choice(spec, value)


def _optional_choice(key: str, name: str, *values: str) -> _Spec:
    return dataclasses.replace(_choice(key, name, *values), check=_check_optional_choice)


def _check_limiter_rate(spec: _Spec, value: Any) -> None:
    if value is None:
        return
    _check_type((int, float))(spec, value)
    _check_range(spec, value)


_SPEC_LIST: Final = [
    _text("clientid", "client_id"),
    _Spec("topic", "topic", _to_str, _check_topics, _TOPIC_ALLOWED),
    _Spec("topics", "topics", _to_list, _check_topics, f"a comma-separated list of {_TOPICS}"),
    _text("group", "group"),
    _Spec(
        "async",
        "async_produce",
        _to_async,
        _check_type(bool),
        "1 (asynchronous) or 0 (synchronous), as in the Go plugin",
    ),
    _choice("compression", "compression", "none", "gzip", "snappy", "lz4", "zstd"),
    _Spec(
        "version",
        "version",
        _to_str,
        _check_version,
        "a Kafka version such as 1.1.1.0, 2.8.0 or 0.10.2.0",
    ),
    _choice("strategy", "strategy", "sticky", "range", "roundrobin"),
    _choice("partitioner", "partitioner", "random", "roundrobin", "hash"),
    _int("fetchDefault", "fetch_default", 1, 1_000_000_000),
    # librdkafka's fetch.max.bytes range; the low bound is message.max.bytes' (see rdkafka.py).
    _int("fetchMax", "fetch_max", 1000, 2_147_483_135),
    # librdkafka's message.max.bytes range.
    _int("maxMessageBytes", "max_message_bytes", 1000, 1_000_000_000),
    _int("flushMessages", "flush_messages", 0, 1_000_000),
    _int("flushMaxMessages", "flush_max_messages", 0, 1_000_000),
    _int("flushBytes", "flush_bytes", 0, 2_147_483_647),
    # linger.ms: librdkafka wants it below message.timeout.ms (300000 by default).
    _int("flushFrequency", "flush_frequency_ms", 0, 299_999),
    _choice("initial", "initial", "newest", "oldest"),
    _int("maxWaitTime", "max_wait_time_ms", 0, 300_000),
    _int("batch", "batch", 0, 1_000_000),
    _int("batchFlush", "batch_flush_ms", 1, 3_600_000),
    _int("requiredAcks", "required_acks", -1, 1),
    _int("maxRetry", "max_retry", 0, 2_147_483_647, optional=True),
    # librdkafka's retry.backoff.ms is at most 300000 (0 is sent as 1).
    _int("retryInterval", "retry_interval_ms", 0, 300_000, optional=True),
    _bool("trpcMeta", "trpc_meta"),
    _bool("idempotent", "idempotent"),
    _int("netMaxOpenRequests", "net_max_open_requests", 1, 1_000_000),
    _int("maxProcessingTime", "max_processing_time_ms", 1, 3_600_000),
    _int("netDailTimeout", "net_dial_timeout_ms", 1000, 2_147_483_647),
    _int("netReadTimeout", "net_read_timeout_ms", 10, 300_000),
    _int("netWriteTimeout", "net_write_timeout_ms", 10, 300_000),
    # The broker refuses a JoinGroup outside group.min/max.session.timeout.ms, by default
    # 6000..1800000: caught here instead of as "Invalid session timeout" at run time.
    _int("groupSessionTimeout", "group_session_timeout_ms", 6000, 1_800_000),
    _int("groupRebalanceTimeout", "group_rebalance_timeout_ms", 1, 86_400_000),
    _int("groupRebalanceRetryMax", "group_rebalance_retry_max", 0, 1_000_000),
    _choice("isolationLevel", "isolation_level", "ReadUncommitted", "ReadCommitted"),
    _int("metadataRetryMax", "metadata_retry_max", 0, 1_000_000),
    _int("metadataRetryBackoff", "metadata_retry_backoff_ms", 0, 3_600_000),
    # Seconds; librdkafka's topic.metadata.refresh.interval.ms is at most 3600000.
    _int("metadataRefreshFrequency", "metadata_refresh_frequency_s", 0, 3600),
    _bool("metadataFull", "metadata_full"),
    _bool("metadataAllowAutoTopicCreation", "metadata_allow_auto_topic_creation"),
    _text("user", "user"),
    _text("password", "password"),
    _optional_choice("mechanism", "mechanism", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"),
    _optional_choice("protocol", "protocol", "SASL_PLAINTEXT", "SASL_SSL", "SSL", "PLAINTEXT"),
    _text("tlsCAFile", "tls_ca_file"),
    _text("tlsCertFile", "tls_cert_file"),
    _text("tlsKeyFile", "tls_key_file"),
    _text("tlsKeyPassword", "tls_key_password"),
    _bool("tlsVerifyHostname", "tls_verify_hostname"),
    _text("discover", "discover"),
    _text("namespace", "namespace"),
    _Spec(
        "limiterRate",
        "limiter_rate",
        _to_float,
        _check_limiter_rate,
        "a number of messages per second >= 0",
        low=0,
    ),
    _int("limiterBurst", "limiter_burst", 0, 2_147_483_647),
    _Spec("deadLetterTopic", "dead_letter_topic", _to_str, _check_topics, _TOPIC_ALLOWED),
    # -- group type and protocol (issue 14) --
    _choice("groupType", "group_type", "consumer", "share"),
    _choice("groupProtocol", "group_protocol", "classic", "consumer"),
]


_SPECS: Final[dict[str, _Spec]] = {s.key: s for s in _SPEC_LIST}
ADDRESS_KEYS: Final = tuple(_SPECS)
_SECRET_FIELDS: Final = frozenset(s.field for s in _SPEC_LIST if is_secret_key(s.key))
_TLS_SPECS: Final = tuple(s for s in _SPEC_LIST if s.key.startswith("tls"))
_DEFAULTS: Final = KafkaConfig()
_SPEC_DEFAULTS: Final = tuple((s, getattr(_DEFAULTS, s.field)) for s in _SPEC_LIST)
_SPEC_DEFAULT: Final = {s.key: default for s, default in _SPEC_DEFAULTS}
_DEFAULT_FIELDS: Final = dict(vars(_DEFAULTS))


# -- parsing ------------------------------------------------------------------------------

_HOST_RE: Final = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})")


def _check_host(host: str, *, discover: bool = False) -> None:
    if discover:
        if not host:
            raise ConfigError(
                "empty service name before '?' (key 'discover' is set)", key="hosts", value=host
            )
        return
    m = _HOST_RE.fullmatch(host)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ConfigError(
            f"invalid broker {host!r}; allowed: host:port with a port from 1 to 65535, "
            f"brokers separated by commas",
            key="hosts",
            value=host,
        )


def strip_scheme(address: str) -> str:
    return address[len(SCHEME) :] if address.startswith(SCHEME) else address


def redact_address(address: str) -> str:
    """The address with secret values (password, tlsKeyPassword, rdkafka.*secrets) masked."""
    return redact_text(address)


_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# Characters librdkafka cannot take: a lone surrogate has no UTF-8 form (confluent-kafka
# crashes on one in a property name) and NUL ends a C string (the rest would be cut silently).
_BAD_TEXT_RE: Final = re.compile(r"[\ud800-\udfff\x00]")
# confluent-kafka settings whose value is a Python object (callbacks, the logger), not text:
# an address cannot carry one, and a string there raises TypeError deep in confluent-kafka.
_OBJECT_SETTINGS: Final = frozenset(
    {
        "logger",
        "on_delivery",
        "on_commit",
        "opaque",
        "interceptors",
        "default.topic.config",
        "default_topic_conf",
        "ssl_key",
        "ssl_engine_callback_data",
    }
)


def _is_object_setting(name: str) -> bool:
    return name in _OBJECT_SETTINGS or name.endswith(("_cb", "_callback"))


def check_text(key: str, value: str, *, is_name: bool = False) -> None:
    """Reject text librdkafka cannot take (lone surrogates, NUL), naming the key and where.

    ``is_name``: ``value`` is the key's own name (as written in the address).
    """
    m = _BAD_TEXT_RE.search(value)
    if m is None:
        return
    what = "a NUL character" if m.group() == "\x00" else f"a lone surrogate {m.group()!r}"
    secret = is_secret_key(key)
    subject = (
        f"the key name {_shorten(key)!r}"
        if is_name
        else f"key {key!r} (value {MASK if secret else _shorten(value)!r})"
    )
    raise ConfigError(
        f"{subject} holds {what} at position {m.start()}; "
        f"allowed: text without NUL and valid as UTF-8",
        key=key,
        value=None if secret or is_name else value,
    )


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_address(address: str) -> KafkaConfig:
    """Parse ``[kafka://]host:port[,host:port...][?key=value&...]`` into a validated config.

    Raises ConfigError naming the key, the value and what is allowed.
    """
    if not isinstance(address, str):
        raise ConfigError(f"address must be a string, got {type(address).__name__}", key="address")
    if not address.strip():
        raise ConfigError(
            "the address is empty (is the 'address' / 'target' key missing?); expected "
            "[kafka://]host:port[,host:port...]?topics=...&group=... for a consumer or "
            "kafka://host:port?topic=... for a producer",
            key="address",
            value="",
        )
    stripped = address.strip()
    scheme = _SCHEME_RE.match(stripped)
    if scheme is not None and scheme.group(1) != "kafka":
        raise ConfigError(
            f"unknown scheme {scheme.group(1)!r} in address {_shorten(redact_address(address))!r}"
            f", expected kafka:// (or no scheme)",
            key="address",
            value=scheme.group(1),
        )
    body = strip_scheme(stripped)
    hosts_part, sep, query = body.partition("?")
    check_text("hosts", hosts_part)
    # A copy of the defaults without running the 60-field __init__ (a file may hold 40k).
    cfg = object.__new__(KafkaConfig)
    cfg.__dict__.update(_DEFAULT_FIELDS)
    cfg.topics, cfg.rdkafka = [], {}
    seen: set[str] = set()
    if sep and not query:
        raise ConfigError(
            f"address {_shorten(redact_address(address))!r} ends with '?' but has no keys",
            key="address",
        )
    for item in query.split("&") if query else ():
        if not item:
            raise ConfigError(
                f"address {_shorten(redact_address(address))!r} has an empty '&&' item",
                key="address",
            )
        raw_key, eq, raw_value = item.partition("=")
        key = unquote(raw_key)
        check_text(key, key, is_name=True)
        if not eq:
            raise ConfigError(
                f"key {_shorten(key)!r} has no '=value' in address "
                f"{_shorten(redact_address(address))!r}",
                key=key,
            )
        if key in seen:
            raise ConfigError(f"key {_shorten(key)!r} is given twice", key=key)
        seen.add(key)
        value = unquote(raw_value)
        check_text(key, value)
        if value == "":
            raise ConfigError(f"key {_shorten(key)!r} has an empty value", key=key, value="")
        if key.startswith(RDKAFKA_PREFIX) and len(key) > len(RDKAFKA_PREFIX):
            cfg.rdkafka[key[len(RDKAFKA_PREFIX) :]] = value
            continue
        spec = _SPECS.get(key)
        if spec is None:
            raise ConfigError(
                f"unknown key {_shorten(key)!r}; allowed keys: {', '.join(ADDRESS_KEYS)}, "
                f"or rdkafka.<librdkafka property>",
                key=key,
            )
        setattr(cfg, spec.field, spec.convert(spec, value))
    if not cfg.protocol and any(spec.key in seen for spec in _TLS_SPECS):
        # Any tls* key implies TLS, even tlsVerifyHostname=true alone.
        cfg.protocol = "SASL_SSL" if cfg.mechanism else "SSL"
    cfg.brokers = [h.strip() for h in hosts_part.split(",")] if hosts_part.strip() else []
    if not cfg.brokers:
        raise ConfigError(
            f"address {_shorten(redact_address(address))!r} names no broker; expected "
            f"host:port[,host:port...] before '?'",
            key="hosts",
            value="",
        )
    cfg._validate([(spec, _SPEC_DEFAULT[spec.key]) for spec in map(_SPECS.get, seen) if spec])
    if cfg.rdkafka:
        check_rdkafka_settings(cfg.rdkafka)
    check_tls_files(cfg)
    return cfg


def check_rdkafka_settings(settings: Mapping[str, Any]) -> None:
    """Let librdkafka judge pass-through settings now, with its own message, not at first use.

    Text librdkafka cannot take and settings that need Python objects are refused first:
    neither may reach confluent-kafka (a surrogate in a name crashes it).
    """
    from confluent_kafka import KafkaException, Producer

    for name, value in settings.items():
        key = RDKAFKA_PREFIX + str(name)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"key {key!r}: a librdkafka property name is text", key=key)
        check_text(key, name, is_name=True)
        if _is_object_setting(name):
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
            err = exc.args[0] if exc.args else exc
            text = err.str() if hasattr(err, "str") else str(err)
            secret = is_secret_key(name)
            if secret and str(value):
                text = text.replace(str(value), MASK)
            shown = MASK if secret else _shorten(str(value))
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
    from confluent_kafka import KafkaException, Producer

    from trpc_kafka._config.rdkafka import tls_settings

    settings = tls_settings(cfg)
    try:
        # No bootstrap servers: the instance never connects anywhere.
        Producer({"security.protocol": "SSL", **settings, "log_level": 0})
    except KafkaException as exc:
        keys = [
            spec.key
            for spec in _TLS_SPECS
            if spec.key != "tlsVerifyHostname" and getattr(cfg, spec.field)
        ]
        text = exc.args[0].str()
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


# -- group type and protocol (issue 14: keys groupType, groupProtocol) -------------------------

# librdkafka refuses these settings for a consumer of the new protocol (KIP-848): the broker
# decides session, heartbeat and assignment.
_BROKER_SIDE_SETTINGS: Final = ("session.timeout.ms", "heartbeat.interval.ms")
_CONSUMER_PROTOCOL_REFUSED: Final = (
    *_BROKER_SIDE_SETTINGS,
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


def validate_group_mode(cfg: KafkaConfig) -> None:
    """The combinations of ``groupType`` / ``groupProtocol`` with other keys that cannot work.

    Keys are compared with their defaults (a code-built config cannot tell "set" from
    "default"), so only a value other than the default is refused.
    """
    if "group.protocol" in cfg.rdkafka:
        raise ConfigError(
            "key 'rdkafka.group.protocol': use key 'groupProtocol' (classic or consumer) or "
            "'groupType=share' instead, which also adapt the settings that depend on it",
            key="rdkafka.group.protocol",
        )
    if cfg.group_type == "share":
        what = "groupType=share (a KIP-932 share group)"
        if cfg.group_protocol != "classic":
            raise ConfigError(
                f"key 'groupProtocol' ({cfg.group_protocol}) does not apply to {what}: share "
                f"groups have a protocol of their own; remove 'groupProtocol'",
                key="groupProtocol",
                value=cfg.group_protocol,
            )
        _refuse_default_only(cfg, what, "strategy", "strategy", "the broker assigns partitions")
        _refuse_default_only(
            cfg,
            what,
            "groupSessionTimeout",
            "group_session_timeout_ms",
            "the session timeout is the group config share.session.timeout.ms on the broker",
        )
        _refuse_rdkafka(cfg, what, _SHARE_REFUSED)
    elif cfg.group_protocol == "consumer":
        what = "groupProtocol=consumer (KIP-848)"
        if cfg.strategy == "roundrobin":
            raise ConfigError(
                f"key 'strategy' (roundrobin) does not work with {what}: the broker's "
                f"assignors are uniform and range; use strategy=sticky (the uniform assignor) "
                f"or strategy=range",
                key="strategy",
                value=cfg.strategy,
            )
        _refuse_default_only(
            cfg,
            what,
            "groupSessionTimeout",
            "group_session_timeout_ms",
            "the session timeout is the broker's group.consumer.session.timeout.ms",
        )
        _refuse_rdkafka(cfg, what, _CONSUMER_PROTOCOL_REFUSED)


def _refuse_default_only(cfg: KafkaConfig, what: str, key: str, name: str, why: str) -> None:
    value = getattr(cfg, name)
    if value != _DEFAULT_FIELDS[name]:
        raise ConfigError(
            f"key {key!r} ({value}) cannot be set with {what}: {why}; remove {key!r}",
            key=key,
            value=str(value),
        )


def _refuse_rdkafka(cfg: KafkaConfig, what: str, refused: Sequence[str]) -> None:
    for name in refused:
        if name in cfg.rdkafka:
            key = RDKAFKA_PREFIX + name
            raise ConfigError(
                f"key {key!r} cannot be set with {what}: librdkafka refuses it there (the "
                f"broker or this library decides it); remove {key!r}",
                key=key,
            )


# -- keys of the other side ------------------------------------------------------------------

Side = Literal["producer", "consumer"]
_SIDE_ONLY: Final[dict[Side, frozenset[str]]] = {
    "producer": frozenset(
        [
            "topic",
            "async",
            "compression",
            "partitioner",
            "maxMessageBytes",
            "flushMessages",
            "flushMaxMessages",
            "flushBytes",
            "flushFrequency",
            "requiredAcks",
            "idempotent",
        ]
    ),
    "consumer": frozenset(
        [
            "topics",
            "group",
            "strategy",
            "initial",
            "fetchDefault",
            "fetchMax",
            "maxWaitTime",
            "batch",
            "batchFlush",
            "maxProcessingTime",
            "groupSessionTimeout",
            "groupRebalanceTimeout",
            "groupRebalanceRetryMax",
            "isolationLevel",
            "limiterRate",
            "limiterBurst",
            "deadLetterTopic",
            "groupType",
            "groupProtocol",
        ]
    ),
}
_SIDE_SPECS: Final = {
    side: tuple((spec, default) for spec, default in _SPEC_DEFAULTS if spec.key in keys)
    for side, keys in _SIDE_ONLY.items()
}
_warned_sides: set[tuple[str, str]] = set()
_logger = logging.getLogger("trpc_kafka.config")


def other_side_keys(cfg: KafkaConfig, side: Side) -> list[str]:
    """The keys set in ``cfg`` that only the other side reads (``group`` on a producer)."""
    return [
        spec.key
        for spec, default in _SIDE_SPECS["consumer" if side == "producer" else "producer"]
        if getattr(cfg, spec.field) != default
    ]


def warn_other_side_keys(cfg: KafkaConfig, side: Side, where: str) -> None:
    """Warn once per place about keys a ``side`` ignores (the Go plugin ignores them silently;
    a Go file must keep loading, so this is a warning, not an error)."""
    keys = other_side_keys(cfg, side)
    if not keys or (where, side) in _warned_sides:
        return
    _warned_sides.add((where, side))
    _logger.warning(
        "%s: key(s) %s only apply to a %s and are ignored by this %s",
        where,
        ", ".join(keys),
        "consumer" if side == "producer" else "producer",
        side,
    )


# -- configs registered in code --------------------------------------------------------

_registered: dict[str, KafkaConfig] = {}
_registered_lock = threading.Lock()


def register_addr_config(address: str, config: KafkaConfig) -> None:
    """Use ``config`` wherever ``address`` (e.g. ``fake_address``) appears in a YAML file.

    The config is validated now; a later change to the object is not seen (it is copied).
    """
    config.validate()
    if not config.brokers and not config.discover:
        raise ConfigError(
            f"config registered for address {address!r} has no brokers", key="brokers"
        )
    if config.rdkafka:
        check_rdkafka_settings(config.rdkafka)
    check_tls_files(config)
    with _registered_lock:
        _registered[strip_scheme(address)] = config.copy()


def unregister_addr_config(address: str) -> None:
    with _registered_lock:
        _registered.pop(strip_scheme(address), None)


def is_registered(address: str) -> bool:
    """Whether a config is registered for ``address`` (a placeholder such as fake_address)."""
    return strip_scheme(address.strip()) in _registered


def resolve_address(address: str) -> KafkaConfig:
    """The config registered for ``address``, else the parsed address. Always a fresh copy."""
    registered = _registered.get(strip_scheme(address.strip()))
    if registered is not None:
        return registered.copy()
    return parse_address(address)


# -- service discovery ---------------------------------------------------------------------

Discovery = Callable[[str, str], Sequence[str]]
"""``resolve(service_name, namespace) -> ["host:port", ...]``; may block (it runs off the loop)."""

_discoveries: dict[str, Discovery] = {}


def register_discovery(name: str, resolve: Discovery) -> None:
    """Make ``discover=<name>`` usable in addresses (reference: a registered selector)."""
    if not name:
        raise ValueError("discovery name must not be empty")
    _discoveries[name] = resolve


def resolve_brokers(cfg: KafkaConfig) -> list[str]:
    """The bootstrap brokers: the hosts of the address, or what its discovery returns.

    With ``discover`` the first host is a service name, resolved in ``namespace``.
    """
    if not cfg.discover:
        return list(cfg.brokers)
    resolve = _discoveries.get(cfg.discover)
    if resolve is None:
        cfg.validate()  # raises the ConfigError naming the missing discovery
    assert resolve is not None
    service = cfg.brokers[0] if cfg.brokers else ""
    brokers = [str(b) for b in resolve(service, cfg.namespace)]
    if not brokers:
        raise ConfigError(
            f"service discovery {cfg.discover!r} found no broker for {service!r} in "
            f"namespace {cfg.namespace!r}",
            key="discover",
            value=cfg.discover,
        )
    for broker in brokers:
        _check_host(broker)
    return brokers
