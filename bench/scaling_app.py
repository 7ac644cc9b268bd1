"""The consumer service of the scaling figure: ``trpc-kafka run scaling_app:setup --workers N``.

``bench/compare.py`` runs it from ``bench/`` with a YAML file of one kafka service; each worker
process counts its no-op handlings and, every 0.1 s, writes its pid, count, the wall-clock
times of its first and last record and the CPU time (all its threads) spent on the drain to
``$BENCH_STATS_DIR/<worker>.json`` for the harness to add up (the pid: the harness pauses the
workers while it loads the topic).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from consumer import peak_rss_mb
from trpc_kafka import Context, Server, register_kafka_handler_service

STATS_ENV = "BENCH_STATS_DIR"
WRITE_EVERY = 0.1


def setup(server: Server) -> None:
    stats_dir = Path(os.environ[STATS_ENV])
    name = os.environ.get("TRPC_KAFKA_WORKER") or str(os.getpid())
    # [count, first, last]: one list, updated on the loop, read by the writer thread.
    state: list[float] = [0, 0.0, 0.0]
    clock = time.time  # wall clock: comparable across the worker processes

    async def handle(ctx: Context, msg: Any) -> None:
        now = clock()
        if not state[0]:
            state[1] = now
        state[0] += 1
        state[2] = now

    register_kafka_handler_service(server, handle)
    threading.Thread(
        target=_write_stats, args=(stats_dir / f"{name}.json", state), daemon=True
    ).start()


def _write_stats(path: Path, state: list[float]) -> None:
    tmp = path.with_suffix(".tmp")
    # CPU time at the last sample before the first record and at the first sample showing the
    # final count: the drain's cost give or take 0.1 s of an idle process.
    cpu_before = cpu_after = 0.0
    counted = 0
    while True:
        count, first, last = state
        cpu = time.process_time()
        if not count:
            cpu_before = cpu
        elif count != counted:
            cpu_after, counted = cpu, int(count)
        stats = {
            "pid": os.getpid(),
            "count": int(count),
            "first": first,
            "last": last,
            "peak_rss_mb": peak_rss_mb(),
            "cpu_s": cpu_after - cpu_before if counted else 0.0,
        }
        tmp.write_text(json.dumps(stats))
        tmp.replace(path)  # whole files only: the harness reads them while they are written
        time.sleep(WRITE_EVERY)
