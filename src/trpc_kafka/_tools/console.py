"""``trpc-kafka produce`` and ``trpc-kafka consume``: send and read records from a terminal.

``produce`` goes through a client proxy of the library (the same partitioners, compression,
errors and codes as a service); ``consume`` reads with a librdkafka consumer configured by the
same address mapping as a consumer service. Records go to stdout (one per line, text or JSON);
progress, warnings and the summary go to stderr, so stdout stays parseable.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from types import FrameType
from typing import Any, Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    TopicPartition,
)

from trpc_kafka._config.address import resolve_address
from trpc_kafka._config.rdkafka import admin_settings, consumer_settings
from trpc_kafka._kafka_errors import describe
from trpc_kafka._producer import ProducerMessage, new_client_proxy
from trpc_kafka._tools.clients import (
    RDKAFKA_LOG,
    CliError,
    add_cluster_arguments,
    admin_client,
    cluster_address,
    quiet,
    topic_metadata,
)
from trpc_kafka._tools.positions import ALLOWED, Position, parse_position

PRODUCER_NAME: Final = "trpc-kafka.cli.produce"
POLL_SECONDS: Final = 0.5
CLOSE_SECONDS: Final = 30.0
"""Seconds ``consume -g`` gives its last commit and leaving the group before it exits anyway."""
CLOSE_SECONDS_NO_GROUP: Final = 10.0
WARN_EVERY: Final = 10.0
"""Seconds between two warnings of the same kind (an unreachable cluster is said once, then
again every 10 s, not on every reconnect)."""


def add_parsers(commands: Any) -> None:
    """Register ``produce`` and ``consume`` on the CLI's subparsers."""
    produce = commands.add_parser(
        "produce",
        help="send messages given as arguments or as stdin lines; print partition and offset",
        description="Send each VALUE as a message, or, with no VALUE, each line of stdin. "
        "Prints topic[partition]@offset of every acknowledged message.",
    )
    add_cluster_arguments(produce, services=True)
    produce.add_argument("values", nargs="*", metavar="VALUE")
    produce.add_argument("-t", "--topic", help="the topic (default: topic= of the address)")
    produce.add_argument("-k", "--key", help="the key of every message")
    produce.add_argument(
        "-K",
        "--key-separator",
        metavar="SEP",
        help="split each message at the first SEP into key and value (kcat's -K)",
    )
    produce.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a header of every message (repeatable)",
    )
    produce.add_argument(
        "-p", "--partition", type=int, help="the partition (default: the address's partitioner)"
    )
    produce.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per message (default: 10)"
    )
    produce.set_defaults(handler=_produce)

    consume = commands.add_parser(
        "consume",
        help="print the messages of a topic (key, value, headers, partition, offset, time)",
        description="Tail topics. Without a group, reads the partitions directly and commits "
        "nothing; with -g GROUP, joins that consumer group and commits what it printed.",
    )
    add_cluster_arguments(consume, services=True)
    consume.add_argument(
        "-t", "--topic", action="append", help="a topic (repeatable; default: the address's topics)"
    )
    consume.add_argument("-g", "--group", help="join this consumer group and commit offsets")
    consume.add_argument(
        "--from",
        dest="start",
        default="newest",
        metavar="POSITION",
        help=f"where to start: {ALLOWED} (default: newest; with a group only oldest or newest, "
        f"for partitions the group has no offset of)",
    )
    consume.add_argument(
        "-p", "--partition", type=int, action="append", help="only this partition (repeatable)"
    )
    consume.add_argument("-n", "--count", type=int, help="exit after this many messages")
    consume.add_argument(
        "-e",
        "--exit-at-end",
        action="store_true",
        help="exit once every partition is read up to where it ended at start (no group)",
    )
    consume.add_argument(
        "-o", "--format", choices=("text", "json"), default="text", help="(default: text)"
    )
    consume.set_defaults(handler=_consume)


# ---------------------------------------------------------------------------------------------
# produce


def _produce(args: argparse.Namespace) -> int:
    address = cluster_address(args, side="client")
    cfg = resolve_address(address)
    topic = args.topic or cfg.topic
    if not topic:
        raise CliError("no topic: give -t TOPIC (or topic= in the address)")
    headers = [_header(item) for item in args.header]
    sent = 0
    proxy = new_client_proxy(PRODUCER_NAME, target=address, timeout=args.timeout)
    try:
        for line in _messages(args):
            key: bytes | None = args.key.encode() if args.key is not None else None
            value: bytes | None = line
            if args.key_separator is not None:
                sep = args.key_separator.encode()
                if sep not in line:
                    raise CliError(
                        f"message {sent + 1}: no key separator {args.key_separator!r} in "
                        f"{line[:60]!r}"
                    )
                key, value = line.split(sep, 1)
            partition, offset = proxy.send_raw_message_sync(
                ProducerMessage(
                    topic, value=value, key=key, headers=headers or None, partition=args.partition
                )
            )
            sent += 1
            _out(f"{topic}[{partition}]@{offset}")
    finally:
        proxy.close_sync()
        if sent and not sys.stdout.isatty():
            _err(f"sent {sent} message(s) to {topic}")
    return 0


