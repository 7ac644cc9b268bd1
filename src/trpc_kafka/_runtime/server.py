"""Server and services with tRPC-Go's lifecycle; transports plug in by protocol name.

A Server holds named Services (normally one per ``server.service`` entry of the YAML file). Each
service gets its transport from the factory registered for its ``protocol``; ``serve()`` starts
them in order, runs until SIGINT, SIGTERM, ``close()`` or a transport's fatal ``service.fail()``,
then stops them all concurrently within ``max_close_wait`` and runs the shutdown hooks.

Nothing here knows Kafka: the consumer side registers the ``kafka`` transport.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import math
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, Protocol

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import (
    DEFAULT_MAX_CLOSE_WAIT_MS,
    FileConfig,
    ServiceConfig,
    config_path,
    load_config,
    redact,
    set_global_config,
)
from trpc_kafka._runtime.filters import Filter, resolve_filters

logger = logging.getLogger("trpc_kafka.server")

"""Environment variable naming the config file when ``new_server()`` gets no path."""

# After cancelling a task that overran its bound, how long to let it unwind before moving on.
_CANCEL_GRACE: Final = 0.1

_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class ServiceTransport(Protocol):
    """What a protocol plugs into a Service: it receives and dispatches, the server runs it.

    Contract:

    - The factory (``TransportFactory``) only builds the object: no connections, no tasks. All
      transports are built before any starts, so a bad protocol fails before anything runs.
    - ``start()`` acquires resources, launches the transport's own tasks and returns once it is
      serving. It may raise (ConfigError, TrpcError...) to refuse: the server then stops the
      services already started and ``serve()`` raises that error. A transport whose start
      raised or was cancelled (the server closing meanwhile) must release what it acquired;
      ``stop()`` is only called after ``start()`` returned.
    - ``stop(timeout)`` stops gracefully within ``timeout`` seconds; the server cancels it after
      that. It is called once, also after the transport reported ``service.fail()``.
    - A fatal error at runtime (in a task the transport owns) is reported with
      ``service.fail(exc)``: the server shuts down and ``serve()`` raises ``exc``.
    """

    async def start(self) -> None: ...

    async def stop(self, timeout: float) -> None: ...


TransportFactory = Callable[["Service"], ServiceTransport]
"""Builds the transport of one service; registered per protocol with ``register_transport``."""

ShutdownHook = Callable[[], "Awaitable[object] | object"]
"""``async def hook() -> None`` (a plain function works too), run after services stopped."""

_transports: dict[str, TransportFactory] = {}
_transports_lock = threading.Lock()


def register_transport(protocol: str, factory: TransportFactory) -> None:
    """Make services with ``protocol: <protocol>`` use transports built by ``factory``.

    Registering a protocol again replaces its factory.
    """
    if not protocol:
        raise ValueError("protocol name must not be empty")
    with _transports_lock:
        _transports[protocol] = factory


_global_hooks: list[ShutdownHook] = []


def register_global_shutdown_hook(hook: ShutdownHook) -> None:
    """Run ``hook`` when any server shuts down, after its own hooks.

    For process-wide resources owned by another layer (the producer pool flushes here), so the
    runtime needs no import of them.
    """
    if hook not in _global_hooks:
        _global_hooks.append(hook)


def get_transport(protocol: str) -> TransportFactory | None:
    """The factory registered for ``protocol``, or None."""
    return _transports.get(protocol)


def registered_protocols() -> list[str]:
    return sorted(_transports)


class Service:
    """One named service: its config, filters, handler and (while serving) its transport.

    Built from the file by the Server, or in code: ``Service(name, address=..., protocol=...,
    timeout=...)``. The consumer side's ``register_*`` functions set ``handler``; the server
    does not interpret it.
    """

    def __init__(
        self,
        name: str,
        *,
        address: str = "",
        protocol: str = "kafka",
        timeout: float | None = None,
        filters: Sequence[str | Filter] = (),
    ) -> None:
        if not name:
            raise ConfigError("service name must not be empty", key="name", value=name)
        if timeout is not None and not (timeout >= 0 and math.isfinite(timeout)):
            raise ConfigError(
                f"service {name!r}: timeout must be seconds >= 0 or None, got {timeout!r}",
                key="timeout",
                value=str(timeout),
            )
        # 0 means no timeout (as tRPC-Go); a positive fraction of a millisecond rounds up.
        timeout_ms = math.ceil(timeout * 1000) if timeout else None
        config = ServiceConfig(
            name=name,
            address=address,
            protocol=protocol,
            timeout_ms=timeout_ms,
            filters=tuple(f for f in filters if isinstance(f, str)),
        )
        resolved = [
            f
            for item in filters
            for f in (
                resolve_filters([item], "server", where=f"service {name!r}")
                if isinstance(item, str)
                else [item]
            )
        ]
        self._setup(config, resolved, path=None, file=None)

    @classmethod
    def from_config(
        cls, config: ServiceConfig, *, file: str | None = None, path: str | None = None
    ) -> Service:
        """A service from a file entry; ``file`` and ``path`` (``server.service[1]``) locate
        errors."""
        try:
            resolved = resolve_filters(config.filters, "server", where=f"service {config.name!r}")
        except ConfigError as exc:
            raise ConfigError(
                exc.message,
                key=f"{path}.filter" if path else exc.key,
                value=exc.value,
                file=file,
                line=config.line,
            ) from None
        service = cls.__new__(cls)
        service._setup(config, resolved, path=path, file=file)
        return service

    def _setup(
        self, config: ServiceConfig, filters: list[Filter], *, path: str | None, file: str | None
    ) -> None:
        self.name: str = config.name
        self.config: ServiceConfig = config
        self.server: Server | None = None
        self.protocol: str = config.protocol
        self.address: str = config.address
        self.timeout: float | None = None if config.timeout_ms is None else config.timeout_ms / 1000
        self.filters: list[Filter] = filters
        self.handler: Any = None
        self.transport: ServiceTransport | None = None
        self.failure: BaseException | None = None
        self._path = path
        self._file = file

    def add_filter(self, f: Filter) -> None:
        """Append a filter (innermost so far); only before ``serve()`` builds the transport."""
        if self.transport is not None:
            raise RuntimeError(
                f"service {self.name!r}: add filters before serve(); the transport is built"
            )
        self.filters.append(f)

    def fail(self, exc: BaseException) -> None:
        """Report a fatal runtime error of this service's transport; safe from any thread.

        The server shuts down and ``serve()`` raises ``exc`` (the first one reported).
        """
        if self.failure is None:
            self.failure = exc
        if self.server is None:
            logger.error("service %s failed (not in a server): %r", self.name, exc, exc_info=exc)
            return
        self.server._service_failed(self, exc)

    def config_error(self, message: str, *, key: str, value: str | None = None) -> ConfigError:
        """A ConfigError located at this service's entry in the file (for transports too)."""
        return ConfigError(
            f"service {self.name!r}: {message}",
            key=f"{self._path}.{key}" if self._path else key,
            value=value,
            file=self._file,
            line=(self.config.address_line if key == "address" else None) or self.config.line,
        )

    def __repr__(self) -> str:
        return (
            f"Service({self.name!r}, protocol={self.protocol!r}, "
            f"address={redact(self.address)!r}, timeout={self.timeout!r})"
        )


