"""What the benchmark scripts share: one variant run in a child process of its own.

Each variant gets a fresh interpreter (its own GC heap, peak RSS and librdkafka instance), so
that rounds interleaved in one run compare like with like. The child prints one JSON object as
its last line of stdout.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def spawn_variant(
    script: str,
    variant: str,
    *flags: str,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``python SCRIPT --child VARIANT FLAGS...``, and the JSON object it printed last.

    A child that fails raises with the end of its stderr: a benchmark that failed gives no
    figure rather than a wrong one.
    """
    done = subprocess.run(
        [sys.executable, script, "--child", variant, *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def write_report(out: Path, script: str, **fields: Any) -> None:
    """Write a run's JSON report to ``out`` (and print it), headed by the command, the time
    and the machine."""
    report = {
        "command": " ".join([f"bench/{script}", *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        **fields,
    }
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


def count_instructions(argv: list[str], env: dict[str, str] | None = None) -> int:
    """CPU instructions of ``python argv...`` under valgrind's cachegrind (steady on a busy
    machine, unlike time). String hashing is fixed (``PYTHONHASHSEED=0`` unless ``env`` says
    otherwise): with random seeds, dict and set probes moved the same code's count by ~2%."""
    run_env = dict(os.environ if env is None else env)
    run_env.setdefault("PYTHONHASHSEED", "0")
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            *argv,
        ],
        capture_output=True,
        text=True,
        env=run_env,
        check=False,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))
