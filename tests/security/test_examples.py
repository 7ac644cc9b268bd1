"""examples/sasl runs as written against a SCRAM-over-TLS and a PLAIN local broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.conftest import Secured

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["sasl_ssl", "sasl_plaintext"])
def test_the_sasl_example(mode: str, request: pytest.FixtureRequest) -> None:
    cluster: Secured = request.getfixturevalue(mode)
    mechanism = "SCRAM-SHA-512" if mode == "sasl_ssl" else None
    address = cluster.address(mechanism=mechanism)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sasl" / "send_and_receive.py")],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "KAFKA_SASL_ADDRESS": address},
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("over SASL") == 3 and "sasl: handled 3/3" in out
    password = cluster.creds.passwords["alice"]
    assert password not in out
