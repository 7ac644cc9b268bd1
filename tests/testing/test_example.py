"""The README's testing example (examples/testing) passes as a user runs it: pytest, no broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_testing_example_passes_without_a_broker() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRPC_KAFKA_BOOTSTRAP"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/testing"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "4 passed" in out, out
    assert time.monotonic() - start < 120, out  # seconds on an idle machine
