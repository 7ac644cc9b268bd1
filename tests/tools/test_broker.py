"""The local broker library against real JVMs: start, status, stop, round trips, failures."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from trpc_kafka._tools import broker, distribution, readiness
from trpc_kafka._tools.broker import (
    BrokerError,
    Listener,
    LocalBroker,
    create_topic,
    processes_using,
    server_properties,
    start_cluster,
    status,
    stop,
)

BOOTSTRAP = re.compile(r"127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)*")


def round_trip(bootstrap: str, topic: str, count: int = 20) -> None:
    """Produce ``count`` messages with acks=all and read every one of them back."""
    sent = [f"message-{i}".encode() for i in range(count)]
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for value in sent:
        producer.produce(topic, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert failures == []

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"round-trip-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(received) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            payload = msg.value()
            assert payload is not None
            received.append(payload)
    finally:
        consumer.close()
    # Order holds per partition only.
    assert sorted(received) == sorted(sent)


def assert_gone(pids: list[int], directory: Path) -> None:
    """No recorded pid is still our JVM, and no JVM of ``directory`` is left at all."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        assert str(directory) not in cmdline, f"pid {pid} still runs"
    assert processes_using(directory) == []


def test_single_broker_start_status_stop(tmp_path: Path) -> None:
    directory = tmp_path / "one"
    local = LocalBroker(directory)
    try:
        bootstrap = local.start()
        assert BOOTSTRAP.fullmatch(bootstrap)
        assert "," not in bootstrap

        current = local.status()
        assert current.running
        assert current.bootstrap == bootstrap
        assert [(n.node_id, n.alive) for n in current.nodes] == [(1, True)]
        assert current.nodes[0].log == directory / "node-1" / "server.log"
        pids = [n.pid for n in current.nodes]
        state = json.loads((directory / "state.json").read_text())
        assert [n["pid"] for n in state["nodes"]] == pids

        topic = f"lifecycle-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, partitions=2)
        round_trip(bootstrap, topic)

        # A second start (object or module function) reports the running one, starts nothing.
        assert local.start() == bootstrap
        assert start_cluster(1, directory) == bootstrap
        assert [n.pid for n in status(directory).nodes] == pids
    finally:
        stopped = local.stop()
    assert stopped
    assert_gone(pids, directory)
    assert not (directory / "state.json").exists()
    after = status(directory)
    assert not after.running
    assert after.nodes == ()
    assert after.bootstrap is None
    assert not stop(directory)


@pytest.mark.slow
def test_three_broker_cluster(tmp_path: Path) -> None:
    directory = tmp_path / "three"
    local = LocalBroker(directory, brokers=3)
    pids: list[int] = []
    try:
        bootstrap = local.start()
        assert BOOTSTRAP.fullmatch(bootstrap)
        assert len(bootstrap.split(",")) == 3
        current = local.status()
        assert current.running
        assert [n.node_id for n in current.nodes] == [1, 2, 3]
        pids = [n.pid for n in current.nodes]
        assert len(set(pids)) == 3

        admin = AdminClient({"bootstrap.servers": bootstrap})
        # Ready means usable: all registered with the controller, the probe topic gone.
        described = admin.describe_cluster(request_timeout=30).result(timeout=60)
        assert sorted(node.id for node in described.nodes) == [1, 2, 3]
        assert sorted(admin.list_topics(timeout=10).brokers) == [1, 2, 3]
        # Deleted before start() returns; a node may still list it a moment (each learns of
        # the deletion from the metadata log, and a metadata request may go to any node).
        deadline = time.monotonic() + 30
        while readiness.PROBE_TOPIC in admin.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, "the probe topic is still listed after 30 s"
            time.sleep(0.2)
        props = (directory / "node-2" / "server.properties").read_text()
        assert "transaction.state.log.min.isr=2\n" in props
        assert "offsets.topic.replication.factor=3\n" in props

        topic = f"replicated-{uuid.uuid4().hex[:8]}"
        create_topic(
            bootstrap,
            topic,
            partitions=3,
            replication_factor=3,
            config={"min.insync.replicas": "2"},
        )
        metadata = admin.list_topics(topic=topic, timeout=10).topics[topic]
        assert all(len(p.replicas) == 3 for p in metadata.partitions.values())
        round_trip(bootstrap, topic)
    finally:
        local.stop()
    assert_gone(pids, directory)


def test_new_topic_fixture_on_session_broker(
    kafka_bootstrap: str, new_topic: Callable[..., str], topic: str
) -> None:
    three = new_topic(3)
    assert three != topic
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics[three].partitions) == 3
    assert len(metadata.topics[topic].partitions) == 1
    round_trip(kafka_bootstrap, topic, count=3)


