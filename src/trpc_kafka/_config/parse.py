"""Parsing ``[kafka://]host:port,...?key=value&...`` into a validated :class:`KafkaConfig`, the
redacted form of an address, and the keys of the other side.

One parser for both sides. A producer target carries the ``kafka://`` scheme, a consumer
service address does not; both forms are accepted everywhere. Values are percent-decoded
(``%26`` is ``&``) so passwords may hold any character; ``+`` stays ``+``.
"""

from __future__ import annotations

import logging
import re
from typing import Final, Literal
from urllib.parse import unquote

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.keys import (
    ADDRESS_KEYS,
    RDKAFKA_PREFIX,
    SCHEME,
    SPECS,
    TLS_SPECS,
    check_text,
    shorten,
)
from trpc_kafka._config.model import DEFAULT_FIELDS, SPEC_DEFAULT, SPEC_DEFAULTS, KafkaConfig
from trpc_kafka._config.rdkafka import check_rdkafka_settings, check_tls_files
from trpc_kafka._config.secrets import redact_text


def strip_scheme(address: str) -> str:
    return address[len(SCHEME) :] if address.startswith(SCHEME) else address


def redact_address(address: str) -> str:
    """The address with secret values (password, tlsKeyPassword, rdkafka.*secrets) masked."""
    return redact_text(address)


_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")


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
            f"unknown scheme {scheme.group(1)!r} in address {shorten(redact_address(address))!r}"
            f", expected kafka:// (or no scheme)",
            key="address",
            value=scheme.group(1),
        )
    body = strip_scheme(stripped)
    hosts_part, sep, query = body.partition("?")
    check_text("hosts", hosts_part)
    # A copy of the defaults without running the 60-field __init__ (a file may hold 40k).
    cfg = object.__new__(KafkaConfig)
    cfg.__dict__.update(DEFAULT_FIELDS)
    cfg.topics, cfg.rdkafka = [], {}
    seen: set[str] = set()
    if sep and not query:
        raise ConfigError(
            f"address {shorten(redact_address(address))!r} ends with '?' but has no keys",
            key="address",
        )
    for item in query.split("&") if query else ():
        if not item:
            raise ConfigError(
                f"address {shorten(redact_address(address))!r} has an empty '&&' item",
                key="address",
            )
        raw_key, eq, raw_value = item.partition("=")
        key = unquote(raw_key)
        check_text(key, key, is_name=True)
        if not eq:
            raise ConfigError(
                f"key {shorten(key)!r} has no '=value' in address "
                f"{shorten(redact_address(address))!r}",
                key=key,
            )
        if key in seen:
            raise ConfigError(f"key {shorten(key)!r} is given twice", key=key)
        seen.add(key)
        value = unquote(raw_value)
        check_text(key, value)
        if value == "":
            raise ConfigError(f"key {shorten(key)!r} has an empty value", key=key, value="")
        if key.startswith(RDKAFKA_PREFIX) and len(key) > len(RDKAFKA_PREFIX):
            cfg.rdkafka[key[len(RDKAFKA_PREFIX) :]] = value
            continue
        spec = SPECS.get(key)
        if spec is None:
            raise ConfigError(
                f"unknown key {shorten(key)!r}; allowed keys: {', '.join(ADDRESS_KEYS)}, "
                f"or rdkafka.<librdkafka property>",
                key=key,
            )
        setattr(cfg, spec.field, spec.convert(spec, value))
    if not cfg.protocol and any(spec.key in seen for spec in TLS_SPECS):
        # Any tls* key implies TLS, even tlsVerifyHostname=true alone.
        cfg.protocol = "SASL_SSL" if cfg.mechanism else "SSL"
    cfg.brokers = [h.strip() for h in hosts_part.split(",")] if hosts_part.strip() else []
    if not cfg.brokers:
        raise ConfigError(
            f"address {shorten(redact_address(address))!r} names no broker; expected "
            f"host:port[,host:port...] before '?'",
            key="hosts",
            value="",
        )
    cfg._validate([(spec, SPEC_DEFAULT[spec.key]) for spec in map(SPECS.get, seen) if spec])
    if cfg.rdkafka:
        check_rdkafka_settings(cfg.rdkafka)
    check_tls_files(cfg)
    return cfg


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
            "keyConcurrency",
        ]
    ),
}
_SIDE_SPECS: Final = {
    side: tuple((spec, default) for spec, default in SPEC_DEFAULTS if spec.key in keys)
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
