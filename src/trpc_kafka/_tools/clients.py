"""What the Kafka commands of the CLI share: where the cluster is, clients on it, tables.

A command finds its cluster the way a service does, from an address string
(``-b host:port,...?key=value`` with the same keys, SASL and TLS included, or
``$TRPC_KAFKA_BOOTSTRAP``), or from a service of a YAML file (``-c FILE -s NAME``): a
``client.service`` target for ``produce``, a ``server.service`` address for ``consume``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from trpc_kafka._config.address import KafkaConfig, parse_address, resolve_address
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import load_config
from trpc_kafka._config.rdkafka import admin_settings
from trpc_kafka._kafka_errors import describe, kafka_error_of

RDKAFKA_LOG: Final = logging.getLogger("trpc_kafka.tools.rdkafka")
BOOTSTRAP_ENV: Final = "TRPC_KAFKA_BOOTSTRAP"
REQUEST_TIMEOUT: Final = 15.0
"""Seconds an admin request waits for the cluster before the command gives up."""


class CliError(Exception):
    """A failure the CLI reports as one line on stderr, with exit status 1 (no traceback)."""


def add_cluster_arguments(parser: argparse.ArgumentParser, *, services: bool = False) -> None:
    """``-b ADDRESS`` (and, for commands that can use a YAML service, ``-c`` and ``-s``)."""
    parser.add_argument(
        "-b",
        "--bootstrap",
        metavar="ADDRESS",
        help="the cluster: host:port[,host:port...][?key=value...], the keys of a service "
        f"address (SASL and TLS too); default: ${BOOTSTRAP_ENV}",
    )
    if services:
        parser.add_argument(
            "-c", "--config", dest="config_file", metavar="FILE", help="a trpc_go.yaml-style file"
        )
        parser.add_argument(
            "-s",
            "--service",
            dest="service_name",
            metavar="NAME",
            help="the service of --config to take the address of",
        )


def cluster_config(args: argparse.Namespace, *, side: str = "client") -> KafkaConfig:
    """The KafkaConfig of the command's cluster (``side``: which YAML section ``-s`` names)."""
    address: str = cluster_address(args, side=side)
    return resolve_address(address)


def cluster_address(args: argparse.Namespace, *, side: str = "client") -> str:
    """The address string of the command's cluster, from ``-b``, the environment or a file."""
    config_file = getattr(args, "config_file", None)
    service = getattr(args, "service_name", None)
    if config_file or service:
        if args.bootstrap:
            raise CliError("give either -b ADDRESS or -c FILE -s SERVICE, not both")
        if not (config_file and service):
            raise CliError("-c FILE and -s SERVICE go together")
        return service_address(config_file, service, side)
    address = args.bootstrap or os.environ.get(BOOTSTRAP_ENV)
    if not address:
        raise CliError(f"no cluster: give -b host:port (or set ${BOOTSTRAP_ENV})")
    parse_address(address)  # a bad address fails here, with the library's message
    return str(address)


def service_address(path: str, name: str, side: str) -> str:
    """The address of service ``name`` in the ``side`` section (client/server) of ``path``."""
    file = load_config(path)
    if side == "client":
        client = file.client_service(name)
        if client is None:
            names = ", ".join(s.name for s in file.client.services) or "none"
            raise CliError(f"{path}: no client service {name!r} (client services: {names})")
        return client.target
    server = file.server.service(name)
    if server is None:
        names = ", ".join(s.name for s in file.server.services) or "none"
        raise CliError(f"{path}: no server service {name!r} (server services: {names})")
    return server.address


def admin_client(cfg: KafkaConfig) -> Any:
    """An AdminClient on ``cfg``'s cluster whose librdkafka errors are kept, not printed."""
    settings = quiet(admin_settings(cfg))
    # Looking a topic up must not create it (brokers auto-create on metadata requests).
    settings["allow.auto.create.topics"] = False
    return AdminClient(settings)


def quiet(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with librdkafka's errors and log lines kept off the terminal.

    Connection errors reach the user as the failing request's own error, with a hint; the
    informational lines librdkafka prints by default (e.g. at close) would only be noise.
    """
    settings["error_cb"] = _ignore
    settings["logger"] = RDKAFKA_LOG
    return settings


def _ignore(_err: KafkaError) -> None:
    """Connection errors surface as the request's own error (with a hint), not as log noise."""


def wait(future: Any, what: str, topic: str | None = None) -> Any:
    """The result of an admin future, or a CliError that says what failed and why."""
    try:
        return future.result(timeout=REQUEST_TIMEOUT)
    except KafkaException as exc:
        err = kafka_error_of(exc)
        if err is None:
            raise CliError(f"{what}: {exc}") from None
        raise CliError(f"{what}: {describe(err, topic)}") from None
    except TimeoutError:
        raise CliError(
            f"{what}: no answer from the cluster in {REQUEST_TIMEOUT:g} s "
            f"(Is your cluster reachable?)"
        ) from None


def topic_metadata(admin: Any, topic: str) -> Any:
    """The metadata of ``topic``, or a CliError naming the topic if it does not exist."""
    try:
        metadata = admin.list_topics(topic=topic, timeout=REQUEST_TIMEOUT)
    except KafkaException as exc:
        err = kafka_error_of(exc)
        text = describe(err, topic) if err is not None else str(exc)
        raise CliError(f"topic {topic!r}: {text}") from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        error = found.error if found is not None else None
        reason = describe(error, topic) if error is not None else "not found"
        raise CliError(f"topic {topic!r}: {reason}")
    return found


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns aligned with two spaces, a header line; numbers right-aligned."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(row[i], int) or row[i] in ("-", None) for row in rows) and bool(rows)
        for i in range(len(header))
    ]
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        sys.stdout.write("  ".join(parts).rstrip() + "\n")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


__all__ = [
    "BOOTSTRAP_ENV",
    "CliError",
    "ConfigError",
    "add_cluster_arguments",
    "admin_client",
    "cluster_address",
    "cluster_config",
    "print_table",
    "service_address",
    "topic_metadata",
    "wait",
]
