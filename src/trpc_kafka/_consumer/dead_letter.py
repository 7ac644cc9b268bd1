"""``deadLetterTopic=``: where a message goes once its handler retries are exhausted.

Beyond the reference. The message is produced to the dead letter topic with its key, value and
headers, plus headers naming where it came from and why it failed; the consumer commits it only
after the broker acknowledged that copy. The copies are sent by a client proxy of the consumer's
address, so the producer is the pool's (``trpc_kafka._producer.pool``): shared with any proxy of
the same settings, created on the first dead letter, closed with the pool.

A copy larger than the producer accepts (``message.max.bytes``: ``maxMessageBytes`` or
``rdkafka.message.max.bytes``; or the topic's ``max.message.bytes`` on the broker) can never be
sent as it is; retrying it would stall the partition for ever. It is cut to fit instead (value,
then key and the record's own headers), our headers kept whole, with a
:data:`DEAD_LETTER_HEADER_TRUNCATED` header saying what was cut: the original is still in the
source topic at the partition and offset the copy names. Each refusal by the broker halves the
size tried, down to ``_SMALLEST_COPY`` bytes; any other failure is retried by the consumer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Final

from confluent_kafka import KafkaError

from trpc_kafka._config.address import KafkaConfig
from trpc_kafka._config.rdkafka import producer_settings
from trpc_kafka._consumer.message import Header, WireMessage
from trpc_kafka._kafka_errors import kafka_error_of
from trpc_kafka._producer.message import ProducerMessage
from trpc_kafka._producer.proxy import ClientProxy
from trpc_kafka._runtime.errors import TrpcError

logger = logging.getLogger("trpc_kafka.consumer")

DEAD_LETTER_HEADER_ERROR: Final = "trpc-kafka-error"
"""The handler's last error, as text (UTF-8)."""
DEAD_LETTER_HEADER_TOPIC: Final = "trpc-kafka-topic"
"""Topic the message was consumed from."""
DEAD_LETTER_HEADER_PARTITION: Final = "trpc-kafka-partition"
"""Its partition, decimal text."""
DEAD_LETTER_HEADER_OFFSET: Final = "trpc-kafka-offset"
"""Its offset, decimal text."""
DEAD_LETTER_HEADER_ATTEMPTS: Final = "trpc-kafka-attempts"
"""How many times the handler was called, decimal text."""
DEAD_LETTER_HEADER_SERVICE: Final = "trpc-kafka-service"
"""Name of the consumer service that gave up on it."""
DEAD_LETTER_HEADER_TRUNCATED: Final = "trpc-kafka-truncated"
"""Present when the copy was cut to fit: what was cut, e.g. ``value 2000000->130000 bytes``."""

# How long one dead letter may take to be acknowledged before the send counts as failed.
_ACK_TIMEOUT: Final = 30.0
_TOO_LARGE: Final = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
# Room kept for the record's framing (batch and record headers, varints, CRC) in a cut copy.
_RECORD_OVERHEAD: Final = 512
_SMALLEST_COPY: Final = 1024
"""The smallest size a copy is cut to (our headers and a note always fit)."""

_Record = tuple["bytes | None", "bytes | None", list[Header], list[Header]]
"""key, value, the record's own headers, our headers."""


