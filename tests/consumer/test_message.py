"""ConsumerMessage / WireMessage and the guarded header read (unit tests, fake records).

The real poisoned records (a header name that is not UTF-8, read by confluent-kafka) are in
test_poison_records.py; here the repair logic runs against records that behave like them.
"""

from __future__ import annotations

from typing import Any

import pytest

from trpc_kafka._consumer.message import ConsumerMessage, WireMessage, record_headers


class FakeRecord:
    """confluent-kafka's Message as far as headers go: converted once, then kept."""

    def __init__(self, headers: Any, *, poisoned: bool = False, after: Any = None) -> None:
        self._headers = headers
        self._poisoned = poisoned
        self._after = after  # what headers() returns after the failed first call
        self.calls = 0
        self.set_calls: list[Any] = []

    def headers(self) -> Any:
        self.calls += 1
        if self._poisoned:
            self._poisoned = False
            self._headers = self._after
            try:
                b"bad\xff".decode()
            except UnicodeDecodeError as exc:
                raise SystemError("headers returned a result with an exception set") from exc
        return self._headers

    def set_headers(self, headers: Any) -> None:
        self.set_calls.append(headers)
        self._headers = headers

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 42


def test_record_headers_plain() -> None:
    assert record_headers(FakeRecord(None)) == []
    assert record_headers(FakeRecord([("a", b"1"), ("a", None)])) == [("a", b"1"), ("a", None)]


def test_record_headers_repairs_a_failed_conversion(caplog: pytest.LogCaptureFixture) -> None:
    readable = [("a", b"1"), ("b", None)]
    record = FakeRecord(None, poisoned=True, after=list(readable))
    with caplog.at_level("WARNING", logger="trpc_kafka.consumer"):
        assert record_headers(record) == readable
    assert record.set_calls == [readable]  # the record is repaired for every later reader
    assert record_headers(record) == readable
    (warning,) = caplog.records
    text = warning.getMessage()
    assert "topic t partition 3 offset 42: a header name is not UTF-8 (e.g. b'bad\\xff')" in text
    assert "handled without the headers whose name is not UTF-8" in text


@pytest.mark.parametrize("after", ["junk", [("a", b"1", "extra")], [(5, b"1")], [("a", 5)]])
def test_record_headers_unexpected_leftover_drops_all(
    after: Any, caplog: pytest.LogCaptureFixture
) -> None:
    record = FakeRecord(None, poisoned=True, after=after)
    with caplog.at_level("WARNING", logger="trpc_kafka.consumer"):
        assert record_headers(record) == []
    assert record.set_calls == [[]]
    assert "handled without any headers" in caplog.records[0].getMessage()


def test_wire_message_headers_are_a_copy() -> None:
    record = FakeRecord([("a", b"1")])
    msg = WireMessage("t", 3, 42, record)
    msg.headers.append(("b", b"2"))
    assert msg.headers == [("a", b"1")]
    assert WireMessage("t", 3, 42, FakeRecord(None)).headers == []


def test_consumer_message_any_bytes() -> None:
    msg = ConsumerMessage("t", 0, 1, key=b"\xff", value=b"", headers=[("h", None), ("h", b"\x80")])
    assert (msg.key, msg.value, msg.headers) == (b"\xff", b"", [("h", None), ("h", b"\x80")])
    assert repr(msg) == (
        "ConsumerMessage(topic='t', partition=0, offset=1, key=b'\\xff', value=<0 bytes>, "
        "headers=2, timestamp=None)"
    )


def test_consumer_message_built_by_hand() -> None:
    msg = ConsumerMessage("t", 1, 7, key=b"k", value=b"v", headers=[("a", b"1")], timestamp=5)
    assert (msg.topic, msg.partition, msg.offset, msg.key, msg.value) == ("t", 1, 7, b"k", b"v")
    assert msg.headers == [("a", b"1")]
    assert msg.timestamp == 5
    msg.headers.append(("b", b"2"))
    assert msg.headers == [("a", b"1")], "headers are returned as a copy"
