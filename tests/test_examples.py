"""`make demo` end to end: broker, example consumer service and producer, graceful stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_and_every_message_is_handled(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--dir", str(tmp_path / "broker")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "handled 7/7 messages, audited 7/7" in out
    assert "committed and left group demo-orders" in out
    assert "demo OK" in out and "broker stopped" in out