class DeadLetterSender:
    """Sends the dead letters of one consumer service (a ``DeadLetterSink``)."""

    __slots__ = ("_closing", "_limit", "_proxy", "_service", "topic")

    def __init__(
        self,
        cfg: KafkaConfig,
        service: str,
        executor: Callable[[], concurrent.futures.Executor] | None = None,
    ) -> None:
        """``executor``: unused (sends wait on the event loop now); kept for the caller."""
        self._service = service
        self.topic = cfg.dead_letter_topic
        producer_cfg = cfg.copy()
        producer_cfg.trpc_meta = False  # the record's own headers are copied as they are
        producer_cfg.async_produce = False
        self._limit = int(producer_settings(producer_cfg).get("message.max.bytes", 1_000_000))
        self._proxy = ClientProxy(f"{service}/deadLetter", producer_cfg, timeout=_ACK_TIMEOUT)
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, msgs: list[WireMessage], error: BaseException, attempts: int) -> None:
        """Send a copy of each of ``msgs``; returns once the broker acknowledged every one."""
        text = (str(error) or type(error).__name__).encode("utf-8", "replace")
        records: list[_Record] = [
            (msg.key, msg.value, list(msg.headers), self._headers(msg, text, attempts))
            for msg in msgs
        ]
        await asyncio.gather(*(self._send_one(record) for record in records))

    def _headers(self, msg: WireMessage, error: bytes, attempts: int) -> list[Header]:
        return [
            (DEAD_LETTER_HEADER_ERROR, error),
            (DEAD_LETTER_HEADER_TOPIC, msg.topic.encode()),
            (DEAD_LETTER_HEADER_PARTITION, str(msg.partition).encode()),
            (DEAD_LETTER_HEADER_OFFSET, str(msg.offset).encode()),
            (DEAD_LETTER_HEADER_ATTEMPTS, str(attempts).encode()),
            (DEAD_LETTER_HEADER_SERVICE, self._service.encode()),
        ]

    async def _send_one(self, record: _Record) -> None:
        key, value, own, ours = record
        copy = ProducerMessage(self.topic, value, key, [*own, *ours])
        limit = self._limit
        cut = False
        while True:
            try:
                await self._proxy.send_raw_message(copy)
                return
            except TrpcError as exc:
                err = None if exc.__cause__ is None else kafka_error_of(exc.__cause__)
                if err is None or err.code() not in _TOO_LARGE:
                    raise
                if cut:  # refused cut: the broker's (topic's) limit is lower still
                    if limit <= _SMALLEST_COPY:
                        raise
                    limit = max(_SMALLEST_COPY, limit // 2)
            copy, note = _cut(self.topic, record, limit)
            cut = True
            logger.warning(
                "kafka dead letter: the copy of %s is too large for topic %s: sending it cut (%s)",
                _origin(ours),
                self.topic,
                note,
            )

    def close(self, timeout: float) -> None:
        """Release the pooled producer; queued copies get ``timeout`` seconds.

        Every copy was awaited by :meth:`send`, so nothing is normally queued. From a running
        event loop this does not block it: the proxy closes in a task (the server's shutdown
        then closes the pool and waits for it).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._proxy.close_sync(timeout)
            return
        task = loop.create_task(self._proxy.close(timeout))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _headers_size(headers: list[Header]) -> int:
    return sum(len(name.encode()) + len(value or b"") + 8 for name, value in headers)


def _cut(topic: str, record: _Record, limit: int) -> tuple[ProducerMessage, str]:
    """A copy of ``record`` within ``limit`` bytes, and what was cut.

    Our headers stay whole; the key may take a quarter of the room left, the record's own
    headers half of what remains (or are left out), the value the rest.
    """
    key, value, own, ours = record
    room = limit - _RECORD_OVERHEAD - _headers_size(ours) - 200  # 200: the note itself
    cut_key = key if key is None or len(key) <= room // 4 else key[: max(0, room // 4)]
    room -= len(cut_key or b"")
    cut_own = own if _headers_size(own) <= room // 2 else []
    room -= _headers_size(cut_own)
    cut_value = value if value is None or len(value) <= room else value[: max(0, room)]
    parts = []
    if cut_key is not key:
        parts.append(f"key {len(key or b'')}->{len(cut_key or b'')} bytes")
    if cut_value is not value:
        parts.append(f"value {len(value or b'')}->{len(cut_value or b'')} bytes")
    if cut_own is not own:
        parts.append(f"{len(own)} header(s) left out")
    note = f"{', '.join(parts) or 'nothing cut'}; limit {limit} bytes"
    headers = [*cut_own, *ours, (DEAD_LETTER_HEADER_TRUNCATED, note.encode())]
    return ProducerMessage(topic, cut_value, cut_key, headers), note


def _origin(ours: list[Header]) -> str:
    found = dict(ours)
    return "{}[{}]@{}".format(
        *(
            (found.get(name) or b"").decode("utf-8", "replace")
            for name in (
                DEAD_LETTER_HEADER_TOPIC,
                DEAD_LETTER_HEADER_PARTITION,
                DEAD_LETTER_HEADER_OFFSET,
            )
        )
    )
