"""The JVMs of local nodes: format, spawn, find and end them; ``Node``, one as recorded.

Only pids whose command line still names the node's directory are ever signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from trpc_kafka._tools.distribution import BrokerError, log_excerpt, new_cluster_id

# The local broker logs under one name, as it did before it was split into modules.
log = logging.getLogger("trpc_kafka._tools.broker")

STOP_GRACE: Final = 15.0
# A SIGKILLed JVM with a large heap can take seconds to be gone on a busy machine.
KILL_WAIT: Final = 30.0
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
children: dict[int, subprocess.Popen[bytes]] = {}


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
    child = children.get(pid)
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


def send_signal(pid: int, sig: signal.Signals) -> None:
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


@dataclass(frozen=True)
class Node:
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
        child = children.get(self.pid)
        if child is not None:
            # Our own child: its Popen identifies it until reaped, even while it exits.
            return child.poll() is None
        line = _cmdline(self.pid) if _alive(self.pid) else None
        return line is not None and str(self.config) in line

    def exiting(self) -> bool:
        """Not gone yet, but exiting: Linux empties the command line of an exiting process."""
        return (
            self.pid > 0
            and self.pid not in children
            and _alive(self.pid)
            and _cmdline(self.pid) == ""
        )


def _jvm(java: str, classpath: str, log4j: Path, home: Path, opts: Sequence[str]) -> list[str]:
    return [
        java,
        *opts,
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dtrpc.kafka.log.file={home / 'server.log'}",
        "-cp",
        classpath,
    ]


def format_storage(
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
    cluster_id = new_cluster_id()
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
                    f"log: {home / 'server.log'}\n{log_excerpt(home / 'server.log')}"
                ) from None
            if rc != 0:
                raise BrokerError(
                    f"formatting the storage of {home.name} failed (exit {rc}); "
                    f"log: {home / 'server.log'}\n{log_excerpt(home / 'server.log')}"
                )
    finally:
        for _, proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def spawn(java: str, classpath: str, log4j: Path, home: Path) -> int:
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
    children[proc.pid] = proc
    return proc.pid


def terminate(nodes: Sequence[Node]) -> None:
    """SIGTERM the nodes that still are our JVMs, SIGKILL what is left after STOP_GRACE."""
    live = [node for node in nodes if node.running()]
    for node in live:
        send_signal(node.pid, signal.SIGTERM)
    live = wait_gone(live, STOP_GRACE)
    for node in live:
        if node.running():
            log.warning("node %d (pid %d) ignored SIGTERM; killing it", node.node_id, node.pid)
            send_signal(node.pid, signal.SIGKILL)
    left = [node.pid for node in wait_gone(live, KILL_WAIT) if node.running()]
    if left:
        raise BrokerError(f"could not end broker pids {left}")


def wait_gone(nodes: Sequence[Node], seconds: float) -> list[Node]:
    deadline = time.monotonic() + seconds
    live = list(nodes)
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [node for node in live if node.running() or node.exiting()]
    return live
