"""``trpc-kafka run MODULE:ATTR``: serve a YAML file's consumer services, in N processes.

``ATTR`` names one of:

- a :class:`Server` the module built itself (``server = trpc_kafka.new_server(...)``, handlers
  registered at import);
- a function taking the Server: the CLI builds it from ``-c FILE`` (or ``$TRPC_KAFKA_CONFIG``,
  else ``./trpc_python.yaml``) and the function registers the handlers (``def setup(server)``);
- a function taking nothing that returns the Server (a factory).

With ``--workers N`` (N > 1) a supervisor starts N worker processes of the same services, hence
members of the same consumer groups: one Python process per core is how a service uses more
than one core. The workers start together, but each gets its share of the partitions only
through the group's rebalance: with the default strategy (cooperative-sticky) two rounds, each
seen at a heartbeat (3 s), so some 6 s after the first worker took every partition, unless the
broker delays a new group's first assignment (group.initial.rebalance.delay.ms, by default 3 s;
0 on ``trpc-kafka broker start``). The supervisor restarts a worker that dies (with a growing
pause, and gives up on a worker that keeps dying at start), and on SIGTERM or SIGINT asks every
worker to stop gracefully (each finishes its handlers, commits and leaves its groups) and waits
for them.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, Final

from trpc_kafka._config.file import config_path, load_config
from trpc_kafka._runtime.server import Server, new_server
from trpc_kafka._tools.clients import CliError

WORKER_ENV: Final = "TRPC_KAFKA_WORKER"
"""Set in each worker process to its number (0 .. N-1)."""
RESTART_PAUSES: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds before restarting a worker that died, growing while it keeps dying."""
HEALTHY_AFTER: Final = 60.0
"""A worker that ran this long is healthy again: its next restart pause starts over."""
EARLY_DEATHS: Final = 5
"""A worker that died this many times in a row within EARLY seconds of its start is given up."""
EARLY: Final = 10.0
STOP_GRACE_EXTRA: Final = 10.0
"""Seconds the supervisor waits beyond a worker's own close bound before killing it."""


def add_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="serve the consumer services of a YAML file with a module's handlers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("app", metavar="MODULE:ATTR", help="e.g. myservice.app:setup")
    run.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="the YAML file (default: $TRPC_KAFKA_CONFIG, else ./trpc_python.yaml)",
    )
    run.add_argument("-w", "--workers", type=int, default=1, help="worker processes (default: 1)")
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="what the workers log to stderr (default: INFO: start, assignments, revokes, stop)",
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise CliError(f"--workers {args.workers}: must be at least 1")
    module, attr = _split(args.app)
    worker = os.environ.get(WORKER_ENV)
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s {'[worker ' + worker + '] ' if worker else ''}"
        f"%(name)s: %(message)s",
    )
    if args.workers == 1:
        server = load_server(module, attr, args.config)
        server.serve_forever()
        return 0
    return Supervisor(args.app, args.config, args.workers, args.log_level).run()


def _split(app: str) -> tuple[str, str]:
    module, sep, attr = app.partition(":")
    if not sep or not module or not attr:
        raise CliError(f"{app!r}: expected MODULE:ATTR, e.g. myservice.app:setup")
    return module, attr


def load_server(module_name: str, attr: str, config: str | None) -> Server:
    """Import ``module_name`` (from the current directory too) and get its Server."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(
                f"cannot import {module_name!r}: no module {exc.name!r} (run from the "
                f"directory that holds it, or set PYTHONPATH)"
            ) from None
        raise
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, Server):
        return target
    if not callable(target):
        raise CliError(
            f"{module_name}:{attr} is a {type(target).__name__}: expected a Server, a function "
            f"taking the Server, or a function returning one"
        )
    try:
        takes_server = bool(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        takes_server = True
    if takes_server:
        server = new_server(config)
        result = target(server)
        return result if isinstance(result, Server) else server
    result = target()
    if not isinstance(result, Server):
        raise CliError(f"{module_name}:{attr}() returned {type(result).__name__}, not a Server")
    return result


class _Worker:
    def __init__(self, number: int) -> None:
        self.number = number
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts = 0
        self.early_deaths = 0
        self.restart_at: float | None = None


class Supervisor:
    """Owns the worker processes: starts, restarts and stops them."""

    def __init__(self, app: str, config: str | None, workers: int, log_level: str) -> None:
        self.app = app
        self.log_level = log_level
        self.config = config
        self.workers = [_Worker(i) for i in range(workers)]
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for worker in self.workers:
                self._start(worker)
            _say(f"supervisor pid {os.getpid()}: {len(self.workers)} workers of {self.app}")
            while not self.stopping:
                self._watch()
                time.sleep(0.2)
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            _say(f"{signal.Signals(signum).name} received: stopping the workers gracefully")
        self.stopping = True

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "trpc_kafka._tools.cli", "run", self.app]
        command += ["--log-level", self.log_level]
        if self.config:
            command += ["-c", str(Path(self.config).resolve())]
        return command

    def _start(self, worker: _Worker) -> None:
        env = {**os.environ, WORKER_ENV: str(worker.number)}
        # Own process group: a terminal's Ctrl-C reaches the supervisor, which then stops the
        # workers in order, rather than every process at once.
        worker.process = subprocess.Popen(self._command(), env=env, start_new_session=True)
        worker.started = time.monotonic()
        worker.restart_at = None

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    worker.restarts += 1
                    self._start(worker)
                continue
            assert worker.process is not None
            code = worker.process.poll()
            if code is None:
                continue
            lived = now - worker.started
            worker.early_deaths = worker.early_deaths + 1 if lived < EARLY else 0
            if worker.early_deaths >= EARLY_DEATHS:
                _say(
                    f"worker {worker.number} died {EARLY_DEATHS} times within {EARLY:g} s of "
                    f"starting (last status {code}); giving up: see its output above"
                )
                self.failed = True
                self.stopping = True
                return
            step = 0 if lived >= HEALTHY_AFTER else min(worker.restarts, len(RESTART_PAUSES) - 1)
            pause = RESTART_PAUSES[step]
            _say(
                f"worker {worker.number} (pid {worker.process.pid}) exited with status {code} "
                f"after {lived:.1f} s; restarting in {pause:g} s"
            )
            if lived >= HEALTHY_AFTER:
                worker.restarts = 0
            worker.restart_at = now + pause

    def _stop_all(self) -> None:
        running = [
            w.process for w in self.workers if w.process is not None and w.process.poll() is None
        ]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _close_bound(self.config) + STOP_GRACE_EXTRA
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _say(f"worker pid {process.pid} did not stop in time: killing it")
                process.kill()
                process.wait()
        _say("all workers stopped")


def _close_bound(config: str | None) -> float:
    """The workers' own bound for a graceful stop (``server.max_close_wait_time``)."""
    try:
        return load_config(config_path(config)).server.max_close_wait_ms / 1000
    except Exception:  # a worker fails on it and says why; use the default
        return 10.0


def _say(line: str) -> None:
    sys.stderr.write(f"trpc-kafka: {line}\n")
    sys.stderr.flush()
