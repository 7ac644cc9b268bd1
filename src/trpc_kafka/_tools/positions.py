"""Where in a partition a command starts: ``oldest``, ``newest``, an offset or a time."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from trpc_kafka._tools.clients import CliError

ALLOWED = "oldest, newest, an offset (e.g. 42), or a time (2026-01-31T12:00:00Z, or @ms)"


@dataclass(frozen=True)
class Position:
    """``kind`` is oldest, newest, offset or time; ``value`` the offset or ms since the epoch."""

    kind: str
    value: int = 0


def parse_position(text: str, flag: str) -> Position:
    """``text`` as a Position, or a CliError naming ``flag``, the text and what is allowed."""
    word = text.strip().lower()
    if word in ("oldest", "earliest", "beginning"):
        return Position("oldest")
    if word in ("newest", "latest", "end"):
        return Position("newest")
    if word.startswith("@"):
        ms = word[1:]
        if ms.isdigit() and len(ms) <= 16:
            return Position("time", int(ms))
        raise CliError(f"{flag} {text!r}: @ must be followed by milliseconds since the epoch")
    if word.isdigit() and len(word) <= 19:
        return Position("offset", int(word))
    try:
        when = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag} {text!r}: expected {ALLOWED}") from None
    if when.tzinfo is None:
        when = when.astimezone()  # a time without a zone is local time
    return Position("time", int(when.timestamp() * 1000))