def _messages(args: argparse.Namespace) -> Iterator[bytes]:
    if args.values:
        for value in args.values:
            yield value.encode("utf-8", "surrogateescape")
        return
    if sys.stdin.isatty():
        _err("reading messages from stdin, one per line (Ctrl-D to end)")
    for raw in sys.stdin.buffer:
        yield raw[:-1] if raw.endswith(b"\n") else raw


def _header(item: str) -> tuple[str, bytes]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise CliError(f"--header {item!r}: expected NAME=VALUE")
    return name, value.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------
# consume


def _consume(args: argparse.Namespace) -> int:
    address = cluster_address(args, side="server")
    cfg = resolve_address(address)
    topics = args.topic or list(cfg.topics)
    if not topics:
        raise CliError("no topic: give -t TOPIC (or topics= in the address)")
    group = args.group or (cfg.group if args.service_name else None)
    start = parse_position(args.start, "--from")
    if args.count is not None and args.count < 1:
        raise CliError(f"--count {args.count}: must be at least 1")
    if group and start.kind not in ("oldest", "newest"):
        raise CliError(
            f"--from {args.start!r} with a group: a group starts where it committed; use "
            f"`trpc-kafka groups reset-offsets {group} -t TOPIC --to {args.start}` first"
        )
    if group and (args.exit_at_end or args.partition):
        raise CliError("--exit-at-end and --partition read partitions directly: drop -g GROUP")
    warner = _Warner()
    if group:
        cfg.group = group
        cfg.topics = topics
        cfg.initial = "oldest" if start.kind == "oldest" else "newest"
        settings = consumer_settings(cfg)
    else:
        settings = admin_settings(cfg)
        settings.update(
            {
                # A group id librdkafka needs for a consumer; nothing is committed with it.
                "group.id": f"trpc-kafka-cli-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            }
        )
    settings["logger"] = RDKAFKA_LOG
    settings["error_cb"] = warner.error
    consumer = Consumer(settings)
    close_bound = CLOSE_SECONDS if group else CLOSE_SECONDS_NO_GROUP
    printer = _Printer(args.format)
    try:
        if group:
            consumer.subscribe(topics)
            ends: dict[tuple[str, int], int] = {}
        else:
            assignment = _assignment(cfg, topics, args.partition, start)
            ends = _ends(consumer, assignment) if args.exit_at_end else {}
            consumer.assign(assignment)
        with sigint_as_flag() as interrupted:
            _read(
                consumer,
                printer,
                warner,
                args.count,
                ends,
                commit=bool(group),
                exit_at_end=args.exit_at_end,
                interrupted=interrupted,
            )
    except KeyboardInterrupt:
        _err(f"interrupted; consumed {printer.count} message(s)")
        _close_within(consumer, close_bound, exit_code=130)
        return 130
    except BaseException:
        _close_within(consumer, close_bound, exit_code=1)
        raise
    _close_within(consumer, close_bound, exit_code=0)
    if not sys.stdout.isatty():
        _err(f"consumed {printer.count} message(s)")
    return 0


@contextlib.contextmanager
def sigint_as_flag() -> Iterator[threading.Event]:
    """While inside: Ctrl-C (SIGINT) sets the event instead of raising KeyboardInterrupt.

    A KeyboardInterrupt raised while ``poll()`` runs one of our callbacks (the log or error
    callback, on this thread) is mishandled by confluent-kafka 2.16: ``poll`` then fails with
    "SystemError: returned NULL without setting an exception", or the interrupt is lost.
    Setting a flag runs no Python code that can raise inside a callback; the read loop checks
    it after each ``poll``. Installed whatever the inherited disposition: a process started in
    the background gets SIGINT ignored, and Python would then never raise KeyboardInterrupt.
    """
    interrupted = threading.Event()

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        interrupted.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C while closing raises again


def _close_within(consumer: Any, seconds: float, *, exit_code: int) -> None:
    """``consumer.close()`` (with a group: commit what was printed, leave the group), bounded.

    Ctrl-C must end the command: a close that librdkafka does not finish in ``seconds`` is
    abandoned with a line saying so, and the process ends at once with ``exit_code``.
    """
    closing = threading.Thread(target=consumer.close, name="trpc-kafka-close", daemon=True)
    closing.start()
    closing.join(seconds)
    if closing.is_alive():
        _err(f"closing the consumer took over {seconds:g} s; left without it")
        sys.stdout.flush()
        os._exit(exit_code)  # the interpreter's own exit would wait on librdkafka again


def _assignment(
    cfg: Any, topics: list[str], partitions: list[int] | None, start: Position
) -> list[TopicPartition]:
    admin = admin_client(cfg)
    tps: list[TopicPartition] = []
    for topic in topics:
        ids = sorted(topic_metadata(admin, topic).partitions)
        if partitions:
            unknown = sorted(set(partitions) - set(ids))
            if unknown:
                raise CliError(
                    f"--partition {unknown[0]}: topic {topic!r} has partitions 0-{len(ids) - 1}"
                )
            ids = sorted(set(partitions))
        tps.extend(TopicPartition(topic, p) for p in ids)
    if start.kind == "oldest":
        return [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in tps]
    if start.kind == "newest":
        return [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in tps]
    if start.kind == "offset":
        return [TopicPartition(tp.topic, tp.partition, start.value) for tp in tps]
    lookup = Consumer(
        quiet({**admin_settings(cfg), "group.id": f"trpc-kafka-cli-{uuid.uuid4().hex}"})
    )
    try:
        found = lookup.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, start.value) for tp in tps], timeout=15
        )
    finally:
        lookup.close()
    # No record at or after the time: start at the end (only newer records will be shown).
    return [
        TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
        for tp in found
    ]


