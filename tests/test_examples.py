"""`make demo` end to end: broker, example consumer service and producer, graceful stop."""

from __future__ import annotations

import os
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


def _run_example(script: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    return out


def test_the_extended_producer_example(kafka_bootstrap: str) -> None:
    out = _run_example("producer/extended.py", {"KAFKA_BOOTSTRAP": kafka_bootstrap})
    assert "raw record at demo-extended-" in out and "[0]@0" in out
    assert "async send delivered to demo-extended-" in out
    assert "refused at the call, code 121" in out
    assert "extended producer done" in out


def test_the_fake_address_example(kafka_bootstrap: str) -> None:
    out = _run_example("fake_address/injected_config.py", {"KAFKA_BOOTSTRAP": kafka_bootstrap})
    assert out.count("handled b'message ") == 3
    assert "in group demo-injected-" in out
    assert "injected config: handled 3/3" in out
