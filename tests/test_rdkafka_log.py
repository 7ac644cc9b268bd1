"""librdkafka's log lines, forwarded rate-limited and at a fitting level (issue 9 section 1).

A producer with no broker forwarded 3,217 ERROR lines during one 300 s send; a consumer service
1,154 a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from tests.consumer._util import one_service, serving
from tests.producer._util import closed_port
from trpc_kafka._consumer import ConsumerMessage, register_kafka_handler_service
from trpc_kafka._producer import new_client_proxy
from trpc_kafka._rdkafka_log import LOG_WINDOW, RateLimiter, RdkafkaLog, rdkafka_log
from trpc_kafka._runtime.context import Context

REFUSED = (
    "127.0.0.1:{port}/bootstrap: Connect to ipv4#127.0.0.1:{port} failed: Connection refused "
    "(after {ms}ms in state CONNECT)"
)


def test_rate_limiter_admits_one_per_window_and_counts_the_rest() -> None:
    limiter = RateLimiter(0.2)
    assert limiter.admit("a") == 0
    assert limiter.admit("a") is None
    assert limiter.admit("a") is None
    assert limiter.admit("b") == 0  # another key has its own window
    time.sleep(0.25)
    assert limiter.admit("a") == 2  # let through, saying two were suppressed
    assert limiter.admit("a") is None


def test_forwarded_lines_are_limited_per_client_and_cause(caplog: pytest.LogCaptureFixture) -> None:
    forward = RdkafkaLog(logging.getLogger("trpc_kafka.test.rdkafka"), window=0.3)
    with caplog.at_level(logging.DEBUG, logger="trpc_kafka.test.rdkafka"):
        for ms in range(50):  # one cause: numbers differ only
            forward.log(40, "%s [%s] %s", "FAIL", "c#producer-1", REFUSED.format(port=1, ms=ms))
        forward.log(40, "%s [%s] %s", "FAIL", "c#producer-2", REFUSED.format(port=1, ms=0))
        forward.log(40, "%s [%s] %s", "ERROR", "c#producer-1", "something else")
        for _ in range(5):  # debug output, asked for explicitly: all of it
            forward.log(logging.DEBUG, "%s [%s] %s", "BROKER", "c#producer-1", "debug line")
        time.sleep(0.35)
        forward.log(40, "%s [%s] %s", "FAIL", "c#producer-1", REFUSED.format(port=1, ms=7))
    records = caplog.records
    assert len(records) == 1 + 1 + 1 + 5 + 1
    fails = [r for r in records if r.getMessage().startswith("FAIL")]
    # A connection failure is retried by librdkafka: WARNING, not ERROR.
    assert {r.levelno for r in fails} == {logging.WARNING}
    assert "(49 similar suppressed in the last 0.3s)" in fails[-1].getMessage()
    other = next(r for r in records if "something else" in r.getMessage())
    assert other.levelno == logging.ERROR


def test_one_forwarder_per_logger_name() -> None:
    assert rdkafka_log("trpc_kafka.rdkafka") is rdkafka_log("trpc_kafka.rdkafka")
    assert rdkafka_log("trpc_kafka.rdkafka") is not rdkafka_log("trpc_kafka.consumer.rdkafka")


async def _noop(ctx: Context, msg: ConsumerMessage) -> None:
    return None


async def test_a_10s_outage_logs_a_handful_of_lines_not_thousands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A producer sending and a consumer service, both on unreachable addresses, 11 s."""
    failed: list[BaseException] = []
    proxy = new_client_proxy(
        "p",
        target=f"kafka://127.0.0.1:{closed_port()}",
        error_callback=lambda err, *_: failed.append(err),
    )
    port = closed_port()
    server = one_service(f"127.0.0.1:{port}?topics=t&group=g-{uuid.uuid4().hex[:6]}")
    register_kafka_handler_service(server, _noop)
    outage = LOG_WINDOW + 1.0
    with caplog.at_level(logging.INFO, logger="trpc_kafka"):
        async with serving(server):
            end = time.monotonic() + outage
            while time.monotonic() < end:
                await proxy.async_send_message("t", None, b"v")
                await asyncio.sleep(0.2)
        await proxy.close()
    assert failed  # the sends did fail (and said so to their callback, not to the log)

    def lines(logger: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == logger]

    producer_rdkafka = lines("trpc_kafka.rdkafka")
    consumer_rdkafka = lines("trpc_kafka.consumer.rdkafka")
    producer_errors = lines("trpc_kafka.producer")
    # One line per window and cause: at most two windows in 11 s.
    assert 1 <= len(producer_rdkafka) <= 4, [r.getMessage() for r in producer_rdkafka]
    assert 1 <= len(consumer_rdkafka) <= 4, [r.getMessage() for r in consumer_rdkafka]
    # error_cb: one per error code and window (_TRANSPORT, _ALL_BROKERS_DOWN), plus the close.
    assert len(producer_errors) <= 6, [r.getMessage() for r in producer_errors]
    for record in producer_rdkafka + consumer_rdkafka:
        assert record.levelno == logging.WARNING, record.getMessage()
    later = [r.getMessage() for r in producer_rdkafka[1:] + consumer_rdkafka[1:]]
    assert all("similar suppressed" in m for m in later if "Connection refused" in m), later