def test_session_broker_has_share_groups_and_short_share_locks(kafka_bootstrap: str) -> None:
    """Kafka 4.2+ (share groups generally available; tests/share proves them on), and groups
    allowed to shorten their record lock to 1 s for lock-expiry tests (4.1 refused both)."""
    from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
    from confluent_kafka.admin._resource import ResourceType

    version = re.search(r"<kafka.version>([0-9.]+)<", distribution.POM.read_text(encoding="utf-8"))
    assert version is not None
    assert tuple(int(p) for p in version.group(1).split(".")[:2]) >= (4, 2)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    group = f"share-probe-{uuid.uuid4().hex[:8]}"
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(
                "share.record.lock.duration.ms", "1000", incremental_operation=AlterConfigOpType.SET
            )
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    described = admin.describe_configs([ConfigResource(ResourceType.GROUP, group)])
    for future in described.values():
        assert future.result(timeout=30)["share.record.lock.duration.ms"].value == "1000"


def test_jvm_dying_during_start_names_the_log(tmp_path: Path) -> None:
    directory = tmp_path / "bad-config"
    local = LocalBroker(directory, extra_properties={"authorizer.class.name": "no.such.Class"})
    with pytest.raises(BrokerError) as caught:
        local.start()
    message = str(caught.value)
    assert "exited with exit code 1 during start" in message
    assert f"log: {directory / 'node-1' / 'server.log'}" in message
    assert "no.such.Class" in message
    assert not local.status().running
    assert not (directory / "state.json").exists()
    assert processes_using(directory) == []


def test_port_clash_is_retried_once_then_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "clash"
    choices: list[list[int]] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free_ports = distribution.free_ports

        def clashing(count: int) -> list[int]:
            # The broker's own choice, with its client port already bound by someone else.
            choices.append([port, *free_ports(count - 1)])
            return choices[-1]

        monkeypatch.setattr(broker, "free_ports", clashing)
        with pytest.raises(BrokerError) as caught:
            start_cluster(1, directory)
    assert len(choices) == 2
    message = str(caught.value)
    assert f"Socket server failed to bind to 127.0.0.1:{port}: Address already in use" in message
    assert str(directory / "node-1" / "server.log") in message
    assert processes_using(directory) == []
    assert not status(directory).running


def test_start_timeout_ends_the_nodes(tmp_path: Path) -> None:
    directory = tmp_path / "slow"
    with pytest.raises(BrokerError, match=r"within 0\.5 s; log: "):
        start_cluster(1, directory, timeout=0.5)
    assert processes_using(directory) == []
    assert not (directory / "state.json").exists()


def test_missing_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA", "/nonexistent")
    with pytest.raises(BrokerError, match=r"java not found: JAVA='/nonexistent' is not an exec"):
        start_cluster(1, tmp_path)


def test_missing_java_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"java not found on PATH: .*set JAVA=/path/to/java"):
        start_cluster(1, tmp_path)


def test_missing_mvn_with_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MVN", "/nonexistent/mvn")
    with pytest.raises(BrokerError, match=r"mvn not found: MVN='/nonexistent/mvn'"):
        start_cluster(1, tmp_path / "broker")


def test_mvn_failure_names_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "mvn"
    fake.write_text("#!/bin/sh\necho '[ERROR] Could not resolve dependencies' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MVN", str(fake))
    with pytest.raises(BrokerError) as caught:
        start_cluster(1, tmp_path / "broker")
    message = str(caught.value)
    assert message.startswith("mvn failed (exit 1)")
    assert str(tmp_path / "cache" / "trpc-kafka" / "classpath") in message
    assert "[ERROR] Could not resolve dependencies" in message


def test_stop_never_signals_a_foreign_pid(tmp_path: Path) -> None:
    # A recorded pid that now belongs to another program (pid reuse) must survive stop().
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        node = {
            "node_id": 1,
            "pid": other.pid,
            "port": 1,
            "controller_port": 2,
            "home": str(tmp_path / "node-1"),
        }
        (tmp_path / "state.json").write_text(json.dumps({"ready": True, "nodes": [node]}))
        current = status(tmp_path)
        assert [n.alive for n in current.nodes] == [False]
        assert not current.running
        assert stop(tmp_path)
        assert other.poll() is None
        assert not (tmp_path / "state.json").exists()
    finally:
        other.kill()
        other.wait()


