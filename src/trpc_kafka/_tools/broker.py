"""The local Apache Kafka broker that tests, demos and benchmarks use.

KRaft nodes (combined broker + controller) run in their own JVMs from the jars that Maven
resolves out of Maven Central. One directory holds one cluster::

    DIR/state.json              pids, ports and bootstrap of the running cluster
    DIR/log4j2.properties       logging of every node (INFO into the node's log)
    DIR/node-<id>/server.properties, server.log, data/
    DIR/credentials.json, DIR/tls/  a secured cluster's passwords and certificates (security.py)

Every start formats fresh storage, so a cluster never carries topics over from an earlier run;
restarting a single node (``start_node``, after ``stop_node`` or ``kill_node``) keeps its storage.
A node stopped that way is recorded with pid 0.
Only the pids recorded in ``state.json`` are ever signalled, and only while their command line
still names this directory, so a reused pid is never killed.

(At about 1,400 lines this module is due for a split into the Kafka distribution and its
settings, the node processes, and readiness; it has not been split yet.)
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# Where it is defined: confluent_kafka.admin re-exports it without declaring it for mypy.
from confluent_kafka.cimpl import NewTopic

from trpc_kafka._kafka_errors import kafka_error_of
from trpc_kafka._tools import security
from trpc_kafka._tools.security import Credentials
from trpc_kafka._tools.tls import TlsError

__all__ = [
    "BrokerError",
    "ClusterStatus",
    "Credentials",
    "Listener",
    "LocalBroker",
    "NodeStatus",
    "create_topic",
    "default_dir",
    "default_start_timeout",
    "processes_using",
    "resolve_classpath",
    "server_properties",
    "start_cluster",
    "status",
    "stop",
]

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
CONTROLLER: Final = "CONTROLLER"
STOP_GRACE: Final = 15.0
STATE_FILE: Final = "state.json"

_POM: Final = Path(__file__).with_name("pom.xml")
_LOG4J2: Final = Path(__file__).with_name("log4j2.properties")
# A cold ~/.m2 downloads ~60 MB; generous, but a hung mvn must not hang `make test` forever.
_MVN_TIMEOUT: Final = 900.0
# A SIGKILLed JVM with a large heap can take seconds to be gone on a busy machine.
_KILL_WAIT: Final = 30.0
# Start deadlines: per node, never below the floor, times the machine's load (see
# default_start_timeout). A 3-node cluster on an idle 2-core machine starts in 10-20 s.
_START_SECONDS_PER_NODE: Final = 60.0
_START_SECONDS_FLOOR: Final = 90.0
_MAX_LOAD_FACTOR: Final = 3.0
# The topic whose creation with replication factor N proves a cluster of N nodes usable.
_PROBE_TOPIC: Final = "trpc-kafka-ready-probe"
_LOG_TAIL_LINES: Final = 15
_LOG_READ_LIMIT: Final = 4 * 1024 * 1024
_JVM_OPTS: Final = (
    "-Xmx512m",
    "-Xms128m",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# StorageTool lives for a second: the C1 compiler alone starts it faster.
_TOOL_JVM_OPTS: Final = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")

# JVMs this process spawned, so that stop() reaps them (no zombies, no "still running"
# ResourceWarning from a collected Popen) whichever LocalBroker object stops them.
_children: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """The local broker could not be started or stopped; the message names cause and log."""


class _PortTakenError(BrokerError):
    """A node could not bind its port: someone took it between our choice and the JVM's bind."""