class _State(enum.Enum):
    NEW = "new"
    SERVING = "serving"  # starting, running or stopping: serve() is on the stack
    CLOSING = "closing"  # close() before serve(): running the shutdown hooks
    CLOSED = "closed"


class Server:
    """A set of services served together, like tRPC-Go's ``server.Server``."""

    def __init__(self, config: FileConfig | None = None, *, max_close_wait: float | None = None):
        self.config = config
        self.services: dict[str, Service] = {}
        if max_close_wait is None:
            ms = DEFAULT_MAX_CLOSE_WAIT_MS if config is None else config.server.max_close_wait_ms
            max_close_wait = ms / 1000
        self.max_close_wait: float = max_close_wait
        """Seconds the graceful close waits for services to stop (and for each hook)."""
        self._hooks: list[ShutdownHook] = []
        self._state = _State.NEW
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._serve_task: asyncio.Task[Any] | None = None
        if config is not None:
            for i, sc in enumerate(config.server.services):
                path = f"server.service[{i}]"
                self.add_service(Service.from_config(sc, file=config.path, path=path))

    # -- setup ---------------------------------------------------------------------------------

    def add_service(self, service: Service) -> Service:
        """Add a service built in code; returns it."""
        if self._state is not _State.NEW:
            raise RuntimeError("add services before serve()")
        if service.name in self.services:
            raise ConfigError(
                f"duplicate service name {service.name!r}", key="name", value=service.name
            )
        service.server = self
        self.services[service.name] = service
        return service

    def service(self, name: str) -> Service:
        """The service called ``name``; ConfigError listing the known names when there is none."""
        s = self.services.get(name)
        if s is None:
            known = ", ".join(sorted(self.services)) or "(none)"
            where = f" in {self.config.path}" if self.config and self.config.path else ""
            raise ConfigError(
                f"no service named {name!r}{where}; known services: {known}",
                key="server.service.name",
                value=name,
            )
        return s

    def add_shutdown_hook(self, hook: ShutdownHook) -> None:
        """Run ``hook`` on close, after the services stopped (client proxies flush here).

        Hooks run in the order added, each bounded by ``max_close_wait``; a failing hook is
        logged and does not stop the others.
        """
        self._hooks.append(hook)

    # -- lifecycle -----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Blocking ``serve()`` in a new event loop; returns after SIGINT/SIGTERM or close()."""
        asyncio.run(self.serve())

    async def serve(self) -> None:
        """Start every service, run until a signal, ``close()`` or a service's failure, stop.

        Returns normally after SIGINT, SIGTERM or ``close()``; raises the error of a service that
        refused to start or reported ``fail()``, after stopping the others.
        """
        if self._state is not _State.NEW:
            if self._state in (_State.CLOSING, _State.CLOSED):
                logger.info("serve(): server already closed")
                return
            raise RuntimeError("serve() was already called")
        self._state = _State.SERVING
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._serve_task = asyncio.current_task()
        started: list[Service] = []
        error: BaseException | None = None
        try:
            with self._signal_handlers(self._loop):
                try:
                    await self._start_all(started)
                    if not self._stop.is_set():
                        logger.info(
                            "serving %d service(s): %s",
                            len(started),
                            ", ".join(s.name for s in started) or "(none)",
                        )
                    await self._stop.wait()
                except BaseException as exc:  # start refused, or serve() itself cancelled
                    error = exc
                    self._stop.set()
                await self._shutdown(started)
        finally:
            self._state = _State.CLOSED
            self._done.set()
        logger.info("server stopped")
        if error is not None:
            raise error
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        """Stop serving and wait until services stopped and hooks ran; idempotent.

        Callable from any task, also while ``serve()`` is still starting. Before ``serve()`` it
        runs the shutdown hooks, and a later ``serve()`` returns at once. Do not await it from a
        transport's ``stop()`` or a shutdown hook (they are what it waits for); from a handler
        use ``asyncio.create_task(server.close())``.
        """
        self._stop.set()
        if self._state is _State.NEW:
            self._state = _State.CLOSING
            try:
                await self._run_hooks()
            finally:
                self._state = _State.CLOSED
                self._done.set()
            return
        if asyncio.current_task() is self._serve_task:  # waiting for ourselves would hang
            return
        await self._done.wait()

    @property
    def closing(self) -> bool:
        """Whether a stop was requested (signal, close() or a service failure)."""
        return self._stop.is_set()

    # -- internals -----------------------------------------------------------------------------

    def _transport_for(self, service: Service) -> ServiceTransport:
        protocols = ", ".join(registered_protocols()) or "(none)"
        if not service.protocol:
            raise service.config_error(
                f"no protocol set; set protocol: kafka (registered protocols: {protocols})",
                key="protocol",
            )
        factory = get_transport(service.protocol)
        if factory is None:
            hint = (
                "import trpc_kafka so its consumer side registers the kafka transport"
                if service.protocol == "kafka"
                else "this library serves protocol: kafka; other protocols need "
                "register_transport(protocol, factory)"
            )
            raise service.config_error(
                f"unknown protocol {service.protocol!r}; registered protocols: {protocols}; "
                + hint,
                key="protocol",
                value=service.protocol,
            )
        return factory(service)

    async def _start_all(self, started: list[Service]) -> None:
        # Build every transport first: a bad protocol fails before anything is started.
        for service in self.services.values():
            service.transport = self._transport_for(service)
        for service in self.services.values():
            if self._stop.is_set():
                return
            assert service.transport is not None
            starting = asyncio.ensure_future(service.transport.start())
            stop_wait = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                if not starting.done():
                    # Closing meanwhile (or serve() cancelled): the transport cleans up itself.
                    logger.info("service %s: start cancelled, server closing", service.name)
                    starting.cancel()
                    await asyncio.wait({starting}, timeout=self.max_close_wait)
                    starting.add_done_callback(_retrieve)
                if starting.done() and not starting.cancelled() and starting.exception() is None:
                    # Recorded here, not after the wait: a serve() cancelled just as the start
                    # finished must still stop this service.
                    started.append(service)
            if starting.cancelled():
                if self._stop.is_set():
                    return
                raise RuntimeError(f"service {service.name!r}: start() was cancelled")
            exc = starting.exception()
            if exc is not None:
                logger.error("service %s failed to start: %s", service.name, exc)
                raise exc
            logger.info(
                "service %s started (protocol %s, address %s)",
                service.name,
                service.protocol,
                redact(service.address),
            )

    async def _shutdown(self, started: list[Service]) -> None:
        budget = self.max_close_wait
        if started:
            logger.info("stopping %d service(s), waiting up to %.1fs", len(started), budget)
            # Reverse start order, concurrently: the bound is for all of them together.
            tasks: dict[asyncio.Future[Any], Service] = {}
            for service in reversed(started):
                assert service.transport is not None
                tasks[asyncio.ensure_future(service.transport.stop(budget))] = service
            late = await _bounded(tasks, budget)
            if late:
                logger.warning(
                    "service(s) did not stop within max_close_wait_time %.1fs: %s",
                    budget,
                    ", ".join(tasks[t].name for t in tasks if t in late),
                )
            for task, service in tasks.items():
                if task not in late and not task.cancelled() and task.exception() is not None:
                    logger.error(
                        "service %s: stop failed: %r",
                        service.name,
                        task.exception(),
                        exc_info=task.exception(),
                    )
        await self._run_hooks()

    async def _run_hooks(self) -> None:
        for hook in [*self._hooks, *_global_hooks]:
            name = getattr(hook, "__qualname__", repr(hook))
            try:
                result = hook()
            except Exception as exc:
                logger.error("shutdown hook %s failed: %r", name, exc, exc_info=exc)
                continue
            if not inspect.isawaitable(result):
                continue
            task = asyncio.ensure_future(result)
            if await _bounded([task], self.max_close_wait):
                logger.warning(
                    "shutdown hook %s did not finish within %.1fs", name, self.max_close_wait
                )
            elif not task.cancelled() and task.exception() is not None:
                err = task.exception()
                logger.error("shutdown hook %s failed: %r", name, err, exc_info=err)

    def _service_failed(self, service: Service, exc: BaseException) -> None:
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            try:
                loop.call_soon_threadsafe(self._record_failure, service, exc)
            except RuntimeError:  # the loop is closed: serving is over
                logger.error("service %s failed after the server stopped: %r", service.name, exc)
            return
        self._record_failure(service, exc)

    def _record_failure(self, service: Service, exc: BaseException) -> None:
        if self._state in (_State.CLOSING, _State.CLOSED) or (
            self._stop.is_set() and self._failure is None
        ):
            # Already stopping for another reason: report, but it does not change the outcome.
            logger.error(
                "service %s failed while the server was stopping: %r",
                service.name,
                exc,
                exc_info=exc,
            )
            return
        if self._failure is None:
            self._failure = exc
            logger.error(
                "service %s failed, stopping the server: %r", service.name, exc, exc_info=exc
            )
        else:
            logger.error("service %s failed too: %r", service.name, exc, exc_info=exc)
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set():
            logger.info("%s received, already stopping", name)
        else:
            logger.info("%s received, stopping gracefully", name)
        self._stop.set()

    @contextmanager
    def _signal_handlers(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """SIGINT and SIGTERM close the server while serving; previous handlers come back."""
        installed: list[tuple[signal.Signals, Any]] = []
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                previous = signal.getsignal(sig)
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                except (NotImplementedError, RuntimeError, ValueError) as exc:
                    # Windows' loops, or a loop not in the main thread: close() still works.
                    logger.debug("cannot handle %s: %r", sig.name, exc)
                    continue
                installed.append((sig, previous))
        try:
            yield
        finally:
            for sig, previous in installed:
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)


async def _bounded(
    tasks: Collection[asyncio.Future[Any]], timeout: float
) -> set[asyncio.Future[Any]]:
    """Wait for ``tasks`` up to ``timeout`` seconds; cancel the late ones and return them."""
    if not tasks:
        return set()
    for t in tasks:
        t.add_done_callback(_retrieve)
    pending: set[asyncio.Future[Any]]
    try:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        raise
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=_CANCEL_GRACE)
    return pending


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Marks the exception retrieved: errors are logged by the caller, not by asyncio at exit.
    if not task.cancelled():
        task.exception()


def new_server(path: str | os.PathLike[str] | None = None) -> Server:
    """Load the config file, make it the global config, and build a Server with its services.

    ``path`` defaults to ``$TRPC_KAFKA_CONFIG``, else ``./trpc_python.yaml``.
    """
    config = load_config(config_path(path))
    server = Server(config)
    set_global_config(config)
    return server
