"""A crash-proof runner for the config fuzz tests: inputs go to worker processes one by one.

Each worker (spawned, so it holds no librdkafka threads of the test process) runs the target
on every input and reports the outcome, the CPU time and its peak RSS. A worker that dies
(a segfault in a C extension) or stops answering is counted against the input it was on and
replaced; the run goes on. Workers run under an address-space limit, so a runaway input
shows up as a MemoryError (an "other" exception), not as a swapping machine.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

CHUNK = 64  # inputs per message to a worker: fewer round trips, the crash still attributed
ADDRESS_SPACE_LIMIT = 3 << 30  # bytes per worker (librdkafka threads reserve stacks)


@dataclass
class FuzzReport:
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # ok, ConfigError, other names
    others: list[tuple[str, str]] = field(default_factory=list)  # (input, exception) samples
    crashes: list[tuple[str, str]] = field(default_factory=list)  # (input, how)
    slow: list[tuple[str, float]] = field(default_factory=list)  # (input, cpu seconds)
    max_cpu: float = 0.0
    max_rss_mb: float = 0.0
    wall: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.inputs} inputs in {self.wall:.1f}s: {dict(self.outcomes)}; crashes "
            f"{len(self.crashes)}; slowest {self.max_cpu * 1000:.0f} ms CPU; peak worker RSS "
            f"{self.max_rss_mb:.0f} MB"
        )


def _run_one(target: str, data: Any) -> None:
    from trpc_kafka._config.address import parse_address
    from trpc_kafka._config.file import load_config, parse_config

    if target == "address":
        repr(parse_address(data))
    elif isinstance(data, bytes):  # through the file reader: decoding, BOM, ${ENV}
        with tempfile.NamedTemporaryFile(suffix=".yaml", delete=False) as f:
            f.write(data)
        try:
            repr(load_config(f.name))
        finally:
            os.unlink(f.name)
    else:
        repr(parse_config(data, file="fuzz.yaml"))


def _worker(conn: Connection, target: str) -> None:
    import logging

    from trpc_kafka._config.errors import ConfigError

    logging.disable(logging.CRITICAL)
    with contextlib.suppress(ValueError, OSError):  # a lower hard limit: keep that one
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    _run_one(target, "h:1" if target == "address" else "")  # imports, outside the timing
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        for data in chunk:
            cpu = time.process_time()
            try:
                _run_one(target, data)
                outcome, detail = "ok", ""
            except ConfigError:
                outcome, detail = "ConfigError", ""
            except BaseException as exc:  # any other type is what the test counts
                outcome, detail = type(exc).__name__, repr(exc)[:300]
            spent = time.process_time() - cpu
            rss_mb = _peak_rss_mb()
            conn.send((outcome, detail, spent, rss_mb))


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: that one keeps the parent's peak across
    the fork and exec of a spawned worker."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Slot:
    def __init__(self, ctx: Any, target: str) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, target), daemon=True)
        self.process.start()
        child.close()
        self.pending: list[Any] = []
        self.since = 0.0

    def give(self, chunk: list[Any]) -> None:
        self.pending = list(chunk)
        self.since = time.monotonic()
        self.conn.send(chunk)

    def stop(self) -> None:
        self.conn.close()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def run_fuzz(
    target: str, inputs: Sequence[Any], *, workers: int = 2, hang_after: float = 20.0
) -> FuzzReport:
    """Run ``target`` ("address" or "yaml") on every input in ``workers`` processes."""
    ctx = multiprocessing.get_context("spawn")
    report = FuzzReport(inputs=len(inputs))
    start = time.monotonic()
    todo = [list(inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)]
    todo.reverse()
    slots = [_Slot(ctx, target) for _ in range(workers)]
    try:
        while True:
            for slot in slots:
                if not slot.pending and todo:
                    slot.give(todo.pop())
            if not any(slot.pending for slot in slots):
                break
            busy = {slot.conn: slot for slot in slots if slot.pending}
            for conn in wait(list(busy), timeout=1.0):
                slot = busy[conn]
                try:
                    outcome, detail, spent, rss_mb = slot.conn.recv()
                except (EOFError, OSError):
                    _replace(slots, slot, ctx, target, report=report, how="died")
                    continue
                data = slot.pending.pop(0)
                slot.since = time.monotonic()
                report.outcomes[outcome] += 1
                if outcome not in ("ok", "ConfigError"):
                    report.others.append((_show(data), detail))
                report.max_cpu = max(report.max_cpu, spent)
                report.max_rss_mb = max(report.max_rss_mb, rss_mb)
                if spent > 1.0:
                    report.slow.append((_show(data), spent))
            for slot in list(slots):
                if slot.pending and time.monotonic() - slot.since > hang_after:
                    _replace(
                        slots, slot, ctx, target, report=report, how=f"no answer in {hang_after}s"
                    )
    finally:
        for slot in slots:
            slot.stop()
    report.wall = time.monotonic() - start
    return report


def _replace(
    slots: list[_Slot], slot: _Slot, ctx: Any, target: str, *, report: FuzzReport, how: str
) -> None:
    # The rest of the chunk goes on in a new worker, without the input that crashed this one.
    culprit = slot.pending.pop(0)
    rest = slot.pending
    slot.process.kill()
    slot.process.join()
    code = slot.process.exitcode
    report.crashes.append((_show(culprit), f"{how} (exit code {code})"))
    report.outcomes["crash"] += 1
    fresh = _Slot(ctx, target)
    slots[slots.index(slot)] = fresh
    slot.conn.close()
    if rest:
        fresh.give(rest)


def _show(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} chars)"
