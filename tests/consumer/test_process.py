"""A real consumer process: SIGTERM shuts it down cleanly, SIGKILL loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.consumer._util import address, committed, load_factor, new_group, produce_spread

NewTopic = Callable[..., str]

pytestmark = pytest.mark.slow

APP = Path(__file__).with_name("data") / "consumer_app.py"


def _config(tmp_path: Path, addr: str, close_wait_ms: int = 10_000) -> Path:
    path = tmp_path / "trpc_python.yaml"
    path.write_text(
        "server:\n"
        f"  max_close_wait_time: {close_wait_ms}\n"
        "  service:\n"
        "    - name: consumer\n"
        f"      address: {addr}\n"
        "      protocol: kafka\n",
        encoding="utf-8",
    )
    return path


class App:
    """One run of tests/consumer/data/consumer_app.py."""

    def __init__(
        self, tmp_path: Path, config: Path, out: Path, delay_ms: int, run: int, *, hold: int = -1
    ) -> None:
        self.log = tmp_path / f"app-{run}.log"
        self.out = out
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP), str(config), str(out), str(delay_ms), str(hold)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def lines(self) -> list[str]:
        if not self.out.exists():
            return []
        return self.out.read_text(encoding="utf-8").splitlines()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.lines()):
            if self.proc.poll() is not None:
                raise AssertionError(f"app exited ({self.proc.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.tail()}")
            time.sleep(0.02)

    def stop(self, sig: signal.Signals, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"app did not exit after {sig.name}: {self.tail()}") from None

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def _done(lines: list[str]) -> list[tuple[int, int]]:
    out = []
    for line in lines:
        if line.startswith("done "):
            p, o = line[5:].split(":")
            out.append((int(p), int(o)))
    return out


def _in_progress(lines: list[str]) -> set[str]:
    started = {line[6:] for line in lines if line.startswith("start ")}
    finished = {line[5:] for line in lines if line.startswith("done ")}
    return started - finished


def test_sigterm_finishes_handlers_commits_and_restart_redelivers_nothing(
    kafka_bootstrap: str, new_topic: NewTopic, tmp_path: Path
) -> None:
    topic = new_topic(partitions=2)
    produce_spread(kafka_bootstrap, topic, 2, 20)
    group = new_group()
    config = _config(tmp_path, address(kafka_bootstrap, topic, group))
    out = tmp_path / "handled.txt"

    first = App(tmp_path, config, out, delay_ms=300, run=1)
    first.wait_for(
        lambda lines: len(_done(lines)) >= 4 and bool(_in_progress(lines)),
        60,
        "handlers in progress",
    )
    assert first.stop(signal.SIGTERM) == 0, first.tail()
    lines = first.lines()
    assert lines[-1] == "exit"
    assert not _in_progress(lines), "a running handler was abandoned"
    handled = _done(lines)
    last = {p: max((o for q, o in handled if q == p), default=-1) for p in (0, 1)}
    for p in (0, 1):
        assert sorted(o for q, o in handled if q == p) == list(range(last[p] + 1))
    assert committed(kafka_bootstrap, group, topic, 2) == {p: last[p] + 1 for p in (0, 1)}
    assert f"committed and left group {group}" in first.tail()

    out.write_text("", encoding="utf-8")
    second = App(tmp_path, config, out, delay_ms=0, run=2)
    second.wait_for(lambda lines: len(_done(lines)) >= 40 - len(handled), 60, "the rest")
    assert second.stop(signal.SIGTERM) == 0, second.tail()
    again = _done(second.lines())
    assert sorted(again) == sorted((p, o) for p in (0, 1) for o in range(last[p] + 1, 20)), (
        "restart re-delivered a handled message, or lost one"
    )


def test_sigkill_then_restart_handles_every_message_at_least_once(
    kafka_bootstrap: str, new_topic: NewTopic, tmp_path: Path
) -> None:
    partitions, per_partition = 4, 5000
    total = partitions * per_partition
    topic = new_topic(partitions=partitions)
    produce_spread(kafka_bootstrap, topic, partitions, per_partition)
    group = new_group()
    config = _config(tmp_path, address(kafka_bootstrap, topic, group))
    out = tmp_path / "handled.txt"

    first = App(tmp_path, config, out, delay_ms=2, run=1)
    first.wait_for(lambda lines: len(_done(lines)) > 0, 60, "the first message")
    started = time.monotonic()
    # Past the first auto-commit (3 s), before the end.
    first.wait_for(
        lambda lines: time.monotonic() - started > 4.0 and len(_done(lines)) > total * 0.3,
        60,
        "progress",
    )
    first.proc.kill()
    first.proc.wait(10)
    run1 = _done(first.lines())
    assert len(run1) < total * 0.9, "killed too late to prove anything; slow the handler"
    at_kill = committed(kafka_bootstrap, group, topic, partitions)
    assert any(o > 0 for o in at_kill.values()), f"nothing committed before the kill: {at_kill}"
    for p in range(partitions):
        handled_p = [o for q, o in run1 if q == p]
        # Never committed ahead of what was handled.
        assert at_kill[p] <= max(handled_p, default=-1) + 1

    second = App(tmp_path, config, out, delay_ms=0, run=2)
    second.wait_for(
        lambda lines: (
            {(p, o) for p, o in _done(lines)}
            >= {(p, o) for p in range(partitions) for o in range(per_partition)}
        ),
        120,
        "every message handled",
    )
    assert second.stop(signal.SIGTERM) == 0, second.tail()
    everything = _done(second.lines())  # run 1 and run 2 (the same file)
    run2 = everything[len(run1) :]
    for p in range(partitions):
        start = max(at_kill[p], 0)
        # The restart resumed exactly at the last commit...
        assert min(o for q, o in run2 if q == p) == start
        # ...so duplicates are only what followed the last commit.
        again = {o for q, o in run2 if q == p} & {o for q, o in run1 if q == p}
        assert all(o >= start for o in again)
    counts: dict[tuple[int, int], int] = {}
    for key in everything:
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == total


def test_sigterm_with_a_hung_plain_def_handler_exits_within_the_bound(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    produce_spread(kafka_bootstrap, topic, 1, 3)
    group = new_group()
    config = _config(tmp_path, address(kafka_bootstrap, topic, group), close_wait_ms=3000)
    out = tmp_path / "handled.txt"
    app = App(tmp_path, config, out, delay_ms=-1, run=1)
    app.wait_for(lambda lines: "start 0:0" in lines, 60, "the hung handler")
    began = time.monotonic()
    assert app.stop(signal.SIGTERM, timeout=15) == 0, app.tail()
    assert time.monotonic() - began < 8.0 * load_factor()
    assert "still running" in app.tail()
    assert committed(kafka_bootstrap, group, topic, 1)[0] < 0, "the hung message is not committed"
