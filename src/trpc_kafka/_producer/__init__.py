"""The producer side: client proxies, the producer pool, partitioners, async-send callbacks."""

from trpc_kafka._producer.callbacks import (
    ErrorCallback,
    SuccessCallback,
    async_producer_error_callback,
    async_producer_success_callback,
)
from trpc_kafka._producer.delivery import NO_OFFSET
from trpc_kafka._producer.errors import CanceledError
from trpc_kafka._producer.factory import new_client_proxy
from trpc_kafka._producer.message import Headers, Payload, ProducerMessage
from trpc_kafka._producer.pool import close_all_producers, close_all_producers_sync
from trpc_kafka._producer.proxy import ClientProxy
from trpc_kafka._producer.signals import flush_on_signals

__all__ = [
    "NO_OFFSET",
    "CanceledError",
    "ClientProxy",
    "ErrorCallback",
    "Headers",
    "Payload",
    "ProducerMessage",
    "SuccessCallback",
    "async_producer_error_callback",
    "async_producer_success_callback",
    "close_all_producers",
    "close_all_producers_sync",
    "flush_on_signals",
    "new_client_proxy",
]
