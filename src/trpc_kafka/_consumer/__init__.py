"""Consumer services: the ``kafka`` server transport and the handler registrations.

Importing this package registers the transport for services with ``protocol: kafka``.
"""

from trpc_kafka._consumer.dead_letter import (
    DEAD_LETTER_HEADER_ATTEMPTS,
    DEAD_LETTER_HEADER_ERROR,
    DEAD_LETTER_HEADER_OFFSET,
    DEAD_LETTER_HEADER_PARTITION,
    DEAD_LETTER_HEADER_SERVICE,
    DEAD_LETTER_HEADER_TOPIC,
)
from trpc_kafka._consumer.message import ConsumerMessage, ContinueWithoutCommit
from trpc_kafka._consumer.raw import (
    ClaimView,
    GroupSessionView,
    RawKafkaContext,
    get_raw_kafka_context,
)
from trpc_kafka._consumer.registration import (
    BatchConsumerHandle,
    ConsumerHandle,
    KafkaConsumer,
    register_batch_handler_service,
    register_kafka_consumer_service,
    register_kafka_handler_service,
)
from trpc_kafka._consumer.transport import KafkaServiceTransport
from trpc_kafka._runtime.server import register_transport

register_transport("kafka", KafkaServiceTransport)

__all__ = [
    "DEAD_LETTER_HEADER_ATTEMPTS",
    "DEAD_LETTER_HEADER_ERROR",
    "DEAD_LETTER_HEADER_OFFSET",
    "DEAD_LETTER_HEADER_PARTITION",
    "DEAD_LETTER_HEADER_SERVICE",
    "DEAD_LETTER_HEADER_TOPIC",
    "BatchConsumerHandle",
    "ClaimView",
    "ConsumerHandle",
    "ConsumerMessage",
    "ContinueWithoutCommit",
    "GroupSessionView",
    "KafkaConsumer",
    "RawKafkaContext",
    "get_raw_kafka_context",
    "register_batch_handler_service",
    "register_kafka_consumer_service",
    "register_kafka_handler_service",
]