def test_server_properties_single_and_cluster(tmp_path: Path) -> None:
    one = server_properties(
        node_id=1,
        listeners=[Listener("PLAINTEXT", 9092), Listener("CONTROLLER", 9093)],
        voters={1: 9093},
        data_dir=tmp_path,
        brokers=1,
    )
    assert one["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert one["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert one["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert one["offsets.topic.replication.factor"] == "1"
    assert one["transaction.state.log.min.isr"] == "1"
    assert one["group.initial.rebalance.delay.ms"] == "0"
    assert one["auto.create.topics.enable"] == "true"
    assert one["num.partitions"] == "1"

    # A second client listener (how SASL will come) and an override through ``extra``.
    three = server_properties(
        node_id=2,
        listeners=[
            Listener("PLAINTEXT", 9192),
            Listener("SASL_PLAINTEXT", 9194, "SASL_PLAINTEXT"),
            Listener("CONTROLLER", 9193),
        ],
        voters={1: 9093, 2: 9193, 3: 9293},
        data_dir=tmp_path,
        brokers=3,
        extra={"num.partitions": "3"},
    )
    assert three["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293"
    )
    assert three["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert three["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:9192,SASL_PLAINTEXT://127.0.0.1:9194"
    )
    assert three["inter.broker.listener.name"] == "PLAINTEXT"
    assert three["offsets.topic.replication.factor"] == "3"
    assert three["transaction.state.log.replication.factor"] == "3"
    assert three["transaction.state.log.min.isr"] == "2"
    assert three["num.partitions"] == "3"


def test_default_dir_honours_xdg_cache_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert broker.default_dir() == Path("/somewhere/cache/trpc-kafka/broker")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert broker.default_dir() == Path(os.path.expanduser("~/.cache/trpc-kafka/broker"))


def test_start_timeout_scales_with_nodes_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.0, 0.0))
    assert broker.default_start_timeout(1) == 90
    assert broker.default_start_timeout(3) == 180
    # Both cores busy with other work and as much queued again: twice the time.
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 0.0, 0.0))
    assert broker.default_start_timeout(3) == 360
    monkeypatch.setattr(os, "getloadavg", lambda: (40.0, 0.0, 0.0))
    assert broker.default_start_timeout(1) == 270
    # The secured-brokers fixture and the CLI take it: no fixed 60 s any more.
    assert LocalBroker(Path("unused"), brokers=3).start_timeout is None


def test_start_that_is_never_usable_names_the_log_and_ends_the_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nodes that answer but where no topic can be created: the probe name is invalid here.
    monkeypatch.setattr(readiness, "PROBE_TOPIC", "no spaces allowed")
    wait_usable = readiness.wait_usable

    def short(nodes: Any, _deadline: float, _timeout: float) -> None:
        # The nodes are up, however long that took on this machine; then 3 s to be usable.
        wait_usable(nodes, time.monotonic() + 3, 3)

    monkeypatch.setattr(broker, "wait_usable", short)
    directory = tmp_path / "unusable"
    with pytest.raises(BrokerError) as caught:
        LocalBroker(directory).start()
    message = str(caught.value)
    assert message.startswith(
        "the 1 node(s) answer but a topic with replication factor 1 was not usable within 3 s "
        "(last: "
    )
    assert f"log: {directory / 'node-1' / 'server.log'}" in message
    assert processes_using(directory) == []
    assert not (directory / "state.json").exists()


def _recorded(directory: Path, pid: int, *, ready: bool = True) -> None:
    node = {
        "node_id": 1,
        "pid": pid,
        "port": 1,
        "controller_port": 2,
        "home": str(directory / "node-1"),
    }
    (directory / "state.json").write_text(json.dumps({"ready": ready, "nodes": [node]}))


def test_node_commands_need_a_ready_cluster_and_known_ids(tmp_path: Path) -> None:
    local = LocalBroker(tmp_path)
    with pytest.raises(BrokerError, match=r"^no cluster recorded in .*`trpc-kafka broker start`"):
        local.kill_node(1)
    _recorded(tmp_path, 0, ready=False)
    with pytest.raises(BrokerError, match=r"is still starting \(or its start failed\)"):
        local.start_node(1)
    _recorded(tmp_path, 0)
    with pytest.raises(
        BrokerError, match=rf"^node 2, 3: the cluster in {tmp_path} has node\(s\) 1$"
    ):
        local.stop_node(1, 2, 3)
    with pytest.raises(BrokerError, match="name at least one node id"):
        local.stop_node()
    # Down on purpose: reported as such, and a plain start refuses to format over its data.
    assert local.status().down == (1,)
    assert local.stop_node(1) == []
    with pytest.raises(BrokerError, match=r"node\(s\) 1 of the cluster in .* are down: "):
        local.start()


def test_kill_node_never_signals_a_foreign_pid(tmp_path: Path) -> None:
    # A recorded pid that now belongs to another program (pid reuse) must survive kill_node().
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _recorded(tmp_path, other.pid)
        assert LocalBroker(tmp_path).kill_node(1) == []
        assert other.poll() is None
        assert [n.pid for n in status(tmp_path).nodes] == [0]
    finally:
        other.kill()
        other.wait()
