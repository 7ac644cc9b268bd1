"""The documentation's code blocks run as written, so README and guide cannot drift.

Every fenced block of README.md and docs/zh/README.md is checked by its language:

- ``python`` blocks run against the test broker, the blocks of one ``##`` section in order in one
  process sharing one namespace (a section reads as one program); ``yaml`` blocks are written to
  ``trpc_python.yaml`` (or the ``file=NAME`` of a directive) for the blocks after them;
- ``sh`` lines that call ``trpc-kafka`` are parsed by the real command line parser (flags and
  sub-commands must exist); ``make`` lines must name a target of the Makefile;
- ``text`` blocks are output and address samples, not run.

The docs say ``127.0.0.1:9092`` (what ``trpc-kafka broker start --port 9092`` gives); the test
puts the test broker's address there. A directive in an HTML comment on the line before a fence
changes what happens: ``<!-- test: serve group=G -->`` (the block serves until stopped: once
group G has a member the test sends SIGTERM and expects a graceful end), ``<!-- test:
file=NAME -->``, ``<!-- test: skip REASON -->``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from trpc_kafka._tools import cli
from trpc_kafka._tools.broker import create_topic

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/zh/README.md")
SESSION = Path(__file__).parent / "data" / "docs_session.py"
DOCS_ADDRESS = "127.0.0.1:9092"
FENCE = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!-- test: (.*) -->\s*$")
LANGUAGES = {"python", "yaml", "sh", "text"}


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence
    lang: str
    code: str
    section: str
    directive: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def _directive(text: str) -> dict[str, str]:
    word, _, rest = text.partition(" ")
    if word == "skip":
        return {"skip": rest.strip()}
    return {key: value for key, _, value in (item.partition("=") for item in text.split())}


def blocks_of(doc: str) -> list[Block]:
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    section = "(top)"
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = FENCE.match(line)
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marked = DIRECTIVE.match(lines[start - 1]) if start > 0 else None
        blocks.append(
            Block(
                doc,
                start + 1,
                fence.group(1),
                "\n".join(body) + "\n",
                section,
                _directive(marked.group(1)) if marked else {},
            )
        )
        i += 1
    return blocks


ALL_BLOCKS = [block for doc in DOCS for block in blocks_of(doc)]


def _sections() -> dict[str, list[Block]]:
    """The runnable blocks (python and yaml) by ``doc#section``, where a section has Python."""
    found: dict[str, list[Block]] = {}
    for block in ALL_BLOCKS:
        if block.lang in ("python", "yaml") and "skip" not in block.directive:
            found.setdefault(f"{block.doc}#{block.section}", []).append(block)
    return {name: bs for name, bs in found.items() if any(b.lang == "python" for b in bs)}


SECTIONS = _sections()


def test_every_block_has_a_known_language_and_skips_say_why() -> None:
    assert len(ALL_BLOCKS) >= 30
    for block in ALL_BLOCKS:
        assert block.lang in LANGUAGES, f"{block.where}: fence language {block.lang!r}"
        if "skip" in block.directive:
            assert block.directive["skip"], f"{block.where}: a skip needs a reason"
    # Every yaml block is read by a Python block of its section.
    for block in ALL_BLOCKS:
        if block.lang == "yaml" and "skip" not in block.directive:
            assert f"{block.doc}#{block.section}" in SECTIONS, block.where


def _commands(code: str) -> list[list[str]]:
    """The commands of a shell block: lines split at pipes and ``&&``, comments dropped."""
    commands: list[list[str]] = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "|"]:
            if word in ("|", "&&", ";"):
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([\w-]+):", text, re.MULTILINE)}


def test_shell_lines_use_commands_and_flags_that_exist() -> None:
    targets = _make_targets()
    parser = cli._parser()
    checked = 0
    for block in ALL_BLOCKS:
        if block.lang != "sh" or "skip" in block.directive:
            continue
        for command in _commands(block.code):
            name = Path(command[0]).name
            if name == "trpc-kafka":
                try:
                    parser.parse_args(command[1:])
                except SystemExit:
                    pytest.fail(f"{block.where}: `{shlex.join(command)}` does not parse")
                checked += 1
            elif name == "make":
                assert set(command[1:]) <= targets, f"{block.where}: {shlex.join(command)}"
                checked += 1
    assert checked > 15


def _group_has_members(bootstrap: str, group: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception:  # not known yet
        return False
    return bool(described.members) and described.state == ConsumerGroupState.STABLE


def _docs_topics() -> list[tuple[str, int]]:
    """The ``--topic NAME:PARTITIONS`` of the ``broker start`` lines the docs tell to run."""
    parser = cli._parser()
    topics = []
    for block in ALL_BLOCKS:
        if block.lang != "sh":
            continue
        for command in _commands(block.code):
            if Path(command[0]).name == "trpc-kafka" and command[1:3] == ["broker", "start"]:
                args = parser.parse_args(command[1:])
                topics += [(t.name, t.partitions) for t in args.topic]
    return topics


@pytest.fixture(scope="module")
def docs_topics(kafka_bootstrap: str) -> None:
    """The reader's broker has the topics the docs create; so does the test broker."""
    for name, partitions in _docs_topics():
        try:
            create_topic(kafka_bootstrap, name, partitions=partitions)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def test_docs_start_a_broker_with_their_topics() -> None:
    assert ("orders", 6) in _docs_topics()


@pytest.mark.parametrize("name", sorted(SECTIONS))
@pytest.mark.usefixtures("docs_topics")
def test_section_runs(name: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    blocks = SECTIONS[name]
    payload = [
        {
            "kind": "python" if b.lang == "python" else "file",
            "name": b.directive.get("file", "trpc_python.yaml"),
            "code": b.code.replace(DOCS_ADDRESS, kafka_bootstrap),
            "where": b.where,
        }
        for b in blocks
    ]
    script = tmp_path / "blocks.json"
    script.write_text(json.dumps(payload), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(SESSION), str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    errors: list[str] = []

    def pump_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        errors.extend(proc.stderr)

    readers = [threading.Thread(target=f, daemon=True) for f in (pump_stdout, pump_stderr)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 240
    seen: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{name}: still running after 240 s; output: {seen[-5:]}")
            if line is None:
                break
            seen.append(line)
            if line.startswith("@@block "):
                block = blocks[int(line.split()[1])]
                if "serve" in block.directive:
                    group = block.directive["group"]
                    while not _group_has_members(kafka_bootstrap, group):
                        assert proc.poll() is None, f"{block.where} ended before serving"
                        assert time.monotonic() < deadline, f"{block.where}: never served"
                        time.sleep(0.5)
                    proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(timeout=10)
    stderr = "".join(errors)
    assert code == 0, f"{name}: exit {code}\n{stderr[-3000:]}"
    assert "@@done" in seen, f"{name}: not every block ran\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
