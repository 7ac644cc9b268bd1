"""``trpc-kafka check FILE``: load a config file and every Kafka address in it.

Each problem is one line, ``FILE:LINE: where: what``; the exit status is 1 if there is any,
0 (and no output) otherwise. Nothing connects to a cluster. A service whose address is a
placeholder (a single word such as ``fake_address``) is filled in by code at run time with
``register_addr_config``; it is reported as such only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import (
    KAFKA_PROTOCOL,
    is_placeholder,
    kafka_address_errors,
    load_config,
)

KAFKA_SCHEME: Final = "kafka://"


def add_parser(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="validate a YAML config file and its Kafka addresses; silent when all is well",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", metavar="FILE")
    check.add_argument("-v", "--verbose", action="store_true", help="also say what was checked")
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    problems, notes = check_file(args.file)
    for line in [*notes, *problems] if args.verbose else problems:
        sys.stdout.write(line + "\n")
    return 1 if problems else 0


def check_file(path: str) -> tuple[list[str], list[str]]:
    """One line per problem, and one per address that is fine or a placeholder."""
    try:
        file = load_config(path, check_addresses=False)
    except ConfigError as exc:
        return [_located(str(exc), path)], []
    errors = list(kafka_address_errors(file))
    problems = [str(error) for error in errors]
    bad = {error.key for error in errors}
    notes: list[str] = []
    for i, service in enumerate(file.server.services):
        if service.protocol == KAFKA_PROTOCOL and f"server.service[{i}].address" not in bad:
            line = service.address_line or service.line
            where = f"server.service[{i}] {service.name!r}: address"
            notes.append(_note(path, line, where, service.address))
    for i, client in enumerate(file.client.services):
        kafka = client.protocol == KAFKA_PROTOCOL or client.target.startswith(KAFKA_SCHEME)
        if client.target and kafka and f"client.service[{i}].target" not in bad:
            line = client.target_line or client.line
            where = f"client.service[{i}] {client.name!r}: target"
            notes.append(_note(path, line, where, client.target))
    return problems, notes


def _note(path: str, line: int | None, where: str, address: str) -> str:
    prefix = f"{path}:{line}" if line else path
    if is_placeholder(address):
        return f"{prefix}: {where}: {address!r} is a placeholder (register_addr_config)"
    return f"{prefix}: {where}: ok"


def _located(message: str, path: str) -> str:
    """A file-level error, led by the file name unless it already names it."""
    return message if message.startswith(path) else f"{path}: {message}"
