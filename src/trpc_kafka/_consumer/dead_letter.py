"""``deadLetterTopic=``: where a message goes once its handler retries are exhausted.

Beyond the reference. The message is produced to the dead letter topic with its key, value and
headers, plus headers naming where it came from and why it failed; the consumer commits it only
after the broker acknowledged that copy. The producer is a librdkafka Producer built from the
same address (``producer_settings``), created at the first dead letter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import KafkaError

from trpc_kafka import _sdk
from trpc_kafka._config.address import KafkaConfig
from trpc_kafka._config.rdkafka import producer_settings
from trpc_kafka._consumer.message import Header, WireMessage
from trpc_kafka._consumer.partition import DeadLetterSink
from trpc_kafka._kafka_errors import to_trpc_error
from trpc_kafka._rdkafka_log import rdkafka_log
from trpc_kafka._runtime import errors as codes
from trpc_kafka._runtime.errors import framework_error

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

# How long one dead letter may take to be acknowledged before the send counts as failed.
_ACK_TIMEOUT: Final = 30.0


class DeadLetterSender(DeadLetterSink):
    __slots__ = ("_cfg", "_executor", "_lock", "_producer", "_service", "topic")

    def __init__(
        self,
        cfg: KafkaConfig,
        service: str,
        executor: Callable[[], concurrent.futures.Executor],
    ) -> None:
        self._cfg = cfg
        self._service = service
        self.topic = cfg.dead_letter_topic
        self._executor = executor
        self._producer: Any = None
        self._lock = threading.Lock()

    async def send(self, msgs: list[WireMessage], error: BaseException, attempts: int) -> None:
        loop = asyncio.get_running_loop()
        text = (str(error) or type(error).__name__).encode("utf-8", "replace")
        records = [
            (msg.key, msg.value, [*msg.headers, *self._headers(msg, text, attempts)])
            for msg in msgs
        ]
        await loop.run_in_executor(self._executor(), self._send_blocking, records)

    def _headers(self, msg: WireMessage, error: bytes, attempts: int) -> list[Header]:
        return [
            (DEAD_LETTER_HEADER_ERROR, error),
            (DEAD_LETTER_HEADER_TOPIC, msg.topic.encode()),
            (DEAD_LETTER_HEADER_PARTITION, str(msg.partition).encode()),
            (DEAD_LETTER_HEADER_OFFSET, str(msg.offset).encode()),
            (DEAD_LETTER_HEADER_ATTEMPTS, str(attempts).encode()),
            (DEAD_LETTER_HEADER_SERVICE, self._service.encode()),
        ]

    def _get_producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                settings = producer_settings(self._cfg)
                settings["logger"] = rdkafka_log("trpc_kafka.consumer.rdkafka")
                self._producer = _sdk.new_producer(settings)
            return self._producer

    def _send_blocking(
        self, records: list[tuple[bytes | None, bytes | None, list[Header]]]
    ) -> None:
        producer = self._get_producer()
        errors: list[KafkaError] = []
        acked = 0

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            nonlocal acked
            if err is not None:
                errors.append(err)
            else:
                acked += 1

        for key, value, headers in records:
            while True:
                try:
                    producer.produce(
                        self.topic, value, key, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:  # local queue full: let it drain
                    producer.poll(0.1)
        producer.flush(_ACK_TIMEOUT)
        if errors:
            raise to_trpc_error(errors[0], "dead letter send", self.topic)
        if acked < len(records):
            raise framework_error(
                codes.RET_CLIENT_TIMEOUT_ERR,
                f"kafka dead letter send: not acknowledged within {_ACK_TIMEOUT:g}s "
                f"(topic {self.topic!r})",
            )

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for dead letters still queued."""
        producer = self._producer
        if producer is not None:
            left = producer.flush(max(timeout, 0.0))
            if left:
                logger.error(
                    "kafka dead letter producer: %d message(s) to %s not delivered at close",
                    left,
                    self.topic,
                )
