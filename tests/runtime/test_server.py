"""Server lifecycle with an in-test transport: order, close, bounds, failures, signals."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import get_global_config, parse_config, set_global_config
from trpc_kafka._runtime import filters as filters_mod
from trpc_kafka._runtime import server as server_mod
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.errors import RET_SERVER_SYSTEM_ERR, TrpcError, framework_error
from trpc_kafka._runtime.filters import Handler, register_filter
from trpc_kafka._runtime.server import Server, Service, new_server, register_transport

DATA = Path(__file__).parent / "data"


@dataclass
class Plan:
    """How the fake transport of one service behaves."""

    start_error: BaseException | None = None
    start_hang: bool = False
    stop_hang: bool = False
    stop_error: BaseException | None = None
    fail_after_start: BaseException | None = None
    fail_from_thread: bool = False
    on_start: Callable[[], object] | None = None


@dataclass
class Fake:
    log: list[str] = field(default_factory=list)
    plans: dict[str, Plan] = field(default_factory=dict)
    stop_timeouts: dict[str, float] = field(default_factory=dict)
    transports: dict[str, FakeTransport] = field(default_factory=dict)

    def factory(self, service: Service) -> FakeTransport:
        t = FakeTransport(self, service, self.plans.get(service.name, Plan()))
        self.transports[service.name] = t
        return t


class FakeTransport:
    def __init__(self, fake: Fake, service: Service, plan: Plan) -> None:
        self.fake = fake
        self.service = service
        self.plan = plan
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        name = self.service.name
        self.fake.log.append(f"start {name}")
        if self.plan.on_start is not None:
            self.plan.on_start()
        if self.plan.start_hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.fake.log.append(f"start-cancelled {name}")
                raise
        if self.plan.start_error is not None:
            raise self.plan.start_error
        if self.plan.fail_after_start is not None:
            self.task = asyncio.create_task(self._run(self.plan.fail_after_start))

    async def _run(self, exc: BaseException) -> None:
        # The transport's own background task dies and reports it.
        await asyncio.sleep(0.01)
        if self.plan.fail_from_thread:
            threading.Thread(target=self.service.fail, args=(exc,)).start()
        else:
            self.service.fail(exc)

    async def stop(self, timeout: float) -> None:
        name = self.service.name
        self.fake.log.append(f"stop {name}")
        self.fake.stop_timeouts[name] = timeout
        await asyncio.sleep(0)  # yield: the stops of all services overlap
        if self.plan.stop_hang:
            await asyncio.Event().wait()
        if self.plan.stop_error is not None:
            raise self.plan.stop_error
        self.fake.log.append(f"stopped {name}")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Fake:
    f = Fake()
    monkeypatch.setitem(server_mod._transports, "fake", f.factory)
    return f


@pytest.fixture(autouse=True)
def restore_globals() -> Iterator[None]:
    saved_filters = dict(filters_mod._registry)
    saved_config = get_global_config()
    yield
    filters_mod._registry.clear()
    filters_mod._registry.update(saved_filters)
    set_global_config(saved_config)


def make_server(*names: str, max_close_wait: float = 2.0) -> Server:
    server = Server(max_close_wait=max_close_wait)
    for name in names:
        server.add_service(Service(name, protocol="fake"))
    return server


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_start_in_order_stop_in_reverse_then_hooks(fake: Fake) -> None:
    server = make_server("a", "b", "c", max_close_wait=3.0)

    async def hook() -> None:
        fake.log.append("hook")

    server.add_shutdown_hook(hook)
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start c" in fake.log)
    assert not serving.done()
    assert all(s.transport is fake.transports[n] for n, s in server.services.items())
    await server.close()  # from another task
    assert serving.done()
    await serving  # returned normally
    assert fake.log == [
        "start a",
        "start b",
        "start c",
        "stop c",
        "stop b",
        "stop a",
        "stopped c",
        "stopped b",
        "stopped a",
        "hook",
    ]
    assert fake.stop_timeouts == {"a": 3.0, "b": 3.0, "c": 3.0}


async def test_global_shutdown_hooks_run_after_the_server_hooks(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_mod, "_global_hooks", [])
    server = make_server("a")
    server.add_shutdown_hook(lambda: fake.log.append("own hook"))

    async def global_hook() -> None:
        fake.log.append("global hook")

    server_mod.register_global_shutdown_hook(global_hook)
    server_mod.register_global_shutdown_hook(global_hook)  # once only
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start a" in fake.log)
    await server.close()
    await serving
    assert fake.log[-2:] == ["own hook", "global hook"]
    assert fake.log.count("global hook") == 1


async def test_close_is_idempotent_and_concurrent(fake: Fake) -> None:
    server = make_server("a")
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start a" in fake.log)
    await asyncio.gather(server.close(), server.close())
    await server.close()
    await serving
    assert fake.log.count("stop a") == 1


async def test_close_while_starting_cancels_the_start(fake: Fake) -> None:
    fake.plans["b"] = Plan(start_hang=True)
    server = make_server("a", "b", "c")
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start b" in fake.log)
    await server.close()
    await serving
    # b's start is cancelled (it cleans up itself, so no stop), c never starts.
    assert fake.log == ["start a", "start b", "start-cancelled b", "stop a", "stopped a"]


async def test_close_before_serve(fake: Fake) -> None:
    server = make_server("a")
    hooks: list[str] = []
    server.add_shutdown_hook(lambda: hooks.append("sync hook"))
    serving = asyncio.create_task(server.serve())  # scheduled, not yet running
    await server.close()
    await serving
    assert fake.log == []
    assert hooks == ["sync hook"]
    await server.serve()  # returns at once after close
    assert fake.log == []


async def test_bounded_close_when_a_stop_hangs(
    fake: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    fake.plans["b"] = Plan(stop_hang=True)
    server = make_server("a", "b", "c", max_close_wait=0.3)
    hooks: list[str] = []
    server.add_shutdown_hook(lambda: hooks.append("hook"))
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start c" in fake.log)
    begin = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="trpc_kafka.server"):
        await server.close()
    elapsed = time.monotonic() - begin
    await serving
    # Bounded by max_close_wait, not by the hanging stop (a margin for a busy machine).
    assert 0.3 <= elapsed < 3.0
    assert "stopped a" in fake.log and "stopped c" in fake.log
    assert "stopped b" not in fake.log
    assert hooks == ["hook"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("did not stop within" in m and ": b" in m for m in warnings), warnings


async def test_failing_start_stops_started_ones_and_raises(fake: Fake) -> None:
    refusal = framework_error(RET_SERVER_SYSTEM_ERR, "broker unreachable")
    fake.plans["b"] = Plan(start_error=refusal)
    server = make_server("a", "b", "c")
    hooks: list[str] = []
    server.add_shutdown_hook(lambda: hooks.append("hook"))
    with pytest.raises(TrpcError) as info:
        await server.serve()
    assert info.value is refusal
    assert fake.log == ["start a", "start b", "stop a", "stopped a"]
    assert hooks == ["hook"]
    await server.close()  # after serve: returns at once


async def test_config_error_at_start_is_raised_as_is(fake: Fake) -> None:
    fake.plans["a"] = Plan(start_error=ConfigError("no handler registered", key="handler"))
    server = make_server("a")
    with pytest.raises(ConfigError, match="no handler registered"):
        await server.serve()


async def test_runtime_failure_shuts_down_and_reraises(fake: Fake) -> None:
    crash = RuntimeError("consumer task died")
    fake.plans["b"] = Plan(fail_after_start=crash)
    server = make_server("a", "b")
    with pytest.raises(RuntimeError) as info:
        await asyncio.wait_for(server.serve(), 5)
    assert info.value is crash
    assert sorted(x for x in fake.log if x.startswith("stopped")) == ["stopped a", "stopped b"]
    assert server.services["b"].failure is crash


async def test_runtime_failure_reported_from_another_thread(fake: Fake) -> None:
    crash = OSError("librdkafka thread says no")
    fake.plans["a"] = Plan(fail_after_start=crash, fail_from_thread=True)
    server = make_server("a")
    with pytest.raises(OSError, match="librdkafka thread says no"):
        await asyncio.wait_for(server.serve(), 5)
    assert fake.log[-1] == "stopped a"


async def test_stop_errors_and_hook_errors_are_logged_not_raised(
    fake: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    fake.plans["a"] = Plan(stop_error=ValueError("flush failed"))
    server = make_server("a", "b", max_close_wait=0.2)
    ran: list[str] = []

    def bad_hook() -> None:
        raise KeyError("boom")

    async def slow_hook() -> None:
        await asyncio.sleep(10)

    async def good_hook() -> None:
        ran.append("good")

    for h in (bad_hook, slow_hook, good_hook):
        server.add_shutdown_hook(h)
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start b" in fake.log)
    begin = time.monotonic()
    await server.close()
    await serving
    assert time.monotonic() - begin < 1.5  # the slow hook is bounded
    assert ran == ["good"]
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "service a: stop failed" in messages
    assert "bad_hook failed" in messages
    assert "slow_hook did not finish" in messages


async def test_serve_cancelled_still_stops_services(fake: Fake) -> None:
    server = make_server("a")
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start a" in fake.log)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert fake.log == ["start a", "stop a", "stopped a"]


async def test_serve_cancelled_as_a_start_finishes_still_stops_it(fake: Fake) -> None:
    # The cancel lands while serve() waits and the start completes in the same loop step: the
    # service started and must be stopped, though serve() never saw the start's result.
    server = make_server("a")
    serving: asyncio.Task[None] | None = None
    fake.plans["a"] = Plan(on_start=lambda: serving and serving.cancel())
    serving = asyncio.create_task(server.serve())
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert fake.log == ["start a", "stop a", "stopped a"]


async def test_serve_twice_is_an_error(fake: Fake) -> None:
    server = make_server("a")
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start a" in fake.log)
    with pytest.raises(RuntimeError, match="already called"):
        await server.serve()
    with pytest.raises(RuntimeError, match="before serve"):
        server.add_service(Service("late", protocol="fake"))
    await server.close()
    await serving


async def test_unknown_protocol_from_file(fake: Fake) -> None:
    cfg = parse_config(
        textwrap.dedent(
            """
            server:
              service:
                - name: trpc.app.server.ok
                  protocol: fake
                - name: trpc.app.server.greeter
                  protocol: trpc
            """
        ),
        file="trpc_go.yaml",
    )
    server = Server(cfg)
    with pytest.raises(ConfigError) as info:
        await server.serve()
    err = info.value
    assert "'trpc.app.server.greeter'" in str(err)
    assert "unknown protocol 'trpc'" in str(err)
    assert "registered protocols:" in str(err) and "fake" in str(err)
    assert (err.file, err.line, err.key) == ("trpc_go.yaml", 6, "server.service[1].protocol")
    assert fake.log == []  # every transport is built before any starts


async def test_missing_protocol(fake: Fake) -> None:
    server = Server()
    server.add_service(Service("a", protocol=""))
    with pytest.raises(ConfigError, match="'a': no protocol set; set protocol: kafka"):
        await server.serve()


def test_unknown_service_name_lists_known_ones() -> None:
    server = make_server("trpc.app.server.one", "trpc.app.server.two")
    assert server.service("trpc.app.server.two").name == "trpc.app.server.two"
    with pytest.raises(ConfigError) as info:
        server.service("trpc.app.server.three")
    assert "no service named 'trpc.app.server.three'" in str(info.value)
    assert "known services: trpc.app.server.one, trpc.app.server.two" in str(info.value)
    with pytest.raises(ConfigError, match=r"duplicate service name 'trpc\.app\.server\.one'"):
        server.add_service(Service("trpc.app.server.one"))


def test_services_from_file_with_filters() -> None:
    async def f_server(ctx: Context, req: Any, next: Handler) -> Any:
        return await next(ctx, req)

    async def f_own(ctx: Context, req: Any, next: Handler) -> Any:
        return await next(ctx, req)

    register_filter("srv", server=f_server)
    register_filter("own", server=f_own)
    cfg = parse_config(
        textwrap.dedent(
            """
            server:
              filter: [srv]
              max_close_wait_time: 1500
              service:
                - name: a
                  protocol: kafka
                  address: h:9092?topics=t&group=g&mechanism=PLAIN&user=u&password=hunter2
                  timeout: 1500
                  filter: [own, srv]
                - name: b
                  protocol: kafka
                  address: h:9092?topics=t&group=g
            """
        )
    )
    server = Server(cfg)
    assert server.max_close_wait == 1.5
    a, b = server.service("a"), server.service("b")
    assert a.filters == [f_server, f_own]
    assert b.filters == [f_server]
    assert (a.timeout, b.timeout) == (1.5, None)
    assert a.config is cfg.server.services[0] and a.server is server and a.handler is None
    assert "hunter2" not in repr(a)

    async def extra(ctx: Context, req: Any, next: Handler) -> Any:
        return await next(ctx, req)

    a.add_filter(extra)
    assert a.filters == [f_server, f_own, extra]


def test_unknown_filter_in_file_names_file_and_line() -> None:
    cfg = parse_config(
        "server:\n  service:\n    - name: a\n      protocol: kafka\n      filter: [nope]\n"
        "      address: h:9092?topics=t&group=g\n",
        file="conf.yaml",
    )
    with pytest.raises(ConfigError) as info:
        Server(cfg)
    err = info.value
    assert (err.file, err.line, err.key, err.value) == (
        "conf.yaml",
        3,
        "server.service[0].filter",
        "nope",
    )
    assert "unknown server filter 'nope'" in str(err)


def test_service_in_code() -> None:
    async def f(ctx: Context, req: Any, next: Handler) -> Any:
        return await next(ctx, req)

    register_filter("named", server=f)
    s = Service("trpc.app.server.c", address="h:9092?topics=t", timeout=0.25, filters=["named", f])
    assert (s.protocol, s.address, s.timeout) == ("kafka", "h:9092?topics=t", 0.25)
    assert s.config.timeout_ms == 250
    assert s.config.filters == ("named",)
    assert s.filters == [f, f]
    assert Service("x", timeout=0).timeout is None
    with pytest.raises(ConfigError, match="timeout must be seconds"):
        Service("x", timeout=-1)
    with pytest.raises(ConfigError, match="unknown server filter 'missing'"):
        Service("x", filters=["missing"])


async def test_add_filter_after_serve_started_is_refused(fake: Fake) -> None:
    server = make_server("a")
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start a" in fake.log)
    with pytest.raises(RuntimeError, match="add filters before serve"):
        server.service("a").add_filter(lambda ctx, req, next: next(ctx, req))
    await server.close()
    await serving


async def test_signal_handlers_restored_after_serve(fake: Fake) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = make_server("a")
    serving = asyncio.create_task(server.serve())
    await until(lambda: "start a" in fake.log)
    await server.close()
    await serving
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_new_server_loads_file_and_sets_global_config(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trpc_python.yaml"
    path.write_text(
        "server:\n  service:\n    - name: a\n      protocol: fake\n"
        "client:\n  service:\n    - name: p\n      target: kafka://h:9092\n"
    )
    server = new_server(path)
    assert list(server.services) == ["a"]
    assert server.config is not None and get_global_config() is server.config
    assert server.config.client_service("p") is not None

    set_global_config(None)
    monkeypatch.setenv("TRPC_KAFKA_CONFIG", str(path))
    assert list(new_server().services) == ["a"]

    monkeypatch.delenv("TRPC_KAFKA_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert list(new_server().services) == ["a"]  # ./trpc_python.yaml
    path.unlink()
    with pytest.raises(ConfigError, match="config file not found"):
        new_server()


def test_register_transport_rejects_empty_name() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        register_transport("", lambda s: FakeTransport(Fake(), s, Plan()))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_a_real_process_gracefully(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(DATA / "serve_until_signal.py"),
            str(DATA / "signal_server.yaml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while "ready" not in lines:
            line = proc.stdout.readline()
            assert line, f"exited before ready: {lines} {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.strip())
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += out.splitlines()
    assert proc.returncode == 0, err
    assert lines == [
        "started trpc.test.signals.first",
        "started trpc.test.signals.second",
        "ready",
        "stopped trpc.test.signals.second within 5.0",
        "stopped trpc.test.signals.first within 5.0",
        "hook ran",
        "serve returned",
    ], err
    assert f"{sig.name} received, stopping gracefully" in err
