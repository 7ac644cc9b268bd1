"""``trpc-kafka``: the command line of the plugin: Kafka tools on the library's addresses.

``produce`` / ``consume`` send and tail messages, ``topics`` and ``groups`` show and change the
cluster, ``check`` validates a config file, ``run`` serves a module's consumer services in N
processes, ``broker`` runs a local Apache Kafka. Errors are one line on stderr with a non-zero
exit status; Ctrl-C ends every command cleanly (status 130).

``trpc-kafka broker start|stop|status`` runs the local Apache Kafka cluster;
``stop-node|kill-node|start-node N...`` stop, SIGKILL and restart single nodes of it (storage
kept) for failover drills. ``start`` prints
the bootstrap servers as the last line of stdout, so scripts take them with ``tail -n 1``.
``start --sasl scram|plain`` and/or ``--tls`` secure the listener clients use; the users'
passwords (new on every start) go to stderr and to ``DIR/credentials.json``, never to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from confluent_kafka import KafkaError, KafkaException

import trpc_kafka
from trpc_kafka._config.address import topic_name_problem
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.secrets import redact_text
from trpc_kafka._kafka_errors import describe, kafka_error_of
from trpc_kafka._runtime.errors import TrpcError
from trpc_kafka._tools import admin, benchmark, check, console, runner, security
from trpc_kafka._tools.broker import BrokerError, LocalBroker, create_topic, default_dir
from trpc_kafka._tools.clients import CliError

PROG = "trpc-kafka"
# `status` exit code when nothing runs (LSB: "program is not running").
EXIT_NOT_RUNNING = 3


def _number(
    kind: Callable[[str], float], low: float, high: float, what: str
) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` within ``low..high``, else "'text' is not WHAT"."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return convert


_positive_int = _number(int, 1, sys.maxsize, "a positive integer")
_positive_float = _number(float, 1e-9, float("inf"), "a positive number of seconds")
_port = _number(int, 1, 65535, "a port (1 to 65535)")


@dataclass(frozen=True)
class TopicSpec:
    """``--topic NAME:PARTITIONS[:RF]`` of ``broker start``."""

    name: str
    partitions: int
    replication_factor: int | None


def _topic_spec(text: str) -> TopicSpec:
    name, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    problem = None
    if not name or len(parts) not in (1, 2):
        problem = "expected NAME:PARTITIONS or NAME:PARTITIONS:RF"
    elif not all(p.isdigit() and int(p) >= 1 for p in parts):
        problem = "PARTITIONS and RF must be whole numbers of at least 1"
    else:
        problem = topic_name_problem(name)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return TopicSpec(name, int(parts[0]), int(parts[1]) if len(parts) == 2 else None)


_TIMEOUT_HELP = (
    "seconds to wait until the nodes are usable (default: 60 a node, at least 90, "
    "up to 3 times more on a loaded machine)"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error quoting what was typed masks the secrets in it.

    argparse repeats a mistyped argument in its error (``invalid choice: 'h:9092?password=...'``);
    sub-commands are built with this class too (``add_subparsers`` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        super().error(redact_text(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"{PROG} {trpc_kafka.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    console.add_parsers(commands)
    admin.add_parsers(commands)
    check.add_parser(commands)
    runner.add_parser(commands)
    benchmark.add_parser(commands)
    broker = commands.add_parser("broker", help="the local Apache Kafka broker (KRaft)")
    actions = broker.add_subparsers(dest="action", required=True, metavar="ACTION")

    dir_help = f"cluster state, logs and data (default: {default_dir()})"
    start = actions.add_parser("start", help="start a local cluster; print its bootstrap servers")
    start.add_argument("--brokers", type=_positive_int, default=1, help="nodes (default: 1)")
    start.add_argument("--dir", help=dir_help)
    start.add_argument("--timeout", type=_positive_float, help=_TIMEOUT_HELP)
    start.add_argument(
        "--sasl",
        choices=sorted(security.SASL_MECHANISMS),
        help="require SASL on the client listener: scram (SCRAM-SHA-256 and SCRAM-SHA-512) or "
        "plain; users admin (super user), alice and bob, ACLs on",
    )
    start.add_argument(
        "--tls",
        action="store_true",
        help="TLS on the client listener, with a CA and certificates made for this run",
    )
    start.add_argument(
        "--port",
        type=_port,
        help="client port of node 1 (node N: PORT+N-1), e.g. 9092 for the README's "
        "examples (default: free ports)",
    )
    start.add_argument(
        "--topic",
        type=_topic_spec,
        action="append",
        default=[],
        metavar="NAME:PARTITIONS[:RF]",
        help="create this topic once the cluster is up, unless it exists (repeatable; "
        "RF default: min(3, nodes))",
    )
    start.set_defaults(handler=_start)

    stop = actions.add_parser("stop", help="stop the cluster started in --dir")
    stop.add_argument("--dir", help=dir_help)
    stop.set_defaults(handler=_stop)

    stop_node = actions.add_parser(
        "stop-node",
        help="stop node(s) of the running cluster (controlled shutdown); their data is kept",
    )
    kill_node = actions.add_parser(
        "kill-node",
        help="kill node(s) of the running cluster with SIGKILL (a crash); their data is kept",
    )
    start_node = actions.add_parser(
        "start-node",
        help="start stopped or killed node(s) again with their data; wait until they are "
        "back in sync",
    )
    for action, handler in (
        (stop_node, _stop_node),
        (kill_node, _kill_node),
        (start_node, _start_node),
    ):
        action.add_argument(
            "node", type=_positive_int, nargs="+", metavar="N", help="node id (1 to --brokers)"
        )
        action.add_argument("--dir", help=dir_help)
        action.set_defaults(handler=handler)
    start_node.add_argument("--timeout", type=_positive_float, help=_TIMEOUT_HELP)

    status = actions.add_parser(
        "status", help=f"show what runs; exit 0 if running, {EXIT_NOT_RUNNING} if not"
    )
    status.add_argument("--dir", help=dir_help)
    status.set_defaults(handler=_status)
    return parser


def _start(args: argparse.Namespace) -> int:
    for topic in args.topic:
        rf = topic.replication_factor
        if rf is not None and rf > args.brokers:
            raise CliError(
                f"--topic {topic.name}:{topic.partitions}:{rf}: replication factor {rf} needs "
                f"at least {rf} nodes; this cluster has --brokers {args.brokers}"
            )
    broker = LocalBroker(
        args.dir,
        brokers=args.brokers,
        start_timeout=args.timeout,
        sasl=args.sasl,
        tls=args.tls,
        port=args.port,
    )
    current = broker.status()
    if current.running and current.protocol == broker.protocol:
        # Reported, never restarted: other shells may be using it.
        print(f"broker already running in {broker.directory} ({len(current.nodes)} node(s))")
    bootstrap = broker.start()
    if not current.running:
        print(f"started {broker.brokers} node(s) in {broker.directory}")
        for node in broker.status().nodes:
            print(f"node {node.node_id}: pid {node.pid}, port {node.port}, log {node.log}")
    creds = broker.credentials()
    if creds is not None:
        print(_security_line(creds.protocol, broker.directory))
        _print_credentials(creds, bootstrap)
    settings = creds.client_settings() if creds is not None else {}
    for topic in args.topic:
        print(_ensure_topic(bootstrap, topic, min(3, args.brokers), settings))
    print(bootstrap)
    return 0


def _ensure_topic(
    bootstrap: str, topic: TopicSpec, default_rf: int, settings: dict[str, str]
) -> str:
    rf = topic.replication_factor or default_rf
    try:
        create_topic(
            bootstrap,
            topic.name,
            partitions=topic.partitions,
            replication_factor=rf,
            client_settings=settings,
        )
    except KafkaException as exc:
        error = kafka_error_of(exc)
        if error is None or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            text = describe(error) if error is not None else str(exc)
            raise CliError(f"--topic {topic.name}: not created: {text}") from None
        return f"topic {topic.name}: exists already (left as it is)"
    return f"topic {topic.name}: created ({topic.partitions} partition(s), replication factor {rf})"


def _security_line(protocol: str, directory: Path) -> str:
    return f"security: {protocol} (credentials: {directory / security.CREDENTIALS_FILE})"


def _print_credentials(creds: security.Credentials, bootstrap: str) -> None:
    """Passwords go to stderr only: stdout is often captured into CI logs and scripts."""
    lines = []
    if creds.sasl:
        lines.append(f"SASL mechanisms: {', '.join(creds.mechanisms)}")
        roles = {
            security.SUPER_USER: "super user",
            security.ALLOWED_USER: f"topics and groups named {creds.allowed_prefix}*",
            "bob": "no permissions",
        }
        for user, password in creds.passwords.items():
            lines.append(f"  user {user} ({roles.get(user, '')}): password {password}")
    if creds.tls:
        lines.append(f"CA for clients (tlsCAFile): {creds.ca_file}")
        if not creds.sasl:
            lines.append(
                f"client certificate of {security.ALLOWED_USER} (tlsCertFile/tlsKeyFile): "
                f"{creds.client_cert_file} {creds.client_key_file}, key password "
                f"{creds.client_key_password}"
            )
    demo = f"{creds.allowed_prefix}demo"
    lines.append(f"address: {bootstrap}?topics={demo}&group={demo}&{creds.address_keys()}")
    print("\n".join(f"{PROG}: {line}" for line in lines), file=sys.stderr)


def _stop(args: argparse.Namespace) -> int:
    broker = LocalBroker(args.dir)
    if broker.stop():
        print(f"stopped the broker in {broker.directory}")
    else:
        print(f"no broker recorded in {broker.directory}")
    return 0


def _stop_node(args: argparse.Namespace) -> int:
    return _report_ended(args, LocalBroker(args.dir).stop_node(*args.node), "stopped")


def _kill_node(args: argparse.Namespace) -> int:
    return _report_ended(args, LocalBroker(args.dir).kill_node(*args.node), "killed")


def _report_ended(args: argparse.Namespace, ended: list[int], verb: str) -> int:
    for node_id in dict.fromkeys(args.node):
        if node_id in ended:
            print(
                f"node {node_id}: {verb}; `{PROG} broker start-node {node_id}{_dir_arg(args)}` "
                "restarts it"
            )
        else:
            print(f"node {node_id}: was not running")
    return 0


def _dir_arg(args: argparse.Namespace) -> str:
    return "" if args.dir is None else f" --dir {args.dir}"


def _start_node(args: argparse.Namespace) -> int:
    broker = LocalBroker(args.dir, start_timeout=args.timeout)
    started = broker.start_node(*args.node)
    nodes = {node.node_id: node for node in broker.status().nodes}
    for node_id in dict.fromkeys(args.node):
        node = nodes[node_id]
        what = "started, in sync" if node_id in started else "already running"
        print(f"node {node_id}: {what}: pid {node.pid}, port {node.port}, log {node.log}")
    current = broker.status()
    if current.bootstrap is not None:
        print(current.bootstrap)
    return 0


def _status(args: argparse.Namespace) -> int:
    current = LocalBroker(args.dir).status()
    if not current.nodes:
        print(f"not running: no broker recorded in {current.directory}")
    for node in current.nodes:
        if node.alive:
            state = f"pid {node.pid}, port {node.port}, alive"
        elif node.pid <= 0:
            state = f"port {node.port}, stopped"
        else:
            state = f"pid {node.pid}, port {node.port}, dead"
        print(f"node {node.node_id}: {state}, log {node.log}")
    for pid in current.strays:
        print(f"stray broker JVM (not recorded in state.json): pid {pid}")
    if current.nodes and current.protocol != "PLAINTEXT":
        print(_security_line(current.protocol, current.directory))
    if current.running:
        print(current.bootstrap)
        return 0
    if current.nodes and not current.ready:
        print("not running yet: a start is waiting for the nodes")
    elif current.nodes:
        down = " ".join(map(str, current.down))
        print(
            f"not running: node(s) {down} down; `{PROG} broker start-node {down}{_dir_arg(args)}`"
            f" restarts them with their data, `{PROG} broker stop{_dir_arg(args)}` ends the cluster"
        )
    return EXIT_NOT_RUNNING


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> NoReturn:
    # SystemExit unwinds like Ctrl-C does, so a start in progress ends the nodes it began.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Progress of the library (mvn, readiness) goes to stderr; stdout stays parseable.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    tools_log = logging.getLogger("trpc_kafka._tools")
    tools_log.addHandler(handler)
    tools_log.setLevel(logging.INFO)
    try:
        code: int = args.handler(args)
    except (BrokerError, CliError, ConfigError, TrpcError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # The library already ended any node it had started.
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `trpc-kafka consume ... | head`: the reader left; not an error of ours.
        _silence_stdout()
        return 0
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
