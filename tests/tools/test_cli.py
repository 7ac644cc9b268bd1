"""The ``trpc-kafka`` console script, run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from trpc_kafka._tools.broker import create_topic, processes_using, status, stop

CLI = Path(sys.executable).with_name("trpc-kafka")
BOOTSTRAP = re.compile(r"127\.0\.0\.1:\d+")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
        check=False,
    )


def test_broker_start_status_stop(tmp_path: Path) -> None:
    directory = str(tmp_path)
    try:
        started = run("broker", "start", "--dir", directory)
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.splitlines()[-1]
        assert BOOTSTRAP.fullmatch(bootstrap)
        assert f"log {tmp_path / 'node-1' / 'server.log'}" in started.stdout

        again = run("broker", "start", "--dir", directory)
        assert again.returncode == 0, again.stderr
        assert f"broker already running in {directory}" in again.stdout
        assert again.stdout.splitlines()[-1] == bootstrap

        running = run("broker", "status", "--dir", directory)
        assert running.returncode == 0
        assert re.search(r"node 1: pid \d+, port \d+, alive", running.stdout)
        assert running.stdout.splitlines()[-1] == bootstrap

        stopped = run("broker", "stop", "--dir", directory)
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped the broker in {directory}" in stopped.stdout
    finally:
        # The library cleans up should an assertion fail before the CLI stopped it.
        stop(tmp_path)
    assert processes_using(tmp_path) == []

    gone = run("broker", "status", "--dir", directory)
    assert gone.returncode == 3
    assert "not running" in gone.stdout
    assert run("broker", "stop", "--dir", directory).returncode == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_broker_start_on_a_chosen_port_with_topics(tmp_path: Path) -> None:
    directory = str(tmp_path)
    port = _free_port()
    try:
        started = run(
            "broker", "start", "--dir", directory, "--port", str(port),
            "--topic", "orders:3", "--topic", "audit.log:2:1",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        lines = started.stdout.splitlines()
        assert lines[-1] == f"127.0.0.1:{port}"
        assert "topic orders: created (3 partition(s), replication factor 1)" in lines
        assert "topic audit.log: created (2 partition(s), replication factor 1)" in lines
        admin = AdminClient({"bootstrap.servers": lines[-1]})
        topics = admin.list_topics(timeout=30).topics
        assert len(topics["orders"].partitions) == 3
        assert len(topics["audit.log"].partitions) == 2

        again = run("broker", "start", "--dir", directory, "--topic", "orders:5")
        assert again.returncode == 0, again.stderr
        assert "topic orders: exists already (left as it is)" in again.stdout
        assert len(admin.list_topics(timeout=30).topics["orders"].partitions) == 3

        other = run("broker", "start", "--dir", directory, "--port", str(_free_port()))
        assert other.returncode == 1
        assert f"already runs in {tmp_path} on port {port}" in other.stderr
    finally:
        stop(tmp_path)


def test_broker_start_port_and_topic_errors(tmp_path: Path) -> None:
    directory = str(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run("broker", "start", "--dir", directory, "--port", str(port))
    assert busy.returncode == 1 and busy.stdout == ""
    assert f"port {port} on 127.0.0.1 is not free" in busy.stderr
    assert processes_using(tmp_path) == []

    for arg, message in (
        (["--port", "0"], "--port: '0' is not a port (1 to 65535)"),
        (["--topic", "orders"], "'orders': expected NAME:PARTITIONS or NAME:PARTITIONS:RF"),
        (["--topic", "orders:0"], "PARTITIONS and RF must be whole numbers of at least 1"),
        (["--topic", "a b:1"], "'a b:1': allowed: topic names of 1 to 249 characters"),
    ):
        bad = run("broker", "start", "--dir", directory, *arg)
        assert bad.returncode == 2, arg
        assert message in bad.stderr, (arg, bad.stderr)
    rf = run("broker", "start", "--dir", directory, "--topic", "t:1:2")
    assert rf.returncode == 1
    assert "replication factor 2 needs at least 2 nodes" in rf.stderr
    assert processes_using(tmp_path) == []


def test_error_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    failed = run("broker", "start", "--dir", str(tmp_path), JAVA="/nonexistent")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith("trpc-kafka: error: java not found: JAVA='/nonexistent'")
    assert "Traceback" not in failed.stderr


def test_usage_errors(tmp_path: Path) -> None:
    bad = run("broker", "start", "--brokers", "0", "--dir", str(tmp_path))
    assert bad.returncode == 2
    assert "--brokers: '0' is not a positive integer" in bad.stderr
    assert run("broker").returncode == 2


def test_python_dash_m() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "trpc_kafka", "broker", "start", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0
    assert "--brokers" in shown.stdout
    assert "usage: trpc-kafka broker start" in shown.stdout


def _one_message_round_trip(bootstrap: str, topic: str, value: bytes | None) -> bytes | None:
    """Send ``value`` (if given, acked) to ``topic``, then read the first record back."""
    if value is not None:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce(topic, value)
        assert producer.flush(60) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cli-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                return msg.value()
    finally:
        consumer.close()
    return None


@pytest.mark.slow
def test_node_drill_kill_stop_start_keep_the_data(tmp_path: Path) -> None:
    directory = str(tmp_path)
    try:
        started = run("broker", "start", "--dir", directory)
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.splitlines()[-1]
        topic = f"drill-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic)
        assert _one_message_round_trip(bootstrap, topic, b"before the kill") == b"before the kill"
        pid = status(tmp_path).nodes[0].pid

        killed = run("broker", "kill-node", "1", "--dir", directory)
        assert killed.returncode == 0, killed.stderr
        assert killed.stdout == (
            f"node 1: killed; `trpc-kafka broker start-node 1 --dir {directory}` restarts it\n"
        )
        assert processes_using(tmp_path) == []
        down = run("broker", "status", "--dir", directory)
        assert down.returncode == 3
        assert re.search(r"node 1: port \d+, stopped, log ", down.stdout)
        assert f"`trpc-kafka broker start-node 1 --dir {directory}` restarts" in down.stdout

        # A plain start must not throw the stopped node's data away.
        refused = run("broker", "start", "--dir", directory)
        assert refused.returncode == 1
        assert "node(s) 1 of the cluster in" in refused.stderr
        assert "are down: `trpc-kafka broker start-node 1 --dir" in refused.stderr

        again = run("broker", "start-node", "1", "--dir", directory)
        assert again.returncode == 0, again.stderr
        assert re.search(r"node 1: started, in sync: pid \d+, port \d+, log ", again.stdout)
        assert again.stdout.splitlines()[-1] == bootstrap
        assert status(tmp_path).running
        assert status(tmp_path).nodes[0].pid != pid
        assert _one_message_round_trip(bootstrap, topic, None) == b"before the kill"

        stopped = run("broker", "stop-node", "1", "--dir", directory)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.startswith("node 1: stopped; ")
        twice = run("broker", "stop-node", "1", "--dir", directory)
        assert (twice.returncode, twice.stdout) == (0, "node 1: was not running\n")
        unknown = run("broker", "kill-node", "2", "--dir", directory)
        assert unknown.returncode == 1
        assert unknown.stderr == (
            f"trpc-kafka: error: node 2: the cluster in {tmp_path} has node(s) 1\n"
        )
        assert run("broker", "start-node", "1", "--dir", directory).returncode == 0
        running = run("broker", "start-node", "1", "--dir", directory)
        assert running.returncode == 0, running.stderr
        assert "node 1: already running: pid " in running.stdout
        assert _one_message_round_trip(bootstrap, topic, None) == b"before the kill"
    finally:
        stop(tmp_path)
    assert processes_using(tmp_path) == []
    nothing = run("broker", "start-node", "1", "--dir", directory)
    assert nothing.returncode == 1
    assert nothing.stderr.startswith(f"trpc-kafka: error: no cluster recorded in {tmp_path}; ")


def test_node_commands_usage() -> None:
    shown = run("broker", "kill-node", "--help")
    assert shown.returncode == 0
    assert "usage: trpc-kafka broker kill-node [-h] [--dir DIR] N [N ...]" in shown.stdout
    assert "SIGKILL" in run("broker", "--help").stdout
    assert "--timeout" in run("broker", "start-node", "--help").stdout
    bad = run("broker", "start-node", "0")
    assert bad.returncode == 2
    assert "'0' is not a positive integer" in bad.stderr
    assert run("broker", "stop-node").returncode == 2


def test_consume_leaves_a_close_that_does_not_finish() -> None:
    """Ctrl-C ends ``consume`` even if librdkafka's close hangs: a line, then the exit status."""
    program = (
        "import threading\n"
        "from trpc_kafka._tools.console import _close_within\n"
        "class Stuck:\n"
        "    def close(self):\n"
        "        threading.Event().wait()\n"
        "class Fine:\n"
        "    closed = False\n"
        "    def close(self):\n"
        "        Fine.closed = True\n"
        "_close_within(Fine(), 5.0, exit_code=3)\n"
        "assert Fine.closed\n"
        "print('fine closed', flush=True)\n"
        "_close_within(Stuck(), 0.5, exit_code=130)\n"
        "print('not reached')\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 130, done.stderr
    assert done.stdout == "fine closed\n"
    assert "closing the consumer took over 0.5 s; left without it" in done.stderr
    assert time.monotonic() - started < 30
