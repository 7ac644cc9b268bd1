"""The producer side: client proxies, the producer pool, partitioners, async-send callbacks."""

from trpc_kafka._producer.callbacks import (
    ErrorCallback,
    SuccessCallback,
    async_producer_error_callback,
    async_producer_success_callback,
)
from trpc_kafka._producer.message import Headers, Payload, ProducerMessage
from trpc_kafka._producer.pool import close_all_producers, close_all_producers_sync
from trpc_kafka._producer.proxy import (
    NO_OFFSET,
    CanceledError,
    ClientProxy,
    new_client_proxy,
)
from trpc_kafka._producer.signals import flush_on_signals
from trpc_kafka._runtime.server import register_global_shutdown_hook

# A server's shutdown flushes every pooled producer (queued async sends included).
register_global_shutdown_hook(close_all_producers)

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