# --- locations and tools ------------------------------------------------------------------


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/trpc-kafka`` (``~/.cache/trpc-kafka`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trpc-kafka"


def default_dir() -> Path:
    """Where ``trpc-kafka broker`` keeps its cluster when no directory is given."""
    return cache_root() / "broker"


def _tool(name: str, env_var: str, purpose: str) -> str:
    configured = os.environ.get(env_var)
    found = shutil.which(configured or name)
    if found is not None:
        return found
    if configured:
        raise BrokerError(f"{name} not found: {env_var}={configured!r} is not an executable")
    raise BrokerError(
        f"{name} not found on PATH: {purpose}; install it or set {env_var}=/path/to/{name}"
    )


def _java() -> str:
    return _tool("java", "JAVA", "the local Kafka broker needs a Java 17+ runtime")


def resolve_classpath() -> str:
    """The broker's classpath; mvn runs only when the cache for this pom.xml is missing.

    The cache lives under :func:`cache_root`, keyed by a hash of the pom, so every cluster
    directory (tests use temporary ones) shares it. A cached entry whose jars are gone
    (``~/.m2`` cleaned) is resolved again.
    """
    digest = hashlib.sha256(_POM.read_bytes()).hexdigest()[:16]
    cache = cache_root() / "classpath" / f"{digest}.txt"
    with contextlib.suppress(OSError):
        cached = cache.read_text(encoding="utf-8").strip()
        if cached and all(os.path.isfile(jar) for jar in cached.split(os.pathsep)):
            return cached

    mvn = _tool("mvn", "MVN", "it resolves the Kafka jars from Maven Central on the first start")
    cache.parent.mkdir(parents=True, exist_ok=True)
    mvn_log = cache.with_suffix(".mvn.log")
    log.info("resolving the Kafka jars with Maven (first start only), log: %s", mvn_log)
    # A temporary cwd: mvn must not drop files into the caller's directory.
    with tempfile.TemporaryDirectory(prefix="trpc-kafka-mvn-") as tmp:
        out = Path(tmp) / "classpath.txt"
        cmd = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(_POM),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={out}",
        ]
        with open(mvn_log, "wb") as sink:
            try:
                rc = subprocess.run(
                    cmd,
                    cwd=tmp,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    timeout=_MVN_TIMEOUT,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                raise BrokerError(
                    f"mvn did not resolve the Kafka jars within {_MVN_TIMEOUT:.0f} s; "
                    f"log: {mvn_log}\n{_excerpt(mvn_log)}"
                ) from None
            except OSError as exc:
                raise BrokerError(f"cannot run mvn ({mvn}): {exc}") from None
        if rc != 0 or not out.is_file():
            raise BrokerError(
                f"mvn failed (exit {rc}) resolving the Kafka jars of {_POM}; "
                f"log: {mvn_log}\n{_excerpt(mvn_log)}"
            )
        classpath = out.read_text(encoding="utf-8").strip()
    _write_atomic(cache, classpath + "\n")
    return classpath


def default_start_timeout(brokers: int = 1) -> float:
    """Seconds a start of ``brokers`` nodes may take: 90 s for one, 60 s a node for more.

    Scaled up (at most 3 times) by the load average per core, so that a machine busy with
    other work gets the time it needs; a node that dies fails the start at once regardless.
    """
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        load = 1.0
    factor = min(max(load, 1.0), _MAX_LOAD_FACTOR)
    return round(max(_START_SECONDS_FLOOR, _START_SECONDS_PER_NODE * brokers) * factor)


# --- broker configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """One listener of a node. ``name`` is also its key in the security protocol map.

    The listener named ``CONTROLLER`` carries the KRaft quorum; the first other one is the
    inter-broker listener.
    """

    name: str
    port: int
    protocol: str = "PLAINTEXT"


def server_properties(
    *,
    node_id: int,
    listeners: Sequence[Listener],
    voters: Mapping[int, int],
    data_dir: Path,
    brokers: int,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``server.properties`` of one combined broker + controller node, tuned for tests.

    ``voters`` maps each node id to its controller port. ``extra`` is applied last, so it can
    add (SASL, TLS) or override any setting.
    """
    clients = [lst for lst in listeners if lst.name != CONTROLLER]
    controllers = [lst for lst in listeners if lst.name == CONTROLLER]
    if len(controllers) != 1 or not clients:
        raise ValueError("listeners need exactly one CONTROLLER listener and at least one other")
    # Internal topics replicate like production as far as the cluster allows.
    replicas = min(brokers, 3)
    min_isr = 2 if replicas >= 3 else 1
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": ",".join(
            f"{voter}@{HOST}:{port}" for voter, port in sorted(voters.items())
        ),
        "listeners": ",".join(f"{lst.name}://{HOST}:{lst.port}" for lst in listeners),
        "advertised.listeners": ",".join(f"{lst.name}://{HOST}:{lst.port}" for lst in clients),
        "controller.listener.names": CONTROLLER,
        "listener.security.protocol.map": ",".join(
            f"{lst.name}:{lst.protocol}" for lst in listeners
        ),
        "inter.broker.listener.name": clients[0].name,
        "log.dirs": str(data_dir),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        # Tests join groups and create topics all the time: no join delay, auto-create on,
        # small internal topics (the first group or transaction waits for their creation),
        # and short session timeouts allowed for crash and rebalance tests.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "num.partitions": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.num.partitions": "4",
        "group.min.session.timeout.ms": "500",
        # Share groups (KIP-932): a group may shorten its record lock (group config
        # share.record.lock.duration.ms, 30 s by default) to 1 s, so lock-expiry tests are quick.
        "group.share.min.record.lock.duration.ms": "1000",
    }
    props.update(extra or {})
    return props


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    lines = []
    for key, value in props.items():
        if "\n" in value or "\r" in value:
            raise BrokerError(f"broker property {key}={value!r}: line breaks are not allowed")
        # The properties format treats a backslash as an escape.
        lines.append(f"{key}={value.replace(chr(92), chr(92) * 2)}\n")
    # 0600: a secured cluster's file holds the PLAIN users' passwords.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(lines))


def _cluster_id() -> str:
    # What `StorageTool random-uuid` prints (Kafka's Uuid: url-safe base64 of 16 random bytes,
    # never starting with '-'), made here to save a JVM start.
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def _free_ports(count: int) -> list[int]:
    # All sockets stay bound until every port is chosen, so no port is picked twice.
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _check_free(ports: Sequence[int]) -> None:
    """Fail early, naming the port, when a chosen port is taken (the JVM would fail later)."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError as exc:
                raise BrokerError(
                    f"port {port} on {HOST} is not free ({exc.strerror}); choose another "
                    "--port, or leave it out for free ports"
                ) from None


# --- processes -----------------------------------------------------------------------------


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
    except OSError:
        return None
    else:
        return raw.replace(b"\0", b" ").decode(errors="replace")
    # No /proc (macOS): ask ps.
    done = subprocess.run(
        ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        # poll() reaps our own child once it is gone (and keeps its exit code).
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # A zombie has exited; only its parent can make it disappear.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def processes_using(directory: str | os.PathLike[str]) -> list[int]:
    """Pids of the broker JVMs (running ones) whose command line names ``directory``'s nodes.

    :meth:`LocalBroker.stop` never uses this: it signals only the pids it recorded. This finds
    strays, e.g. nodes of a CLI that was killed before it could record them.
    """
    marker = f"{Path(directory).resolve()}{os.sep}node-"
    proc = Path("/proc")
    if proc.is_dir():
        pids = [int(entry.name) for entry in proc.iterdir() if entry.name.isdigit()]
    else:
        done = subprocess.run(["ps", "-Ao", "pid="], capture_output=True, text=True, check=False)
        pids = [int(field) for field in done.stdout.split()]
    found = []
    for pid in pids:
        line = _cmdline(pid)
        if pid != os.getpid() and line is not None and marker in line and _alive(pid):
            found.append(pid)
    return sorted(found)


_ERROR_LINE: Final = re.compile(r"\] (ERROR|FATAL) |^\[ERROR\]|^Exception in thread|^Error: ")


def _excerpt(path: Path) -> str:
    """The first error of a log (the cause; what follows is mostly shutdown noise) and its end."""
    try:
        with open(path, "rb") as f:
            lines = f.read(_LOG_READ_LIMIT).decode(errors="replace").splitlines()
    except OSError as exc:
        return f"    (cannot read {path}: {exc})"
    parts: list[str] = []
    first = next((i for i, line in enumerate(lines) if _ERROR_LINE.search(line)), None)
    if first is not None:
        # The error line and its messages ("Caused by: ..."), without stack frames.
        block = [lines[first]]
        for line in lines[first + 1 :]:
            if line.startswith("[") or len(block) >= 12:
                break
            if not line.lstrip().startswith(("at ", "...")):
                block.append(line)
        parts += ["  first error:", *("    " + line for line in block)]
    parts += ["  last lines:", *("    " + line for line in lines[-_LOG_TAIL_LINES:] or ["(empty)"])]
    return "\n".join(parts)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- cluster state -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """One node as recorded in state.json."""

    node_id: int
    pid: int
    port: int  # what clients connect to (the bootstrap)
    controller_port: int
    home: str
    # A secured cluster's PLAINTEXT inter-broker listener; 0: none (port is PLAINTEXT).
    internal_port: int = 0

    @property
    def plain_port(self) -> int:
        """A port that answers without credentials (readiness checks, ACL set-up)."""
        return self.internal_port or self.port

    @property
    def config(self) -> Path:
        return Path(self.home) / "server.properties"

    @property
    def log(self) -> Path:
        return Path(self.home) / "server.log"

    def running(self) -> bool:
        """Whether this node's JVM runs; a reused pid never passes for it."""
        if self.pid <= 0:
            return False  # stopped on purpose (stop_node, kill_node)
        child = _children.get(self.pid)
        if child is not None:
            # Our own child: its Popen identifies it until reaped, even while it exits.
            return child.poll() is None
        line = _cmdline(self.pid) if _alive(self.pid) else None
        return line is not None and str(self.config) in line

    def exiting(self) -> bool:
        """Not gone yet, but exiting: Linux empties the command line of an exiting process."""
        return (
            self.pid > 0
            and self.pid not in _children
            and _alive(self.pid)
            and _cmdline(self.pid) == ""
        )


@dataclass(frozen=True)
class _State:
    """state.json: the nodes, and whether they were ever all ready (False while starting)."""

    nodes: list[_Node]
    ready: bool
    protocol: str = "PLAINTEXT"


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    pid: int  # 0: stopped on purpose (stop_node, kill_node)
    port: int
    alive: bool
    log: Path


@dataclass(frozen=True)
class ClusterStatus:
    """What :func:`status` found in a cluster directory."""

    directory: Path
    bootstrap: str | None
    nodes: tuple[NodeStatus, ...]
    # False while a start is still waiting for the nodes.
    ready: bool = False
    # Broker JVMs of this directory that state.json does not know (see processes_using).
    strays: tuple[int, ...] = ()
    # The client listener's security protocol (PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL).
    protocol: str = "PLAINTEXT"

    @property
    def running(self) -> bool:
        """Started, ready, and every node alive."""
        return self.ready and bool(self.nodes) and all(node.alive for node in self.nodes)

    @property
    def down(self) -> tuple[int, ...]:
        """Ids of the nodes that do not run."""
        return tuple(node.node_id for node in self.nodes if not node.alive)


class LocalBroker:
    """A local KRaft cluster of ``brokers`` combined nodes whose state lives in ``directory``.

    ``start()`` returns the bootstrap servers (and starts nothing when the cluster already
    runs) once the cluster is usable: every node registered and a topic replicated on all of
    them created. ``stop()`` ends exactly the JVMs it started. Usable as a context manager.

    Failover drills: ``stop_node``, ``kill_node`` (SIGKILL) and ``start_node`` act on single
    nodes of the running cluster; a node keeps its storage and ports across them.

    ``sasl`` (``"scram"``: SCRAM-SHA-256 and SCRAM-SHA-512, or ``"plain"``) and ``tls`` secure
    the listener clients use, with ACLs on and users admin, alice and bob whose passwords are
    new on every start (see :mod:`trpc_kafka._tools.security`); :meth:`credentials` reads them.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        brokers: int = 1,
        extra_properties: Mapping[str, str] | None = None,
        start_timeout: float | None = None,
        sasl: str | None = None,
        tls: bool = False,
        port: int | None = None,
    ) -> None:
        if brokers < 1:
            raise BrokerError(f"brokers={brokers}: a cluster needs at least 1 broker")
        if sasl is not None and sasl not in security.SASL_MECHANISMS:
            raise BrokerError(
                f"sasl={sasl!r}: allowed: {', '.join(map(repr, security.SASL_MECHANISMS))} or None"
            )
        if port is not None and not 1 <= port <= 65536 - brokers:
            raise BrokerError(
                f"port={port}: allowed: 1 to {65536 - brokers} (node N listens on port+N-1)"
            )
        # Resolved, because the pid check compares it with the JVMs' command lines.
        self.directory = Path(directory if directory is not None else default_dir()).resolve()
        self.brokers = brokers
        self.extra_properties = dict(extra_properties or {})
        # None: default_start_timeout() of the node count, at the time of each start.
        self.start_timeout = start_timeout
        self.sasl = sasl
        self.tls = tls
        # The client port of node 1 (node N: port+N-1); None: free ports chosen at each start.
        self.port = port

    @property
    def protocol(self) -> str:
        """The security protocol of the listener clients use (PLAINTEXT when unsecured)."""
        return security.protocol_of(self.sasl, self.tls)

    def credentials(self) -> Credentials | None:
        """Passwords and TLS files of the secured cluster last started here; None if unsecured."""
        return security.read_credentials(self.directory)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def bootstrap(self) -> str | None:
        """The bootstrap servers of the cluster recorded in the directory, if any."""
        state = self._read_state()
        return None if state is None else _bootstrap(state.nodes)

    def start(self) -> str:
        """Start the cluster unless it already runs; return its bootstrap servers."""
        with self._locked():
            state = self._read_state()
            if state is not None:
                if state.ready and all(node.running() for node in state.nodes):
                    if state.protocol != self.protocol:
                        raise BrokerError(
                            f"a {state.protocol} cluster already runs in {self.directory}; "
                            f"stop it first to start a {self.protocol} one there"
                        )
                    if self.port is not None and state.nodes[0].port != self.port:
                        raise BrokerError(
                            f"a cluster already runs in {self.directory} on port "
                            f"{state.nodes[0].port}; stop it first to start one on port "
                            f"{self.port}"
                        )
                    log.debug("broker already running in %s", self.directory)
                    return _bootstrap(state.nodes)
                if state.ready and any(node.pid <= 0 or node.running() for node in state.nodes):
                    # A failover drill in progress: a fresh start would throw its data away.
                    down = [node.node_id for node in state.nodes if not node.running()]
                    raise BrokerError(
                        f"node(s) {_ids(down)} of the cluster in {self.directory} are down: "
                        f"`trpc-kafka broker start-node {' '.join(map(str, down))} --dir "
                        f"{self.directory}` restarts them with their data; `trpc-kafka broker "
                        f"stop --dir {self.directory}` ends the cluster"
                    )
                # Remains of a crash or of an interrupted start: ours (pid check), so end them.
                log.info("cleaning up a cluster that is not fully running in %s", self.directory)
                _terminate(state.nodes)
                self._state_path.unlink(missing_ok=True)
            java = _java()
            classpath = resolve_classpath()
            try:
                return self._launch(java, classpath)
            except _PortTakenError as exc:
                if self.port is not None:
                    raise BrokerError(f"{exc}; choose another --port") from None
                # Ports are chosen free but bound by the JVMs a few seconds later; another
                # program may take one meanwhile. Fresh ports once; a second clash is reported.
                log.info("a port was taken meanwhile, starting again on other ports (%s)", exc)
            return self._launch(java, classpath)

    def stop(self) -> bool:
        """Stop the recorded JVMs (SIGTERM, SIGKILL after 15 s); False if none was recorded."""
        if not self.directory.is_dir():
            return False
        with self._locked():
            state = self._read_state()
            if state is None:
                return False
            _terminate(state.nodes)
            self._state_path.unlink(missing_ok=True)
            # The passwords of a stopped cluster are of no use to anyone.
            (self.directory / security.CREDENTIALS_FILE).unlink(missing_ok=True)
            return True

    def stop_node(self, *node_ids: int) -> list[int]:
        """Stop nodes as an operator would (SIGTERM: controlled shutdown), keeping their storage.

        Returns the ids of the nodes that were running; ``start_node`` brings them back.
        """
        return self._end_nodes(node_ids, kill=False)

    def kill_node(self, *node_ids: int) -> list[int]:
        """SIGKILL nodes (a crash: no controlled shutdown), keeping their storage.

        Returns the ids of the nodes that were running; ``start_node`` brings them back.
        """
        return self._end_nodes(node_ids, kill=True)

    def start_node(self, *node_ids: int, timeout: float | None = None) -> list[int]:
        """Start stopped or killed nodes again on their ports, with the storage they had.

        Returns once each of them answers as a broker of the cluster and is back in the
        in-sync replicas of every partition it holds (needs a quorum of the controllers
        running: more than half of the nodes, these included). Nodes that run already are left
        alone; returns the ids actually started. A node that cannot start is ended again and
        the error names its log.
        """
        with self._locked():
            state = self._require_state()
            chosen = self._select(state, node_ids)
            todo = [node for node in chosen if not node.running()]
            if not todo:
                return []
            seconds = timeout if timeout is not None else self._start_seconds(len(todo))
            deadline = time.monotonic() + seconds
            java = _java()
            classpath = resolve_classpath()
            log4j = self.directory / "log4j2.properties"
            nodes = {node.node_id: node for node in state.nodes}
            started: list[_Node] = []
            try:
                for node in todo:
                    fresh = dataclasses.replace(
                        node, pid=_spawn(java, classpath, log4j, Path(node.home))
                    )
                    nodes[node.node_id] = fresh
                    started.append(fresh)
                    # Recorded at once: `stop` can end the JVM even if this process dies now.
                    self._write_state(list(nodes.values()), ready=state.ready)
                log.info("waiting for node(s) %s to rejoin", _ids(n.node_id for n in todo))
                _wait_rejoined(started, len(state.nodes), deadline, seconds)
            except BaseException:
                with contextlib.suppress(BrokerError):
                    _terminate(started)
                for node in started:
                    nodes[node.node_id] = dataclasses.replace(node, pid=0)
                self._write_state(list(nodes.values()), ready=state.ready)
                raise
            return [node.node_id for node in todo]

    def status(self) -> ClusterStatus:
        state = self._read_state() or _State(nodes=[], ready=False)
        nodes = tuple(
            NodeStatus(node.node_id, node.pid, node.port, node.running(), node.log)
            for node in state.nodes
        )
        known = {node.pid for node in nodes if node.alive}
        strays = tuple(pid for pid in processes_using(self.directory) if pid not in known)
        return ClusterStatus(
            directory=self.directory,
            bootstrap=_bootstrap(state.nodes) if state.nodes else None,
            nodes=nodes,
            ready=state.ready,
            strays=strays,
            protocol=state.protocol,
        )

    # --- internals ---

    def _start_seconds(self, brokers: int) -> float:
        if self.start_timeout is not None:
            return self.start_timeout
        return default_start_timeout(brokers)

    def _require_state(self) -> _State:
        state = self._read_state()
        if state is None:
            raise BrokerError(
                f"no cluster recorded in {self.directory}; start one with `trpc-kafka broker start`"
            )
        if not state.ready:
            raise BrokerError(
                f"the cluster in {self.directory} is still starting (or its start failed); "
                "wait for `trpc-kafka broker start` to finish"
            )
        return state

    def _select(self, state: _State, node_ids: Sequence[int]) -> list[_Node]:
        if not node_ids:
            raise BrokerError("name at least one node id")
        known = {node.node_id: node for node in state.nodes}
        unknown = [node_id for node_id in node_ids if node_id not in known]
        if unknown:
            raise BrokerError(
                f"node {_ids(unknown)}: the cluster in {self.directory} has node(s) {_ids(known)}"
            )
        return [known[node_id] for node_id in dict.fromkeys(node_ids)]

    def _end_nodes(self, node_ids: Sequence[int], *, kill: bool) -> list[int]:
        with self._locked():
            state = self._require_state()
            chosen = self._select(state, node_ids)
            live = [node for node in chosen if node.running()]
            if kill:
                for node in live:
                    _signal(node.pid, signal.SIGKILL)
                left = [node.pid for node in _wait_gone(live, _KILL_WAIT) if node.running()]
                if left:
                    raise BrokerError(f"could not end broker pids {left}")
            else:
                _terminate(live)
            ended = {node.node_id for node in chosen}
            self._write_state(
                [
                    dataclasses.replace(node, pid=0) if node.node_id in ended else node
                    for node in state.nodes
                ],
                ready=True,
            )
            return [node.node_id for node in live]

    @property
    def _state_path(self) -> Path:
        return self.directory / STATE_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two CLIs (or test sessions) on one directory must not start it twice.
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_state(self) -> _State | None:
        try:
            raw: Any = json.loads(self._state_path.read_text(encoding="utf-8"))
            return _State(
                [_Node(**node) for node in raw["nodes"]],
                ready=bool(raw["ready"]),
                protocol=str(raw.get("protocol", "PLAINTEXT")),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise BrokerError(
                f"unreadable broker state {self._state_path} ({exc}); "
                f"end its JVMs (pids: {processes_using(self.directory)}) and remove the file"
            ) from None

    def _write_state(self, nodes: Sequence[_Node], *, ready: bool) -> None:
        data = {
            "brokers": len(nodes),
            "bootstrap": _bootstrap(nodes),
            "protocol": self.protocol,
            "ready": ready,
            "nodes": [asdict(node) for node in nodes],
        }
        _write_atomic(self._state_path, json.dumps(data, indent=2) + "\n")

    def _launch(self, java: str, classpath: str) -> str:
        began = time.monotonic()
        timeout = self._start_seconds(self.brokers)
        deadline = began + timeout
        creds = self._new_credentials()
        # Per node: the client port, the controller port, and a secured cluster's internal one.
        per_node = 2 if creds is None else 3
        if self.port is None:
            ports = _free_ports(per_node * self.brokers)
        else:
            client_ports = range(self.port, self.port + self.brokers)
            _check_free(client_ports)
            # The others free as usual; a few more than needed, as one may be a client port.
            others = _free_ports(per_node * self.brokers)
            spare = iter([p for p in others if p not in client_ports])
            ports = [
                client_ports[i // per_node] if i % per_node == 0 else next(spare)
                for i in range(per_node * self.brokers)
            ]
        plan = [
            _Node(
                node_id=i + 1,
                pid=0,
                port=ports[per_node * i],
                controller_port=ports[per_node * i + 1],
                home=str(self.directory / f"node-{i + 1}"),
                internal_port=0 if creds is None else ports[per_node * i + 2],
            )
            for i in range(self.brokers)
        ]
        voters = {node.node_id: node.controller_port for node in plan}
        log4j = self.directory / "log4j2.properties"
        shutil.copyfile(_LOG4J2, log4j)

        extra: dict[str, str] = {}
        if creds is not None:
            extra.update(security.listener_properties(creds))
        extra.update(self.extra_properties)
        homes: list[Path] = []
        for node in plan:
            home = Path(node.home)
            shutil.rmtree(home, ignore_errors=True)
            (home / "data").mkdir(parents=True)
            props = server_properties(
                node_id=node.node_id,
                listeners=_listeners(node, self.protocol),
                voters=voters,
                data_dir=home / "data",
                brokers=self.brokers,
                extra=extra,
            )
            _write_properties(home / "server.properties", props)
            homes.append(home)

        nodes: list[_Node] = []
        try:
            _format(
                java,
                classpath,
                log4j,
                homes,
                deadline=deadline,
                timeout=timeout,
                extra_args=[] if creds is None else security.scram_format_args(creds),
            )
            for node, home in zip(plan, homes, strict=True):
                pid = _spawn(java, classpath, log4j, home)
                nodes.append(dataclasses.replace(node, pid=pid))
                # Recorded at once: `stop` can end the JVMs even if this process dies now.
                self._write_state(nodes, ready=False)
            log.info("waiting for %d node(s) in %s", len(nodes), self.directory)
            _wait_ready(nodes, deadline, timeout)
            _wait_usable(nodes, deadline, timeout)
            if creds is not None:
                _secure_ready(nodes, creds, deadline, timeout)
            self._write_state(nodes, ready=True)
        except BaseException:
            _terminate(nodes)
            self._state_path.unlink(missing_ok=True)
            raise
        log.info("ready in %.1f s", time.monotonic() - began)
        return _bootstrap(nodes)

    def _new_credentials(self) -> Credentials | None:
        """A secured start's new passwords and certificates (``credentials.json``); else None."""
        (self.directory / security.CREDENTIALS_FILE).unlink(missing_ok=True)
        if self.sasl is None and not self.tls:
            return None
        try:
            return security.new_credentials(self.directory, self.sasl, self.tls)
        except TlsError as exc:
            raise BrokerError(f"cannot make the certificates of the TLS listener: {exc}") from None


def _listeners(node: _Node, protocol: str) -> list[Listener]:
    if not node.internal_port:
        return [Listener("PLAINTEXT", node.port), Listener(CONTROLLER, node.controller_port)]
    # The internal listener first: it carries inter-broker traffic.
    return [
        Listener(security.INTERNAL_LISTENER, node.internal_port),
        Listener(security.CLIENT_LISTENER, node.port, protocol),
        Listener(CONTROLLER, node.controller_port),
    ]


def _secure_ready(
    nodes: Sequence[_Node], creds: Credentials, deadline: float, timeout: float
) -> None:
    """Grant alice her ACLs, then wait until each node's secured listener lets admin in."""
    try:
        security.grant_acls([f"{HOST}:{node.internal_port}" for node in nodes], deadline)
    except (KafkaException, TimeoutError) as exc:
        node = nodes[0]
        raise BrokerError(
            f"could not set up the ACLs of the secured cluster within {timeout:g} s: {exc}; "
            f"log: {node.log}\n{_excerpt(node.log)}"
        ) from None
    settings: dict[str, str | int | float] = {
        **creds.client_settings(),
        "log_level": 0,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 250,
    }
    for node in nodes:
        errors: list[str] = []
        admin = AdminClient(
            {**settings, "bootstrap.servers": f"{HOST}:{node.port}"},
            error_cb=lambda err, seen=errors: seen.append(err.str()),
        )
        while True:
            try:
                admin.list_topics(timeout=1.0)
                break
            except KafkaException as exc:
                errors.append(str(exc))
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the {creds.protocol} listener of node {node.node_id} (port {node.port}) "
                    f"did not let admin in within {timeout:g} s (last error: "
                    f"{errors[-1] if errors else 'none'}); log: {node.log}\n{_excerpt(node.log)}"
                )


def _bootstrap(nodes: Sequence[_Node]) -> str:
    return ",".join(f"{HOST}:{node.port}" for node in nodes)


def _jvm(java: str, classpath: str, log4j: Path, home: Path, opts: Sequence[str]) -> list[str]:
    return [
        java,
        *opts,
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dtrpc.kafka.log.file={home / 'server.log'}",
        "-cp",
        classpath,
    ]


def _format(
    java: str,
    classpath: str,
    log4j: Path,
    homes: Sequence[Path],
    *,
    deadline: float,
    timeout: float,
    extra_args: Sequence[str] = (),
) -> None:
    # One StorageTool per node, all at once: each is a JVM start of about a second.
    cluster_id = _cluster_id()
    running: list[tuple[Path, subprocess.Popen[bytes]]] = []
    try:
        for home in homes:
            cmd = [
                *_jvm(java, classpath, log4j, home, _TOOL_JVM_OPTS),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(home / "server.properties"),
                *extra_args,
            ]
            with open(home / "server.log", "ab") as out:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=home
                )
            running.append((home, proc))
        for home, proc in running:
            try:
                rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BrokerError(
                    f"formatting the storage of {home.name} did not finish within {timeout:g} s; "
                    f"log: {home / 'server.log'}\n{_excerpt(home / 'server.log')}"
                ) from None
            if rc != 0:
                raise BrokerError(
                    f"formatting the storage of {home.name} failed (exit {rc}); "
                    f"log: {home / 'server.log'}\n{_excerpt(home / 'server.log')}"
                )
    finally:
        for _, proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _spawn(java: str, classpath: str, log4j: Path, home: Path) -> int:
    cmd = [
        *_jvm(java, classpath, log4j, home, _JVM_OPTS),
        "kafka.Kafka",
        str(home / "server.properties"),
    ]
    with open(home / "server.log", "ab") as out:
        # A session of its own: the JVM outlives the CLI and ignores the terminal's Ctrl-C.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def _quiet(*_: object) -> None:
    """librdkafka error callback: refused connections are expected while JVMs start."""


