"""Consumer services: the ``kafka`` server transport and the handler registrations.

Importing this package registers the transport for services with ``protocol: kafka``.
"""

from trpc_kafka._consumer.dead_letter import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_SERVICE,
    HEADER_TOPIC,
)
from trpc_kafka._consumer.message import ConsumerMessage, ContinueWithoutCommit
from trpc_kafka._consumer.raw import (
    ClaimView,
    GroupSessionView,
    RawKafkaContext,
    get_raw_kafka_context,
)
from trpc_kafka._consumer.registration import (
    BatchHandle,
    Handle,
    KafkaConsumer,
    register_batch_handler_service,
    register_kafka_consumer_service,
    register_kafka_handler_service,
)
from trpc_kafka._consumer.transport import KafkaServiceTransport
from trpc_kafka._runtime.server import register_transport

register_transport("kafka", KafkaServiceTransport)

__all__ = [
    "HEADER_ATTEMPTS",
    "HEADER_ERROR",
    "HEADER_OFFSET",
    "HEADER_PARTITION",
    "HEADER_SERVICE",
    "HEADER_TOPIC",
    "BatchHandle",
    "ClaimView",
    "ConsumerMessage",
    "ContinueWithoutCommit",
    "GroupSessionView",
    "Handle",
    "KafkaConsumer",
    "RawKafkaContext",
    "get_raw_kafka_context",
    "register_batch_handler_service",
    "register_kafka_consumer_service",
    "register_kafka_handler_service",
]
