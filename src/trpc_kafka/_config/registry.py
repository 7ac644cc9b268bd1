"""Configs registered in code for placeholder addresses (``register_addr_config``), and the
one resolution of an address: the registered config, else the parsed address."""

from __future__ import annotations

import threading

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.model import KafkaConfig
from trpc_kafka._config.parse import parse_address, strip_scheme
from trpc_kafka._config.rdkafka import check_rdkafka_settings, check_tls_files

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