def _wait_ready(nodes: Sequence[_Node], deadline: float, timeout: float) -> None:
    """Until every node answers a metadata request listing all nodes as brokers."""
    admins = {
        node.node_id: AdminClient(
            {
                "bootstrap.servers": f"{HOST}:{node.plain_port}",
                "log_level": 0,
                # Retry soon: the default backoff grows to 10 s while the JVM is not up yet.
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 250,
            },
            error_cb=_quiet,
        )
        for node in nodes
    }
    try:
        pending = list(nodes)
        while True:
            for node in nodes:
                if not node.running():
                    _raise_exited(node)
            pending = [
                n for n in pending if not _answers(admins[n.node_id], n.plain_port, len(nodes))
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                node = pending[0]
                raise BrokerError(
                    f"broker node {node.node_id} (port {node.port}) was not ready within "
                    f"{timeout:g} s; log: {node.log}\n{_excerpt(node.log)}"
                )
            time.sleep(0.1)
    finally:
        # Destroyed now, not when a caller drops a traceback that holds this frame.
        admins.clear()


def _admin(nodes: Sequence[_Node]) -> AdminClient:
    """An admin client on the nodes' credential-free ports, quiet about refused connections."""
    return AdminClient(
        {
            "bootstrap.servers": ",".join(f"{HOST}:{node.plain_port}" for node in nodes),
            "log_level": 0,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 250,
        },
        error_cb=_quiet,
    )


def _wait_usable(nodes: Sequence[_Node], deadline: float, timeout: float) -> None:
    """Until a topic replicated on every node exists with all replicas in sync; then delete it.

    Nodes answering metadata is not enough: the controller may not count a node as usable yet
    and reject a topic with replication factor N (INVALID_REPLICATION_FACTOR).
    """
    admin = _admin(nodes)
    spec = NewTopic(_PROBE_TOPIC, num_partitions=1, replication_factor=len(nodes))
    last = "none"
    created = False
    while True:
        for node in nodes:
            if not node.running():
                _raise_exited(node)
        left = max(0.5, deadline - time.monotonic())
        try:
            if not created:
                futures = admin.create_topics([spec], operation_timeout=min(left, 10.0))
                try:
                    futures[_PROBE_TOPIC].result(timeout=min(left, 15.0))
                except KafkaException as exc:
                    err = kafka_error_of(exc)
                    if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                created = True
            found = admin.list_topics(topic=_PROBE_TOPIC, timeout=min(left, 3.0)).topics.get(
                _PROBE_TOPIC
            )
            if found is not None and found.error is None and found.partitions:
                if all(
                    p.error is None and p.leader >= 0 and len(p.isrs) == len(nodes)
                    for p in found.partitions.values()
                ):
                    break
                last = "replicas not in sync yet"
            else:
                last = f"topic not in the metadata yet ({None if found is None else found.error})"
        except (KafkaException, concurrent.futures.TimeoutError) as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() > deadline:
            node = nodes[0]
            raise BrokerError(
                f"the {len(nodes)} node(s) answer but a topic with replication factor "
                f"{len(nodes)} was not usable within {timeout:g} s (last: {last}); "
                f"log: {node.log}\n{_excerpt(node.log)}"
            )
        time.sleep(0.1)
    _delete_probe(admin, nodes, deadline)


def _delete_probe(admin: AdminClient, nodes: Sequence[_Node], deadline: float) -> None:
    """Delete the probe topic and wait until no node lists it: users never see it."""
    per_node = [(node, _admin([node])) for node in nodes]
    deleted = False
    while True:
        if not deleted:
            try:
                for future in admin.delete_topics([_PROBE_TOPIC], operation_timeout=10.0).values():
                    future.result(timeout=15.0)
                deleted = True
            except (KafkaException, concurrent.futures.TimeoutError) as exc:
                # UNKNOWN_TOPIC_OR_PART: an earlier attempt went through after all.
                err = kafka_error_of(exc)
                deleted = err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        if deleted:
            # Each node learns of the deletion from the metadata log, a moment apart.
            with contextlib.suppress(KafkaException):
                per_node = [
                    (node, client)
                    for node, client in per_node
                    if _PROBE_TOPIC in client.list_topics(timeout=3.0).topics
                ]
            if not per_node:
                return
        if time.monotonic() > deadline:
            # The cluster is usable; a leftover probe topic is only untidy.
            log.warning("topic %s is still listed after the start's deadline", _PROBE_TOPIC)
            return
        time.sleep(0.1)


def _rejoined(admin: AdminClient, node_id: int, cluster_size: int) -> str | None:
    """None once ``node_id`` is a broker again and in sync on all its partitions; else why not."""
    try:
        metadata = admin.list_topics(timeout=3.0)
    except KafkaException as exc:
        return str(exc)
    if node_id not in metadata.brokers:
        return f"node {node_id} not registered yet ({len(metadata.brokers)} of {cluster_size})"
    for topic in metadata.topics.values():
        for partition in topic.partitions.values():
            if node_id in partition.replicas and (
                node_id not in partition.isrs or partition.leader < 0
            ):
                return f"{topic.topic}[{partition.id}] not in sync on node {node_id} yet"
    return None


def _wait_rejoined(
    started: Sequence[_Node], cluster_size: int, deadline: float, timeout: float
) -> None:
    """Until each restarted node answers, is registered and caught up (start_node)."""
    admins = {node.node_id: _admin([node]) for node in started}
    try:
        pending = list(started)
        while True:
            for node in started:
                if not node.running():
                    _raise_exited(node)
            reasons = {}
            for node in pending:
                reason = _rejoined(admins[node.node_id], node.node_id, cluster_size)
                if reason is not None:
                    reasons[node.node_id] = reason
            pending = [node for node in pending if node.node_id in reasons]
            if not pending:
                return
            if time.monotonic() > deadline:
                node = pending[0]
                raise BrokerError(
                    f"node {node.node_id} (port {node.port}) did not rejoin the cluster within "
                    f"{timeout:g} s ({reasons[node.node_id]}); check that at least "
                    f"{cluster_size // 2 + 1} of the {cluster_size} nodes run (the controller "
                    f"quorum); log: {node.log}\n{_excerpt(node.log)}"
                )
            time.sleep(0.2)
    finally:
        admins.clear()


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(map(str, ids))


def _raise_exited(node: _Node) -> NoReturn:
    child = _children.get(node.pid)
    code = "" if child is None else f" with exit code {child.returncode}"
    excerpt = _excerpt(node.log)
    error = _PortTakenError if "Address already in use" in excerpt else BrokerError
    raise error(
        f"broker node {node.node_id} (pid {node.pid}, port {node.port}) exited{code} during "
        f"start; log: {node.log}\n{excerpt}"
    )


def _answers(admin: AdminClient, port: int, brokers: int) -> bool:
    try:
        # A refused connection fails here at once, instead of a metadata request's timeout.
        socket.create_connection((HOST, port), timeout=0.5).close()
        # A loaded machine can take more than a second to answer.
        metadata = admin.list_topics(timeout=3.0)
    except (OSError, KafkaException):
        return False
    return len(metadata.brokers) >= brokers


def _terminate(nodes: Sequence[_Node]) -> None:
    """SIGTERM the nodes that still are our JVMs, SIGKILL what is left after STOP_GRACE."""
    live = [node for node in nodes if node.running()]
    for node in live:
        _signal(node.pid, signal.SIGTERM)
    live = _wait_gone(live, STOP_GRACE)
    for node in live:
        if node.running():
            log.warning("node %d (pid %d) ignored SIGTERM; killing it", node.node_id, node.pid)
            _signal(node.pid, signal.SIGKILL)
    left = [node.pid for node in _wait_gone(live, _KILL_WAIT) if node.running()]
    if left:
        raise BrokerError(f"could not end broker pids {left}")


def _wait_gone(nodes: Sequence[_Node], seconds: float) -> list[_Node]:
    deadline = time.monotonic() + seconds
    live = list(nodes)
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [node for node in live if node.running() or node.exiting()]
    return live


# --- using a cluster -----------------------------------------------------------------------


@contextlib.contextmanager
def broker_or_temporary(bootstrap: str | None = None) -> Iterator[str]:
    """``bootstrap`` if given, else a 1-node broker in a temporary directory for the block."""
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="trpc-kafka-") as tmp:
        broker = LocalBroker(tmp)
        started = broker.start()
        try:
            yield started
        finally:
            broker.stop()


