"""SIGKILL and restart of a 1-node broker under a consumer service process and a producer.

Neither is restarted: both must reconnect by themselves, and every acked message must be
handled at least once by the same consumer process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import trpc_kafka
from tests.consumer._util import address, new_group
from tests.faults.conftest import StartCluster
from trpc_kafka._tools.broker import LocalBroker, create_topic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

APP = Path(__file__).parents[1] / "consumer" / "data" / "consumer_app.py"
PARTITIONS = 2
# How long the broker stays down: long enough for both clients to notice and fail over to
# reconnecting (librdkafka backs off up to 10 s), short for the suite.
OUTAGE = 5.0


class ConsumerApp:
    """tests/consumer/data/consumer_app.py serving one kafka service; handled P:O in ``out``."""

    def __init__(self, tmp_path: Path, addr: str) -> None:
        config = tmp_path / "trpc_python.yaml"
        config.write_text(
            "server:\n"
            "  max_close_wait_time: 10000\n"
            "  service:\n"
            "    - name: consumer\n"
            f"      address: {addr}\n"
            "      protocol: kafka\n",
            encoding="utf-8",
        )
        self.out = tmp_path / "handled.txt"
        self.log = tmp_path / "app.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP), str(config), str(self.out)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def handled(self) -> set[tuple[int, int]]:
        if not self.out.exists():
            return set()
        done = set()
        for line in self.out.read_text(encoding="utf-8").splitlines():
            if line.startswith("done "):
                partition, offset = line[5:].split(":")
                done.add((int(partition), int(offset)))
        return done

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"consumer app exited ({self.proc.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"consumer app ignored SIGTERM: {self.tail()}") from None


class Producing:
    """Acked sends in a loop; the acked (partition, offset)s and the failures."""

    def __init__(self) -> None:
        self.acked: set[tuple[int, int]] = set()
        self.failed: list[str] = []
        self.stop = False

    async def run(self, proxy: trpc_kafka.ClientProxy, topic: str, name: str) -> None:
        seq = 0
        while not self.stop:
            seq += 1
            try:
                self.acked.add(await proxy.send_message(topic, None, f"{name}-{seq}"))
            except trpc_kafka.TrpcError as exc:
                self.failed.append(str(exc))
                await asyncio.sleep(0.1)


async def test_broker_sigkill_restart_under_consumer_service_and_producer(
    start_cluster: StartCluster, tmp_path: Path
) -> None:
    broker = start_cluster(1)
    bootstrap = broker.bootstrap
    assert bootstrap is not None
    topic = f"restart-{new_group()}"
    create_topic(bootstrap, topic, partitions=PARTITIONS, timeout=60)
    app = ConsumerApp(tmp_path, address(bootstrap, topic, new_group()))
    try:
        await _drill(broker, app, topic, bootstrap)
    finally:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait(30)


async def _drill(broker: LocalBroker, app: ConsumerApp, topic: str, bootstrap: str) -> None:
    producing = Producing()
    proxy = trpc_kafka.new_client_proxy(
        "faults.restart",
        target=f"kafka://{bootstrap}?topic={topic}&compression=none",
        # Sends of the outage wait for the restarted broker instead of failing.
        timeout=120.0,
    )
    writers = [asyncio.create_task(producing.run(proxy, topic, f"w{i}")) for i in range(2)]
    try:
        await app.wait_for(lambda: len(app.handled()) >= 100, 120, "handling before the kill")
        assert await asyncio.to_thread(broker.kill_node, 1) == [1]
        at_kill = len(producing.acked)
        await asyncio.sleep(OUTAGE)  # the outage itself, not a wait for a condition
        assert await asyncio.to_thread(broker.start_node, 1) == [1]
        await app.wait_for(
            lambda: len(producing.acked) >= at_kill + 200, 120, "acked sends after the restart"
        )
        after_restart = set(producing.acked)
        await app.wait_for(
            lambda: after_restart <= app.handled(), 120, "handling of the sends after the restart"
        )
    finally:
        producing.stop = True
        await asyncio.gather(*writers)
        await proxy.close()
    acked = set(producing.acked)
    await app.wait_for(lambda: acked <= app.handled(), 120, "handling of every acked send")
    assert app.proc.poll() is None, "the consumer app was restarted or died"
    assert app.stop() == 0, app.tail()
    missing = sorted(acked - app.handled())
    print(f"acked {len(acked)} (kill at {at_kill}), failed {len(producing.failed)}")
    assert missing == [], f"{len(missing)} acked messages never handled, e.g. {missing[:5]}"
