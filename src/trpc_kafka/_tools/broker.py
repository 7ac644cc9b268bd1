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

The Kafka distribution and node settings live in ``distribution.py``, the JVMs in ``nodes.py``,
the readiness checks in ``readiness.py``; this module ties them into a cluster. (A little over
600 lines: :class:`LocalBroker` is one class, start, stop and the node drills sharing its locked
state file.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from confluent_kafka.admin import AdminClient

# Where it is defined: confluent_kafka.admin re-exports it without declaring it for mypy.
from confluent_kafka.cimpl import NewTopic

from trpc_kafka._tools import security
from trpc_kafka._tools.distribution import (
    CONTROLLER,
    HOST,
    BrokerError,
    Listener,
    PortTakenError,
    check_free,
    default_dir,
    default_start_timeout,
    find_java,
    free_ports,
    resolve_classpath,
    server_properties,
    write_atomic,
    write_properties,
)
from trpc_kafka._tools.nodes import (
    KILL_WAIT,
    Node,
    format_storage,
    processes_using,
    send_signal,
    spawn,
    terminate,
    wait_gone,
)
from trpc_kafka._tools.readiness import secure_ready, wait_ready, wait_rejoined, wait_usable
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

STATE_FILE: Final = "state.json"


_LOG4J2: Final = Path(__file__).with_name("log4j2.properties")


@dataclass(frozen=True)
class _State:
    """state.json: the nodes, and whether they were ever all ready (False while starting)."""

    nodes: list[Node]
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
                terminate(state.nodes)
                self._state_path.unlink(missing_ok=True)
            java = find_java()
            classpath = resolve_classpath()
            try:
                return self._launch(java, classpath)
            except PortTakenError as exc:
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
            terminate(state.nodes)
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
            java = find_java()
            classpath = resolve_classpath()
            log4j = self.directory / "log4j2.properties"
            nodes = {node.node_id: node for node in state.nodes}
            started: list[Node] = []
            try:
                for node in todo:
                    fresh = dataclasses.replace(
                        node, pid=spawn(java, classpath, log4j, Path(node.home))
                    )
                    nodes[node.node_id] = fresh
                    started.append(fresh)
                    # Recorded at once: `stop` can end the JVM even if this process dies now.
                    self._write_state(list(nodes.values()), ready=state.ready)
                log.info("waiting for node(s) %s to rejoin", _ids(n.node_id for n in todo))
                wait_rejoined(started, len(state.nodes), deadline, seconds)
            except BaseException:
                with contextlib.suppress(BrokerError):
                    terminate(started)
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

    def _select(self, state: _State, node_ids: Sequence[int]) -> list[Node]:
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
                    send_signal(node.pid, signal.SIGKILL)
                left = [node.pid for node in wait_gone(live, KILL_WAIT) if node.running()]
                if left:
                    raise BrokerError(f"could not end broker pids {left}")
            else:
                terminate(live)
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
                [Node(**node) for node in raw["nodes"]],
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

    def _write_state(self, nodes: Sequence[Node], *, ready: bool) -> None:
        data = {
            "brokers": len(nodes),
            "bootstrap": _bootstrap(nodes),
            "protocol": self.protocol,
            "ready": ready,
            "nodes": [asdict(node) for node in nodes],
        }
        write_atomic(self._state_path, json.dumps(data, indent=2) + "\n")

    def _launch(self, java: str, classpath: str) -> str:
        began = time.monotonic()
        timeout = self._start_seconds(self.brokers)
        deadline = began + timeout
        creds = self._new_credentials()
        # Per node: the client port, the controller port, and a secured cluster's internal one.
        per_node = 2 if creds is None else 3
        if self.port is None:
            ports = free_ports(per_node * self.brokers)
        else:
            client_ports = range(self.port, self.port + self.brokers)
            check_free(client_ports)
            # The others free as usual; a few more than needed, as one may be a client port.
            others = free_ports(per_node * self.brokers)
            spare = iter([p for p in others if p not in client_ports])
            ports = [
                client_ports[i // per_node] if i % per_node == 0 else next(spare)
                for i in range(per_node * self.brokers)
            ]
        plan = [
            Node(
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
            write_properties(home / "server.properties", props)
            homes.append(home)

        nodes: list[Node] = []
        try:
            format_storage(
                java,
                classpath,
                log4j,
                homes,
                deadline=deadline,
                timeout=timeout,
                extra_args=[] if creds is None else security.scram_format_args(creds),
            )
            for node, home in zip(plan, homes, strict=True):
                pid = spawn(java, classpath, log4j, home)
                nodes.append(dataclasses.replace(node, pid=pid))
                # Recorded at once: `stop` can end the JVMs even if this process dies now.
                self._write_state(nodes, ready=False)
            log.info("waiting for %d node(s) in %s", len(nodes), self.directory)
            wait_ready(nodes, deadline, timeout)
            wait_usable(nodes, deadline, timeout)
            if creds is not None:
                secure_ready(nodes, creds, deadline, timeout)
            self._write_state(nodes, ready=True)
        except BaseException:
            terminate(nodes)
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


def _listeners(node: Node, protocol: str) -> list[Listener]:
    if not node.internal_port:
        return [Listener("PLAINTEXT", node.port), Listener(CONTROLLER, node.controller_port)]
    # The internal listener first: it carries inter-broker traffic.
    return [
        Listener(security.INTERNAL_LISTENER, node.internal_port),
        Listener(security.CLIENT_LISTENER, node.port, protocol),
        Listener(CONTROLLER, node.controller_port),
    ]


def _bootstrap(nodes: Sequence[Node]) -> str:
    return ",".join(f"{HOST}:{node.port}" for node in nodes)


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(map(str, ids))


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
