"""The Kafka distribution and the settings of a local node: jars, java, ports, properties.

Also the error every part of the local broker raises, and the log excerpt its messages carry
(mvn's log as much as a node's).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# The local broker logs under one name, as it did before it was split into modules.
log = logging.getLogger("trpc_kafka._tools.broker")

HOST: Final = "127.0.0.1"
CONTROLLER: Final = "CONTROLLER"

POM: Final = Path(__file__).with_name("pom.xml")
# A cold ~/.m2 downloads ~60 MB; generous, but a hung mvn must not hang `make test` forever.
_MVN_TIMEOUT: Final = 900.0
# Start deadlines: per node, never below the floor, times the machine's load (see
# default_start_timeout). A 3-node cluster on an idle 2-core machine starts in 10-20 s.
_START_SECONDS_PER_NODE: Final = 60.0
_START_SECONDS_FLOOR: Final = 90.0
_MAX_LOAD_FACTOR: Final = 3.0
_LOG_TAIL_LINES: Final = 15
_LOG_READ_LIMIT: Final = 4 * 1024 * 1024


class BrokerError(RuntimeError):
    """The local broker could not be started or stopped; the message names cause and log."""


class PortTakenError(BrokerError):
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


def find_java() -> str:
    return _tool("java", "JAVA", "the local Kafka broker needs a Java 17+ runtime")


def resolve_classpath() -> str:
    """The broker's classpath; mvn runs only when the cache for this pom.xml is missing.

    The cache lives under :func:`cache_root`, keyed by a hash of the pom, so every cluster
    directory (tests use temporary ones) shares it. A cached entry whose jars are gone
    (``~/.m2`` cleaned) is resolved again.
    """
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
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
            str(POM),
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
                    f"log: {mvn_log}\n{log_excerpt(mvn_log)}"
                ) from None
            except OSError as exc:
                raise BrokerError(f"cannot run mvn ({mvn}): {exc}") from None
        if rc != 0 or not out.is_file():
            raise BrokerError(
                f"mvn failed (exit {rc}) resolving the Kafka jars of {POM}; "
                f"log: {mvn_log}\n{log_excerpt(mvn_log)}"
            )
        classpath = out.read_text(encoding="utf-8").strip()
    write_atomic(cache, classpath + "\n")
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


def write_properties(path: Path, props: Mapping[str, str]) -> None:
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


def new_cluster_id() -> str:
    # What `StorageTool random-uuid` prints (Kafka's Uuid: url-safe base64 of 16 random bytes,
    # never starting with '-'), made here to save a JVM start.
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def free_ports(count: int) -> list[int]:
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


def check_free(ports: Sequence[int]) -> None:
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


# --- logs and files ------------------------------------------------------------------------


_ERROR_LINE: Final = re.compile(r"\] (ERROR|FATAL) |^\[ERROR\]|^Exception in thread|^Error: ")


def log_excerpt(path: Path) -> str:
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


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
