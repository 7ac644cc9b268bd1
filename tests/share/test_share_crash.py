"""A share group member SIGKILLed mid-handling: its records go to the other members once their
locks expire; nothing is lost, nothing stays locked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import trpc_kafka
from tests.consumer._util import serving, wait_until
from tests.share._util import (
    available,
    new_group,
    produce_small_batches,
    set_group_configs,
    share_address,
)
from trpc_kafka import ConsumerMessage, Context
from trpc_kafka._runtime.server import Server, Service

pytestmark = pytest.mark.slow

APP = Path(__file__).parents[1] / "consumer" / "data" / "consumer_app.py"
LOCK_MS = 10_000  # member a handles all it acquires (40 x 0.2 s) well within it


def _start_member(config: Path, out: Path, log: Path, delay_ms: int) -> subprocess.Popen[bytes]:
    """tests/consumer/data/consumer_app.py: writes ``start P:O`` / ``done P:O`` per record."""
    with open(log, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, str(APP), str(config), str(out), str(delay_ms)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


async def test_sigkilled_member_records_are_redelivered_to_the_others_after_the_lock(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    group = new_group()
    set_group_configs(kafka_bootstrap, group, share_record_lock_duration_ms=str(LOCK_MS))
    total = 40
    addr = share_address(kafka_bootstrap, topic, group)
    config = tmp_path / "trpc_python.yaml"
    config.write_text(
        "server:\n  service:\n    - name: member-a\n"
        f"      address: {addr}\n      protocol: kafka\n",
        encoding="utf-8",
    )
    out = tmp_path / "a.txt"
    log = tmp_path / "a.log"
    proc = _start_member(config, out, log, delay_ms=200)
    by_b: list[tuple[int, int, float]] = []  # offset, delivery count, time

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raw = trpc_kafka.get_raw_kafka_context(ctx)
        assert raw is not None and raw.delivery_count is not None
        await asyncio.sleep(0.05)
        by_b.append((msg.offset, raw.delivery_count, time.monotonic()))

    server = Server(max_close_wait=10)
    server.add_service(Service("member-b", address=addr))
    trpc_kafka.register_kafka_handler_service(server, handle)
    try:
        # Member a alone first: it acquires the records (up to 100 a poll) and handles them
        # slowly; then member b joins, then a is killed with most of them in hand.
        produce_small_batches(kafka_bootstrap, topic, (b"%d" % i for i in range(total)))
        await wait_until(
            lambda: (
                sum(line.startswith("start") for line in _lines(out)) >= 3
                or proc.poll() is not None
            ),
            120,
            f"member a handling; its log: {log}",
        )
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        async with serving(server):
            await asyncio.sleep(1)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            killed_at = time.monotonic()
            lines = _lines(out)
            done_a = {int(x.split(":")[1]) for x in lines if x.startswith("done")}
            started_a = {int(x.split(":")[1]) for x in lines if x.startswith("start")}
            in_hand = started_a - done_a
            assert in_hand, "member a was killed mid-handling"
            await wait_until(
                lambda: done_a | {o for o, _, _ in by_b} == set(range(total)),
                60,
                "every record handled by a (before the kill) or b",
            )
            await asyncio.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    for offset in in_hand:
        redelivered = [(d, t) for o, d, t in by_b if o == offset]
        assert redelivered, f"offset {offset}, in hand at the kill, was not redelivered"
        assert all(d >= 2 and t > killed_at for d, t in redelivered)
    # Every record b handled once, unless a handled it too (then its ack died with it).
    counts: dict[int, int] = {}
    for o, _, _ in by_b:
        counts[o] = counts.get(o, 0) + 1
    assert all(c == 1 for c in counts.values()), counts
    assert available(kafka_bootstrap, topic, group) == []
