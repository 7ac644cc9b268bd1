"""Seeded fuzzing of the YAML file loader: every mutated file loads or is a ConfigError.

2,000+ files mutated from tRPC-Go style files (wrong types, missing sections, control bytes,
tags, alias bombs, recursive anchors, huge numbers, mutated Kafka addresses, invalid UTF-8,
large files), each loaded and its config repr'd in a worker process (tests/config/fuzz.py).
Pass: 0 crashes, 0 exception types other than ConfigError, no input over 1 s of CPU, worker
RSS bounded (a repr of an alias bomb would take minutes and gigabytes).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.config.fuzz import run_fuzz
from tests.config.test_fuzz_address import mutate as mutate_address

SEED = 20261203
COUNT = 2_100

BASE = (Path(__file__).parent / "data" / "trpc_go.yaml").read_text()
SMALL = """\
global:
  namespace: Development
server:
  app: test
  filter: [recovery]
  service:
    - name: trpc.test.consumer
      protocol: kafka
      address: 127.0.0.1:9092?topics=t&group=g
      timeout: 1000
client:
  timeout: 1000
  service:
    - name: trpc.test.producer
      target: kafka://127.0.0.1:9092?topic=t
      protocol: kafka
plugins:
  log: {default: [{writer: console}]}
"""

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
SCALARS = [
    "!!int abc",
    "!!float abc",
    "!!timestamp 2001-13-45",
    "!!binary '%%%'",
    "!!bool maybe",
    "!!python/object:os.system x",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!str",
    "!!null x",
    "9" * 5000,
    "-" + "9" * 4400,
    "0x" + "f" * 5000,
    "1e99999",
    ".nan",
    "~",
    "''",
    '"\\ud800"',
    '"\\x00"',
    '"\\U0010ffff"',
    "*undefined",
    "&x",
    "[1, 2",
    "{a: 1",
    "|",
    ">",
    "-1",
    "1:2:3:4:5",
    "2001-12-14t21:59:43.10-05:00",
    "0o777",
    "0b101",
    "yes",
    "Off",
    "${HOME}",
    "${NOPE_NOT_SET}",
    "$NAME",
    "[a, b]",
    "{a: b}",
    "null",
    "x" * 5000,
]
INSERTS = [
    "\x00",
    "\x01",
    "\x1b",
    "\x7f",
    "\x85",
    "\ufeff",
    "\ud7ff",
    "\t",
    "\r",
    "\\",
    '"',
    "'",
    ":",
    "- ",
    "? ",
    "&a ",
    "*a ",
    "!!int ",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "#",
]
KEYS = [
    "server",
    "client",
    "global",
    "plugins",
    "service",
    "name",
    "address",
    "target",
    "protocol",
    "timeout",
    "filter",
    "namespace",
    "callee",
    "max_close_wait_time",
    "close_wait_time",
    "<<",
    "app",
]


def mutate(rng: random.Random) -> str | bytes:
    lines = (BASE if rng.random() < 0.3 else SMALL).splitlines()
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        i = rng.randrange(len(lines)) if lines else 0
        if op == 0 and lines:  # a value replaced (wrong type, tag, huge number...)
            key, sep, _ = lines[i].partition(": ")
            if sep:
                lines[i] = f"{key}: {rng.choice(SCALARS)}"
        elif op == 1 and lines:  # a Kafka address mutated
            for j, line in enumerate(lines):
                if "address:" in line or "target:" in line:
                    key = line.split(":", 1)[0]
                    lines[j] = f"{key}: {mutate_address(rng)!r}".replace("\\\\", "\\")
                    break
        elif op == 2 and lines:  # a line dropped (missing section, key or indentation)
            lines.pop(i)
        elif op == 3 and lines:  # a line repeated (duplicate keys, services)
            lines.insert(i, lines[i])
        elif op == 4 and lines:  # a character inserted: control bytes, YAML syntax
            at = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:at] + rng.choice(INSERTS) + lines[i][at:]
        elif op == 5:  # an alias bomb or a recursive anchor
            bomb = rng.choice([LAUGHS.replace("\n", "\n  "), "r: &r [*r]", "m: &m {k: *m}"])
            lines.append("  " + bomb)
            lines.insert(len(lines) - 1, rng.choice(["global:", "extra:", "plugins:"]))
        elif op == 6 and lines:  # a key renamed or re-indented
            indent = len(lines[i]) - len(lines[i].lstrip())
            lines[i] = " " * rng.choice([0, 1, 2, 3, 4, indent]) + lines[i].lstrip()
        elif op == 7 and lines and lines[i].strip():  # a key renamed
            key, sep, value = lines[i].partition(":")
            lines[i] = key.replace(key.strip(), rng.choice(KEYS)) + sep + value
        elif op == 8 and rng.random() < 0.3:  # a large file: many services
            count = rng.choice([100, 500, 2000])
            lines += ["extra_services:"] + [
                f"  - {{name: s{n}, address: 'h:1?topics=t&group=g', timeout: {n}}}"
                for n in range(count)
            ]
        else:  # a wrong type for a whole section
            lines = [f"{rng.choice(KEYS)}: {rng.choice(SCALARS)}", *lines]
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.1:  # raw bytes through the file reader: invalid UTF-8, BOM, NUL
        data = text.encode("utf-8", "surrogatepass")
        at = rng.randrange(len(data) + 1)
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf"])
        return data[:at] + bad + data[at:]
    return text


def files(count: int = COUNT, seed: int = SEED) -> list[str | bytes]:
    rng = random.Random(seed)
    return [SMALL, BASE] + [mutate(rng) for _ in range(count)]


def test_mutations_are_varied() -> None:
    sample = files()
    assert len(sample) >= 2_000
    texts = [s if isinstance(s, str) else s.decode("utf-8", "replace") for s in sample]
    for needle in ("\x00", "!!int abc", "*h", "&r [*r]", "9" * 5000, "!!timestamp", "s1999"):
        assert sum(needle in t for t in texts) >= 5, needle
    assert sum(isinstance(s, bytes) for s in sample) >= 100


@pytest.mark.slow
def test_fuzz_yaml_files() -> None:
    report = run_fuzz("yaml", files())
    print(report.summary())
    assert report.crashes == []
    assert report.others == []
    assert report.slow == []
    assert set(report.outcomes) <= {"ok", "ConfigError"}
    assert report.outcomes["ok"] >= 2  # the unmutated files still load
    assert report.max_rss_mb < 1024
