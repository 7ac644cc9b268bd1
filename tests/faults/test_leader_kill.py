"""SIGKILL of a partition leader under acked, idempotent sends: nothing acked lost or doubled."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

import trpc_kafka
from tests.faults.conftest import StartCluster
from trpc_kafka._tools.broker import create_topic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WRITERS = 4


class Sends:
    """What the writers did: the acked values with their offsets, and the failures."""

    def __init__(self) -> None:
        self.acked: dict[bytes, int] = {}
        self.failed: list[str] = []
        self.stop = False

    async def writer(self, proxy: trpc_kafka.ClientProxy, topic: str, name: str) -> None:
        seq = 0
        while not self.stop:
            value = f"{name}-{seq}".encode()
            seq += 1
            try:
                _, offset = await proxy.send_message(topic, None, value)
            except trpc_kafka.TrpcError as exc:
                # Not acked: may or may not be in the log; never counted as lost.
                self.failed.append(str(exc))
                await asyncio.sleep(0.05)
            else:
                self.acked[value] = offset

    async def wait_acked(self, count: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}: {len(self.acked)} of "
                    f"{count} acked; failures: {len(self.failed)} {self.failed[-3:]}"
                )
            await asyncio.sleep(0.05)


def read_all(bootstrap: str, topic: str, timeout: float = 120.0) -> list[tuple[int, bytes]]:
    """Every record of partition 0 of ``topic``, as (offset, value), up to its end offset."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-back-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    records: list[tuple[int, bytes]] = []
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while (records[-1][0] + 1 if records else 0) < end:
            assert time.monotonic() < deadline, f"read {len(records)} records of {end}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            offset = msg.offset()
            assert value is not None and offset is not None
            records.append((offset, value))
    finally:
        consumer.close()
    return records


def leader_of(bootstrap: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=30)
    return metadata.topics[topic].partitions[0].leader


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_leader_sigkill_and_restart_lose_and_double_nothing_acked(
    start_cluster: StartCluster,
) -> None:
    began = time.monotonic()
    phases: list[str] = []

    def phase(name: str) -> None:
        phases.append(f"{name} {time.monotonic() - began:.1f} s")

    broker = start_cluster(3)
    phase("started")
    bootstrap = broker.bootstrap
    assert bootstrap is not None
    topic = f"leader-kill-{uuid.uuid4().hex[:8]}"
    create_topic(
        bootstrap, topic, replication_factor=3, config={"min.insync.replicas": "2"}, timeout=60
    )
    sends = Sends()
    proxy = trpc_kafka.new_client_proxy(
        "faults.leader-kill",
        target=f"kafka://{bootstrap}?topic={topic}&requiredAcks=-1&idempotent=true"
        "&compression=none",
        # Covers a leader election: the controller fences a killed node after 9 s.
        timeout=60.0,
    )
    writers = [asyncio.create_task(sends.writer(proxy, topic, f"w{i}")) for i in range(WRITERS)]
    try:
        await sends.wait_acked(300, 60, "acked sends before the kill")
        leader = leader_of(bootstrap, topic)
        assert leader in (1, 2, 3)
        assert await asyncio.to_thread(broker.kill_node, leader) == [leader]
        at_kill = len(sends.acked)
        phase(f"killed leader {leader}")
        # The remaining two nodes elect a new leader; sends go on without a new producer.
        await sends.wait_acked(at_kill + 300, 120, "acked sends after the leader was killed")
        await wait_for(lambda: leader_of(bootstrap, topic) not in (leader, -1), 60, "a new leader")
        phase("new leader")
        assert await asyncio.to_thread(broker.start_node, leader) == [leader]
        at_restart = len(sends.acked)
        phase("restarted and in sync")
        await sends.wait_acked(at_restart + 200, 60, "acked sends after the restart")
    finally:
        sends.stop = True
        await asyncio.gather(*writers)
        await proxy.close()

    records = read_all(bootstrap, topic)
    phase("read back")
    counts = collections.Counter(value for _, value in records)
    doubled = sorted(value for value, n in counts.items() if n > 1)
    lost = sorted(set(sends.acked) - set(counts))
    at = dict((value, offset) for offset, value in records)
    moved = sorted(value for value, offset in sends.acked.items() if at.get(value) != offset)
    print(
        f"acked {len(sends.acked)} (kill at {at_kill}, restart at {at_restart}), "
        f"failed {len(sends.failed)}, in the log {len(records)}; {', '.join(phases)}"
    )
    assert lost == [], f"{len(lost)} acked messages lost, e.g. {lost[:5]}"
    assert doubled == [], f"{len(doubled)} messages written twice, e.g. {doubled[:5]}"
    assert moved == [], f"{len(moved)} acked offsets hold another message, e.g. {moved[:5]}"
