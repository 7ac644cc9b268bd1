"""The ``trpc-kafka`` console script, run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from trpc_kafka._tools.broker import processes_using, stop

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
