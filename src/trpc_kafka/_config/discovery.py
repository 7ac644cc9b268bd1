"""Service discovery for addresses: ``discover=<name>`` resolves the first host (a service
name) in ``namespace`` with the function registered under that name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.keys import check_host

if TYPE_CHECKING:  # annotations only: the model imports this module
    from trpc_kafka._config.model import KafkaConfig

Discovery = Callable[[str, str], Sequence[str]]
"""``resolve(service_name, namespace) -> ["host:port", ...]``; may block (it runs off the loop)."""

_discoveries: dict[str, Discovery] = {}


def register_discovery(name: str, resolve: Discovery) -> None:
    """Make ``discover=<name>`` usable in addresses (reference: a registered selector)."""
    if not name:
        raise ValueError("discovery name must not be empty")
    _discoveries[name] = resolve


def check_discovery(name: str) -> None:
    """Raise the ConfigError of a ``discover`` name that no discovery is registered under."""
    if name not in _discoveries:
        raise ConfigError(
            f"key 'discover': no service discovery named {name!r} is "
            f"registered; registered: {', '.join(sorted(_discoveries)) or '(none)'}; "
            f"register it with trpc_kafka.register_discovery",
            key="discover",
            value=name,
        )


def resolve_brokers(cfg: KafkaConfig) -> list[str]:
    """The bootstrap brokers: the hosts of the address, or what its discovery returns.

    With ``discover`` the first host is a service name, resolved in ``namespace``.
    """
    if not cfg.discover:
        return list(cfg.brokers)
    check_discovery(cfg.discover)
    resolve = _discoveries[cfg.discover]
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
        check_host(broker)
    return brokers
