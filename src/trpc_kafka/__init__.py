"""trpc-kafka: the Kafka plugin of the tRPC ecosystem for Python, on confluent-kafka.

Producer client proxies (``new_client_proxy``) and consumer services (``protocol: kafka`` in the
YAML file), configured by the same address strings as the tRPC-Go kafka plugin.

This module is also where the layers are wired together, explicitly and once: a ``Server``'s
shutdown flushes the pooled producers, and assigning ``trpc_kafka.async_producer_*_callback``
reaches the producers' delivery path (:class:`_Package`).
"""

import sys
import types
import warnings
from typing import Any

from trpc_kafka._config.address import (
    KafkaConfig,
    get_default_config,
    parse_address,
    register_addr_config,
    register_discovery,
)
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import FileConfig, load_config, load_global_config
from trpc_kafka._consumer import (
    DEAD_LETTER_HEADER_ATTEMPTS,
    DEAD_LETTER_HEADER_ERROR,
    DEAD_LETTER_HEADER_OFFSET,
    DEAD_LETTER_HEADER_PARTITION,
    DEAD_LETTER_HEADER_SERVICE,
    DEAD_LETTER_HEADER_TOPIC,
    BatchConsumerHandle,
    ClaimView,
    ConsumerHandle,
    ConsumerMessage,
    ContinueWithoutCommit,
    GroupSessionView,
    KafkaConsumer,
    RawKafkaContext,
    get_raw_kafka_context,
    register_batch_handler_service,
    register_kafka_consumer_service,
    register_kafka_handler_service,
)
from trpc_kafka._producer import (
    NO_OFFSET,
    CanceledError,
    ClientProxy,
    ErrorCallback,
    Headers,
    Payload,
    ProducerMessage,
    SuccessCallback,
    async_producer_error_callback,
    async_producer_success_callback,
    close_all_producers,
    close_all_producers_sync,
    flush_on_signals,
    new_client_proxy,
)
from trpc_kafka._producer.callbacks import PACKAGE_NAMES as _CALLBACK_NAMES
from trpc_kafka._producer.callbacks import package_callbacks as _package_callbacks
from trpc_kafka._runtime import context as _context
from trpc_kafka._runtime import errors
from trpc_kafka._runtime.context import Context, current_context, use_context
from trpc_kafka._runtime.errors import ErrorType, TrpcError
from trpc_kafka._runtime.filters import Filter, Handler, chain, register_filter
from trpc_kafka._runtime.server import (
    Server,
    Service,
    ServiceTransport,
    new_server,
    register_global_shutdown_hook,
    register_transport,
)

# A server's shutdown flushes every pooled producer (queued async sends included).
register_global_shutdown_hook(close_all_producers)


def get_context() -> Context:
    """Deprecated: use ``current_context()`` (None outside a call) or the handler's ``ctx``.

    One way to get the context: handlers and filters receive it as ``ctx`` (as in tRPC-Go);
    elsewhere ``current_context()`` returns it, ``use_context(ctx)`` sets it for a block.
    """
    warnings.warn(
        "trpc_kafka.get_context() is deprecated: use trpc_kafka.current_context() "
        "(None outside a call; `current_context() or Context()` for the old behaviour)",
        DeprecationWarning,
        stacklevel=2,
    )
    return _context.get_context()


class _Package(types.ModuleType):
    """The module class of ``trpc_kafka``: assigning (or deleting) one of the async-send
    callbacks also sets it where the producers' delivery path reads it, so nothing below the
    package looks the package up."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in _CALLBACK_NAMES:
            _package_callbacks.set(name, value)

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        if name in _CALLBACK_NAMES:
            _package_callbacks.set(name, None)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"

__all__ = [
    "DEAD_LETTER_HEADER_ATTEMPTS",
    "DEAD_LETTER_HEADER_ERROR",
    "DEAD_LETTER_HEADER_OFFSET",
    "DEAD_LETTER_HEADER_PARTITION",
    "DEAD_LETTER_HEADER_SERVICE",
    "DEAD_LETTER_HEADER_TOPIC",
    "NO_OFFSET",
    "BatchConsumerHandle",
    "CanceledError",
    "ClaimView",
    "ClientProxy",
    "ConfigError",
    "ConsumerHandle",
    "ConsumerMessage",
    "Context",
    "ContinueWithoutCommit",
    "ErrorCallback",
    "ErrorType",
    "FileConfig",
    "Filter",
    "GroupSessionView",
    "Handler",
    "Headers",
    "KafkaConfig",
    "KafkaConsumer",
    "Payload",
    "ProducerMessage",
    "RawKafkaContext",
    "Server",
    "Service",
    "ServiceTransport",
    "SuccessCallback",
    "TrpcError",
    "__version__",
    "async_producer_error_callback",
    "async_producer_success_callback",
    "chain",
    "close_all_producers",
    "close_all_producers_sync",
    "current_context",
    "errors",
    "flush_on_signals",
    "get_context",
    "get_default_config",
    "get_raw_kafka_context",
    "load_config",
    "load_global_config",
    "new_client_proxy",
    "new_server",
    "parse_address",
    "register_addr_config",
    "register_batch_handler_service",
    "register_discovery",
    "register_filter",
    "register_kafka_consumer_service",
    "register_kafka_handler_service",
    "register_transport",
    "use_context",
]
