"""ProducerMessage, payload and header checks (code 121), metadata headers."""

from __future__ import annotations

import datetime as dt

import pytest

from trpc_kafka._producer.message import (
    ProducerMessage,
    append_metadata,
    headers_problem,
    payload_problem,
)


def test_timestamp_ms() -> None:
    assert ProducerMessage("t").timestamp_ms() == 0
    assert ProducerMessage("t", timestamp=1234).timestamp_ms() == 1234
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    assert ProducerMessage("t", timestamp=when).timestamp_ms() == int(when.timestamp() * 1000)


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ("abc", "must be a list of (name, value) pairs or a mapping, got str"),
        ([("a", b"1"), ("b",)], "item 1 must be a (name, value) pair"),
        ([(5, b"1")], "item 0: name must be str, got int"),
        ([("a", 5)], "item 0 ('a'): value must be bytes, str or None, got int"),
        ({"a": 1.5}, "value must be bytes, str or None, got float"),
    ],
)
def test_bad_headers(headers: object, text: str) -> None:
    problem = headers_problem(headers)
    assert problem is not None
    assert problem.code == 121
    assert text in problem.msg


@pytest.mark.parametrize(
    "headers", [None, [], [("a", b"1"), ("a", "two"), ("n", None)], {"a": b"1"}, (("a", b""),)]
)
def test_good_headers(headers: object) -> None:
    assert headers_problem(headers) is None


def test_payload_problem_names_the_argument() -> None:
    assert (
        "encode key: must be bytes, str or None, got int" in payload_problem("t", 5, b"", None).msg
    )
    assert (
        "encode value: must be bytes, str or None, got dict"
        in payload_problem("t", b"", {}, None).msg
    )
    assert "encode topic: must be str, got int" in payload_problem(5, None, None, None).msg
    assert payload_problem("t", None, None, None).code == 121


def test_append_metadata_after_callers_headers() -> None:
    meta = {"trace": b"t1", "user": b"u"}
    assert append_metadata([("a", b"1")], meta) == [("a", b"1"), ("trace", b"t1"), ("user", b"u")]
    assert append_metadata({"a": b"1"}, meta) == [("a", b"1"), ("trace", b"t1"), ("user", b"u")]
    assert append_metadata(None, meta) == [("trace", b"t1"), ("user", b"u")]