def _ends(consumer: Any, assignment: list[TopicPartition]) -> dict[tuple[str, int], int]:
    """Where each partition ends now; partitions with nothing to read are left out."""
    ends = {}
    for tp in assignment:
        low, high = consumer.get_watermark_offsets(tp, timeout=15)
        begin = {OFFSET_BEGINNING: low, OFFSET_END: high}.get(tp.offset, tp.offset)
        if high > max(begin, low):
            ends[(tp.topic, tp.partition)] = high
    return ends


def _read(
    consumer: Any,
    printer: _Printer,
    warner: _Warner,
    count: int | None,
    ends: dict[tuple[str, int], int],
    *,
    commit: bool,
    exit_at_end: bool,
    interrupted: threading.Event,
) -> None:
    while True:
        if exit_at_end and not ends:
            return
        msg = consumer.poll(POLL_SECONDS)
        if interrupted.is_set():
            raise KeyboardInterrupt
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise CliError(describe(err, msg.topic()))
                warner.warn(err.code(), describe(err, msg.topic()))
            continue
        printer.print(msg)
        if commit:
            consumer.store_offsets(msg)
        key = (msg.topic(), msg.partition())
        end = ends.get(key)
        if end is not None and msg.offset() + 1 >= end:
            del ends[key]
        if count is not None and printer.count >= count:
            return


class _Printer:
    """One record per stdout line, as text or as a JSON object."""

    def __init__(self, fmt: str) -> None:
        self.json = fmt == "json"
        self.count = 0

    def print(self, msg: Any) -> None:
        headers = _headers_of(msg)
        kind, ms = msg.timestamp()
        when = _iso(ms) if kind else None
        if self.json:
            record = {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "timestamp": ms if kind else None,
                "key": _json_bytes(msg.key()),
                "value": _json_bytes(msg.value()),
                "headers": None
                if headers is None
                else [[name, _json_bytes(value)] for name, value in headers],
            }
            line = json.dumps(record, ensure_ascii=False)
        else:
            shown = (
                "<unreadable>"
                if headers is None
                else ",".join(f"{name}={_text(value)}" for name, value in headers)
            )
            parts = [
                f"{msg.topic()}[{msg.partition()}]@{msg.offset()}",
                when or "-",
                f"key={_text(msg.key())}",
            ]
            if shown:
                parts.append(f"headers={shown}")
            parts.append(_text(msg.value()))
            line = " ".join(parts)
        _out(line)
        self.count += 1


def _headers_of(msg: Any) -> list[tuple[str, bytes | None]] | None:
    """The record's headers, or None when confluent-kafka cannot decode them.

    ``Message.headers()`` raises SystemError for a header name that is not UTF-8, and a second
    call returns a NULL name that crashes the interpreter: it is called once, here.
    """
    try:
        headers: list[tuple[str, bytes | None]] | None = msg.headers()
    except (SystemError, UnicodeDecodeError):
        return None
    return headers or []


class _Warner:
    """librdkafka errors to stderr, each kind at most once per WARN_EVERY seconds."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def error(self, err: KafkaError) -> None:
        self.warn(err.code(), describe(err))

    def warn(self, code: int, text: str) -> None:
        now = time.monotonic()
        if now - self._last.get(code, -WARN_EVERY) >= WARN_EVERY:
            self._last[code] = now
            _err(f"warning: {text}")


def _text(data: bytes | None) -> str:
    if data is None:
        return "null"
    return data.decode("utf-8", "backslashreplace")


def _json_bytes(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _iso(ms: int) -> str:
    when = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(f"trpc-kafka: {line}\n")
    sys.stderr.flush()
