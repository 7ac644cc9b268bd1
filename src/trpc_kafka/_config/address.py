"""The Kafka address: ``kafka://host:port,...?key=value&...`` and its typed config, in one place
for the rest of the library to import.

The work is split by job, each module importing only those before it:

| module | job |
|---|---|
| ``keys.py`` | the key table (one ``Spec`` per key), converters, text and host checks |
| ``discovery.py`` | ``register_discovery`` and the resolution of ``discover=`` addresses |
| ``model.py`` | ``KafkaConfig``, its defaults and ``validate()`` |
| ``rdkafka.py`` | the mapping to librdkafka settings, and librdkafka's own checks |
| ``parse.py`` | ``parse_address``, ``redact_address``, keys of the other side |
| ``registry.py`` | ``register_addr_config`` and ``resolve_address`` (registered, else parsed) |

This module only re-exports them: no logic lives here.
"""

from __future__ import annotations

from trpc_kafka._config.discovery import Discovery, register_discovery, resolve_brokers
from trpc_kafka._config.keys import (
    ADDRESS_KEYS,
    RDKAFKA_PREFIX,
    SCHEME,
    check_text,
    topic_name_problem,
)
from trpc_kafka._config.model import (
    CONSUMER_MAX_RETRY,
    CONSUMER_RETRY_INTERVAL_MS,
    DEFAULT_CLIENT_ID,
    PRODUCER_MAX_RETRY,
    PRODUCER_RETRY_INTERVAL_MS,
    Compression,
    GroupProtocol,
    GroupType,
    Initial,
    IsolationLevel,
    KafkaConfig,
    Partitioner,
    Strategy,
    get_default_config,
)
from trpc_kafka._config.parse import (
    Side,
    other_side_keys,
    parse_address,
    redact_address,
    strip_scheme,
    warn_other_side_keys,
)
from trpc_kafka._config.rdkafka import check_rdkafka_settings, check_tls_files
from trpc_kafka._config.registry import (
    is_registered,
    register_addr_config,
    resolve_address,
    unregister_addr_config,
)

__all__ = [
    "ADDRESS_KEYS",
    "CONSUMER_MAX_RETRY",
    "CONSUMER_RETRY_INTERVAL_MS",
    "DEFAULT_CLIENT_ID",
    "PRODUCER_MAX_RETRY",
    "PRODUCER_RETRY_INTERVAL_MS",
    "RDKAFKA_PREFIX",
    "SCHEME",
    "Compression",
    "Discovery",
    "GroupProtocol",
    "GroupType",
    "Initial",
    "IsolationLevel",
    "KafkaConfig",
    "Partitioner",
    "Side",
    "Strategy",
    "check_rdkafka_settings",
    "check_text",
    "check_tls_files",
    "get_default_config",
    "is_registered",
    "other_side_keys",
    "parse_address",
    "redact_address",
    "register_addr_config",
    "register_discovery",
    "resolve_address",
    "resolve_brokers",
    "strip_scheme",
    "topic_name_problem",
    "unregister_addr_config",
    "warn_other_side_keys",
]
