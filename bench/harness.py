"""What the benchmark scripts share: one variant run in a child process of its own.

Each variant gets a fresh interpreter (its own GC heap, peak RSS and librdkafka instance), so
that rounds interleaved in one run compare like with like. The child prints one JSON object as
its last line of stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
