"""The address key table: every key of the reference plugin (tRPC-Go kafka), the attribute it
sets, how its text converts and what it allows; and the checks of text and hosts that reach
librdkafka.

Nothing reaches librdkafka unchecked: lone surrogates and NUL are refused in every key, value
and host (a surrogate in a property name crashed confluent-kafka); integers are ASCII digits
within librdkafka's range for the setting they become; confluent-kafka's callback settings
(``rdkafka.error_cb``...) are refused. Every error is a ConfigError naming the key.

Rows are added here (one ``Spec`` each, in ``SPEC_LIST``), the attribute in ``model.py``, the
librdkafka setting in ``rdkafka.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.secrets import MASK, is_secret_key

SCHEME: Final = "kafka://"
RDKAFKA_PREFIX: Final = "rdkafka."


Converter = Callable[["Spec", str], Any]
Checker = Callable[["Spec", Any], None]


@dataclass(frozen=True)
class Spec:
    key: str  # the address key, spelled as the reference spells it
    field: str  # the KafkaConfig attribute
    convert: Converter
    check: Checker | None = None
    allowed: str = ""  # what is allowed, for error messages
    choices: Mapping[str, str] | None = None  # accepted spellings
    low: float | None = None
    high: float | None = None


def _fail(spec: Spec, raw: object, reason: str = "") -> ConfigError:
    secret = is_secret_key(spec.key)
    shown = MASK if secret else shorten(str(raw))
    reason = reason or f"allowed: {spec.allowed}"
    return ConfigError(
        f"invalid value {shown!r} for key {spec.key!r}; {reason}",
        key=spec.key,
        value=None if secret else str(raw),
    )


def _to_str(spec: Spec, raw: str) -> str:
    return raw


def _to_list(spec: Spec, raw: str) -> list[str]:
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


def _to_int(spec: Spec, raw: str) -> int:
    if not _INT_RE.fullmatch(raw):
        if re.fullmatch(r"[+-]?[0-9]+", raw):
            raise _fail(spec, raw, f"out of range; allowed: {spec.allowed}")
        raise _fail(spec, raw)
    return int(raw)


def _to_float(spec: Spec, raw: str) -> float:
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


def _to_async(spec: Spec, raw: str) -> bool:
    try:
        return _ASYNC_VALUES[raw]
    except KeyError:
        hint = (
            " (the Go plugin would read it as synchronous: only 1 is async there)"
            if raw in _BOOLS or raw.lower() in ("yes", "no", "on", "off")
            else ""
        )
        raise _fail(spec, raw, f"allowed: {spec.allowed}{hint}") from None


def _to_bool(spec: Spec, raw: str) -> bool:
    try:
        return _BOOLS[raw]
    except KeyError:
        raise _fail(spec, raw) from None


def _to_choice(spec: Spec, raw: str) -> str:
    assert spec.choices is not None
    try:
        return spec.choices[raw]
    except KeyError:
        raise _fail(spec, raw) from None


def _check_range(spec: Spec, value: float | None) -> None:
    if value is None:
        return
    if (
        not math.isfinite(value)
        or (spec.low is not None and value < spec.low)
        or (spec.high is not None and value > spec.high)
    ):
        raise _fail(spec, value)


def _check_choice(spec: Spec, value: str) -> None:
    assert spec.choices is not None
    if value not in spec.choices.values():
        raise _fail(spec, value)


def _check_type(kind: type | tuple[type, ...]) -> Checker:
    def check(spec: Spec, value: Any) -> None:
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


def _check_topics(spec: Spec, value: Any) -> None:
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


def _check_version(spec: Spec, value: Any) -> None:
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
) -> Spec:
    if low is not None and high is not None:
        allowed = f"an integer from {low} to {high}"
    elif low is not None:
        allowed = f"an integer >= {low}"
    else:
        allowed = "an integer"

    def check(spec: Spec, value: Any) -> None:
        if value is None and optional:
            return
        _check_type(int)(spec, value)
        _check_range(spec, value)

    return Spec(key, name, _to_int, check, allowed, low=low, high=high)


def _bool(key: str, name: str) -> Spec:
    return Spec(key, name, _to_bool, _check_type(bool), "true or false (also 1/0, t/f, TRUE/FALSE)")


def _choice(key: str, name: str, *values: str, aliases: Mapping[str, str] | None = None) -> Spec:
    choices = {v: v for v in values}
    choices.update(aliases or {})
    return Spec(key, name, _to_choice, _check_choice, " | ".join(values), choices=choices)


def _text(key: str, name: str) -> Spec:
    return Spec(key, name, _to_str, _check_type(str), "a string")


def _check_optional_choice(spec: Spec, value: Any) -> None:
    if value != "":  # empty: the feature is off (no SASL)
        _check_choice(spec, value)


def _optional_choice(key: str, name: str, *values: str) -> Spec:
    return dataclasses.replace(_choice(key, name, *values), check=_check_optional_choice)


def _check_limiter_rate(spec: Spec, value: Any) -> None:
    if value is None:
        return
    _check_type((int, float))(spec, value)
    _check_range(spec, value)


SPEC_LIST: Final = [
    _text("clientid", "client_id"),
    Spec("topic", "topic", _to_str, _check_topics, _TOPIC_ALLOWED),
    Spec("topics", "topics", _to_list, _check_topics, f"a comma-separated list of {_TOPICS}"),
    _text("group", "group"),
    Spec(
        "async",
        "async_produce",
        _to_async,
        _check_type(bool),
        "1 (asynchronous) or 0 (synchronous), as in the Go plugin",
    ),
    _choice("compression", "compression", "none", "gzip", "snappy", "lz4", "zstd"),
    Spec(
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
    Spec(
        "limiterRate",
        "limiter_rate",
        _to_float,
        _check_limiter_rate,
        "a number of messages per second >= 0",
        low=0,
    ),
    _int("limiterBurst", "limiter_burst", 0, 2_147_483_647),
    Spec("deadLetterTopic", "dead_letter_topic", _to_str, _check_topics, _TOPIC_ALLOWED),
    # Group type and protocol (issue 14): share groups (KIP-932), the new protocol (KIP-848).
    _choice("groupType", "group_type", "consumer", "share"),
    _choice("groupProtocol", "group_protocol", "classic", "consumer"),
    # Records of different keys of one partition in flight at once (issue 14 section 2).
    _int("keyConcurrency", "key_concurrency", 1, 10_000),
]


SPECS: Final[dict[str, Spec]] = {s.key: s for s in SPEC_LIST}
ADDRESS_KEYS: Final = tuple(SPECS)
TLS_SPECS: Final = tuple(s for s in SPEC_LIST if s.key.startswith("tls"))
SECRET_FIELDS: Final = frozenset(s.field for s in SPEC_LIST if is_secret_key(s.key))


_HOST_RE: Final = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})")


def check_host(host: str, *, discover: bool = False) -> None:
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


def is_object_setting(name: str) -> bool:
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
        f"the key name {shorten(key)!r}"
        if is_name
        else f"key {key!r} (value {MASK if secret else shorten(value)!r})"
    )
    raise ConfigError(
        f"{subject} holds {what} at position {m.start()}; "
        f"allowed: text without NUL and valid as UTF-8",
        key=key,
        value=None if secret or is_name else value,
    )


def shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