def create_topic(
    bootstrap: str,
    name: str,
    *,
    partitions: int = 1,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    client_settings: Mapping[str, str] | None = None,
) -> None:
    """Create a topic and return once every partition has a leader.

    ``create_topics`` completes when the controller accepted the topic; producers and consumers
    need the leaders in the metadata the brokers serve, which comes a little later.
    ``client_settings`` are added to the admin client's (a secured cluster's
    ``credentials().client_settings()``).
    """
    admin = AdminClient({**(client_settings or {}), "bootstrap.servers": bootstrap})
    spec = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=replication_factor,
        config=dict(config or {}),
    )
    for future in admin.create_topics([spec], operation_timeout=timeout).values():
        future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        found = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
        if (
            found is not None
            and found.error is None
            and len(found.partitions) == partitions
            and all(p.leader >= 0 and p.error is None for p in found.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topic {name}: partitions without a leader after {timeout:g} s")
        time.sleep(0.05)


# --- module-level shortcuts ----------------------------------------------------------------


def start_cluster(
    brokers: int = 1,
    directory: str | os.PathLike[str] | None = None,
    *,
    extra_properties: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Start (or find running) a cluster of ``brokers`` nodes; return its bootstrap servers."""
    return LocalBroker(
        directory, brokers=brokers, extra_properties=extra_properties, start_timeout=timeout
    ).start()


def stop(directory: str | os.PathLike[str] | None = None) -> bool:
    """Stop the cluster in ``directory``; False if none was recorded there."""
    return LocalBroker(directory).stop()


def status(directory: str | os.PathLike[str] | None = None) -> ClusterStatus:
    """What runs in ``directory``."""
    return LocalBroker(directory).status()
