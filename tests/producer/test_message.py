"""ProducerMessage, payload and header checks (code 121), metadata headers."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from tests.producer._util import consume
from trpc_kafka._producer import new_client_proxy
from trpc_kafka._producer.message import (
    ProducerMessage,
    append_metadata,
    headers_problem,
    payload_problem,
)
from trpc_kafka._runtime.errors import TrpcError


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


# -- strings librdkafka cannot take: 121 naming them, never a foreign error or a crash ----------

SURROGATE = "x\ud800"


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda: payload_problem(SURROGATE, None, None, None), "encode topic: 'x\\ud800' is not"),
        (
            lambda: payload_problem("a\x00b", None, None, None),
            "encode topic: 'a\\x00b' contains NUL",
        ),
        (lambda: payload_problem("", None, None, None), "encode topic: must not be empty"),
        (lambda: payload_problem("t", SURROGATE, None, None), "encode key: str is not valid UTF-8"),
        (lambda: payload_problem("t", None, SURROGATE, None), "encode value: str is not valid"),
        (lambda: headers_problem([(SURROGATE, b"")]), "item 0: name 'x\\ud800' is not valid"),
        (lambda: headers_problem({"é\x00": b""}), "item 0: name 'é\\x00' contains NUL"),
        (lambda: headers_problem([("h", b""), ("h", SURROGATE)]), "item 1 ('h'): str value is"),
        (lambda: headers_problem([("h", "a\x00")]), "item 0 ('h'): str value contains NUL"),
    ],
)
def test_strings_librdkafka_cannot_take(call: Callable[[], TrpcError | None], text: str) -> None:
    problem = call()
    assert problem is not None
    assert problem.code == 121
    assert text in problem.msg


def test_valid_text_passes() -> None:
    assert headers_problem([("é", "ü\u4e2d"), ("ascii", "a")]) is None
    # keys and values are sent with their length: NUL is fine there
    assert "librdkafka refused" in payload_problem("t", "a\x00", "b\x00", None).msg


def test_metadata_names_are_checked() -> None:
    with pytest.raises(TrpcError) as info:
        append_metadata([("a", b"")], {SURROGATE: b"1"})
    assert info.value.code == 121
    assert "encode metadata: (trpcMeta headers) item 0: name 'x\\ud800'" in info.value.msg


BAD_STRINGS: dict[str, tuple[dict[str, Any], str]] = {
    "topic": ({"topic": SURROGATE}, "encode topic: 'x\\ud800' is not valid UTF-8"),
    "topic-nul": ({"topic": "a\x00b"}, "encode topic: 'a\\x00b' contains NUL"),
    "key": ({"key": SURROGATE}, "encode key: str is not valid UTF-8"),
    "value": ({"value": SURROGATE}, "encode value: str is not valid UTF-8"),
    "header-name": ({"headers": [(SURROGATE, b"1")]}, "name 'x\\ud800' is not valid UTF-8"),
    "header-name-dict": ({"headers": {SURROGATE: b"1"}}, "name 'x\\ud800' is not valid"),
    "header-name-nul": ({"headers": [("a\x00b", b"1")]}, "name 'a\\x00b' contains NUL"),
    "header-value": ({"headers": [("h", SURROGATE)]}, "str value is not valid UTF-8"),
    "header-value-nul": ({"headers": [("h", "a\x00b")]}, "str value contains NUL"),
}


@pytest.mark.parametrize("partitioner", ["random", "hash", "roundrobin"])
@pytest.mark.parametrize("case", list(BAD_STRINGS))
async def test_bad_strings_are_121_on_every_call(
    kafka_bootstrap: str, new_topic: Callable[..., str], case: str, partitioner: str
) -> None:
    """A header name with a lone surrogate crashed the interpreter inside confluent-kafka;
    the others raised UnicodeEncodeError/ValueError, hung on a metadata thread or were cut."""
    topic = new_topic(2)
    change, text = BAD_STRINGS[case]
    args: dict[str, Any] = {"topic": topic, "key": b"k", "value": b"v", "headers": None, **change}
    proxy = new_client_proxy(
        "trpc.test.producer",
        target=f"kafka://{kafka_bootstrap}?topic={topic}&partitioner={partitioner}",
        timeout=10.0,
    )
    t, k, v, h = args["topic"], args["key"], args["value"], args["headers"]
    calls: list[Callable[[], Any]] = [
        lambda: proxy.send_message(t, k, v, h),
        lambda: proxy.async_send_message(t, k, v, h),
        lambda: proxy.send_raw_message(ProducerMessage(t, v, k, h)),
    ]
    if t == topic:
        calls.append(lambda: proxy.produce(k, v, h))
    try:
        for call in calls:
            with pytest.raises(TrpcError) as info:
                await call()
            assert info.value.code == 121, info.value
            assert text in info.value.msg
        for sync_call in (
            lambda: proxy.send_message_sync(t, k, v, h),
            lambda: proxy.async_send_message_sync(t, k, v, h),
        ):
            with pytest.raises(TrpcError) as info:
                await asyncio.to_thread(sync_call)
            assert info.value.code == 121, info.value
            assert text in info.value.msg
        # the proxy still works afterwards
        assert (await proxy.send_message(topic, b"k", b"ok"))[0] in (0, 1)
    finally:
        await proxy.close()
    assert [r.value for r in consume(kafka_bootstrap, topic, 1)] == [b"ok"]
