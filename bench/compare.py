"""The benchmark harness: ours against raw confluent-kafka, aiokafka, faststream and Go Sarama.

    .venv/bin/python bench/compare.py            # the full run: 1M records, 3 rounds
    .venv/bin/python bench/compare.py --quick    # a smoke run: 20k records, 1 round
    .venv/bin/python bench/table.py bench/results/compare.json --readme README.md

Without ``--bootstrap`` a 1-node local broker is started in a temporary directory and stopped at
the end. Every variant runs in its own process (``bench/variants.py``, or the Go peer
``bench/go``, built here with ``go build``: skipped with one line where Go is missing), so each
has its own peak RSS and no variant warms another's caches. Rounds are interleaved (each round
runs every variant once, in an order rotated from round to round); the JSON keeps every run and
the medians. Every run is capped at ``--max-seconds`` of work, counted from its first timed send
or first record received (the slow variants: faststream, and whatever is being fixed): its rate
is then the messages it did in that time, marked ``capped``. A consumer with no record 60 s
after its start (``JOIN_ALLOWANCE``) fails.

- producers: 100-byte values, no key, compression none, acks=all, one topic of 6 partitions;
  ``--messages`` per run (1M by default: at 200k a ratio swung from 0.94 to 0.68);
- acked-send latency: ``--samples`` single sends one at a time, p50 / p99;
- consumers: a topic of 6 partitions pre-loaded with ``--messages`` records, drained by each
  variant as a fresh group from the oldest offset; the rate counts from the first record
  received to the last one handled (group join excluded);
- scaling: our consumer service (no-op ``async def`` handler) under ``trpc-kafka run --workers
  1`` and ``--workers 2``: the workers join a fresh empty topic, and once every one of them
  holds partitions they are paused (SIGSTOP), ``--messages`` records are loaded and they are
  let go: the rate of a settled group draining a backlog (first record to last), and the
  seconds it took from the start until every worker held partitions.

Progress goes to stderr, one line a run; the results to ``bench/results/compare.json``
(``--quick``: ``compare-quick.json``); ``bench/table.py`` makes the README's tables from it.
A variant that fails is reported and recorded, the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GO_DIR = HERE / "go"
GO_BINARY = GO_DIR / ".build" / "sarama-bench"
RESULTS = HERE / "results"
PARTITIONS = 6
SCALING_WORKERS = (1, 2)
SCALING_SESSION_MS = 60_000  # groupSessionTimeout of the scaling runs: outlasts the load


@dataclass(frozen=True)
class Variant:
    name: str
    group: str  # producer | latency | consumer | scaling
    runner: str  # python | go | run
    title: str  # what the README's table calls it
    needs: str = ""  # a Python module it imports, or "go"


VARIANTS = (
    Variant("raw_produce_poll", "producer", "python", "raw confluent-kafka `produce` + `poll(0)`"),
    Variant(
        "raw_produce_callback",
        "producer",
        "python",
        "raw confluent-kafka, one shared delivery callback",
    ),
    Variant("ours_async_send_message", "producer", "python", "ours `async_send_message`"),
    Variant(
        "ours_async1_send",
        "producer",
        "python",
        "ours `async_send_message`, `async=1` (failures reported only)",
    ),
    Variant(
        "ours_send_message_1000_in_flight",
        "producer",
        "python",
        "ours `send_message`, 1,000 in flight",
    ),
    Variant("aiokafka_send", "producer", "python", "aiokafka `send` + `flush`", "aiokafka"),
    Variant(
        "faststream_publish",
        "producer",
        "python",
        "faststream (confluent) `publish`, each awaited",
        "faststream",
    ),
    Variant("go_async_producer", "producer", "go", "Go Sarama `AsyncProducer`", "go"),
    Variant("raw_latency", "latency", "python", "raw confluent-kafka `produce` + `poll`"),
    Variant("ours_latency", "latency", "python", "ours `send_message`"),
    Variant("aiokafka_latency", "latency", "python", "aiokafka `send_and_wait`", "aiokafka"),
    Variant("go_sync_latency", "latency", "go", "Go Sarama `SyncProducer`", "go"),
    Variant(
        "raw_consume",
        "consumer",
        "python",
        "raw confluent-kafka `consume(500)` + `store_offsets`",
    ),
    Variant("ours_service_async", "consumer", "python", "ours, no-op `async def` handler"),
    Variant("ours_service_def", "consumer", "python", "ours, no-op plain `def` handler"),
    Variant("ours_service_batch", "consumer", "python", "ours, batch handler, `batch=500`"),
    Variant("aiokafka_getmany", "consumer", "python", "aiokafka `getmany(500)`", "aiokafka"),
    Variant(
        "faststream_subscriber",
        "consumer",
        "python",
        "faststream (confluent) subscriber, no-op `async def`",
        "faststream",
    ),
    Variant(
        "go_consumer_group",
        "consumer",
        "go",
        "Go Sarama consumer group, `MarkMessage` each",
        "go",
    ),
    *(
        Variant(f"run_workers_{n}", "scaling", "run", f"`trpc-kafka run --workers {n}`")
        for n in SCALING_WORKERS
    ),
)
GROUPS = ("producer", "latency", "consumer", "scaling")
GO_MODES = {
    "go_async_producer": "produce-async",
    "go_sync_latency": "produce-sync-latency",
    "go_consumer_group": "consume-group",
}
# What each group's ratios are taken against.
BASELINES = {
    "producer": ("raw_produce_poll", "raw_produce_callback", "go_async_producer"),
    "consumer": ("raw_consume", "go_consumer_group"),
    "scaling": ("run_workers_1",),
}


@dataclass(frozen=True)
class Target:
    """One of issue 13's targets: ``field`` of ``variant`` over that of ``base`` (or alone)."""

    what: str
    variant: str
    base: str | None
    field: str  # rate | p50_ms | peak_rss_mb
    bound: float
    at_least: bool  # True: value >= bound; False: value <= bound


TARGETS = (
    Target(
        "plain def handler / async def handler",
        "ours_service_def",
        "ours_service_async",
        "rate",
        0.8,
        True,
    ),
    Target(
        "async def handler / raw consume", "ours_service_async", "raw_consume", "rate", 0.6, True
    ),
    Target("batch handler / raw consume", "ours_service_batch", "raw_consume", "rate", 0.9, True),
    Target(
        "async def handler peak RSS, MB (1M records)",
        "ours_service_async",
        None,
        "peak_rss_mb",
        86,
        False,
    ),
    Target(
        "async_send_message / Go AsyncProducer",
        "ours_async_send_message",
        "go_async_producer",
        "rate",
        1.2,
        True,
    ),
    Target(
        "async_send_message, async=1 / Go AsyncProducer",
        "ours_async1_send",
        "go_async_producer",
        "rate",
        1.2,
        True,
    ),
    Target(
        "async_send_message / raw with a callback",
        "ours_async_send_message",
        "raw_produce_callback",
        "rate",
        0.9,
        True,
    ),
    Target(
        "send_message 1,000 in flight / raw",
        "ours_send_message_1000_in_flight",
        "raw_produce_poll",
        "rate",
        0.25,
        True,
    ),
    Target("acked send p50 / raw p50", "ours_latency", "raw_latency", "p50_ms", 1.2, False),
)


def _targets(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        value = summaries.get(t.variant, {}).get(t.field)
        if t.base is not None:
            base = summaries.get(t.base, {}).get(t.field)
            value = value / base if value is not None and base else None
        if value is None:
            continue  # a variant not run, skipped or failed
        met = value >= t.bound if t.at_least else value <= t.bound
        bound = f"{'>=' if t.at_least else '<='} {t.bound:g}"
        out.append({"what": t.what, "value": round(value, 3), "bound": bound, "met": met})
    return out


sys.path.insert(0, str(HERE))  # the sibling modules, when this one is imported
from variants import JOIN_ALLOWANCE, consumer_deadline  # noqa: E402


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# -- the Go peer ----------------------------------------------------------------------------------


def build_go(timeout: float) -> tuple[str | None, str]:
    """Build the Go peer; (binary, "go version ...") or (None, why it is skipped)."""
    go = shutil.which("go")
    if go is None:
        return None, "Go not found on PATH: the Go Sarama variants are skipped"
    version = subprocess.run(
        [go, "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    started = time.monotonic()
    try:
        built = subprocess.run(
            [go, "build", "-o", str(GO_BINARY), "."],
            cwd=GO_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"go build took over {timeout:.0f} s: the Go Sarama variants are skipped"
    if built.returncode != 0:
        last = (built.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, f"go build failed ({last}): the Go Sarama variants are skipped"
    _progress(f"built the Go Sarama peer in {time.monotonic() - started:.1f} s ({version})")
    return str(GO_BINARY), version


def _sarama_version() -> str:
    for line in (GO_DIR / "go.mod").read_text().splitlines():
        if "github.com/IBM/sarama" in line:
            return line.split()[-1]
    return "unknown"


# -- one run of one variant -----------------------------------------------------------------------


@dataclass
class Plan:
    bootstrap: str
    consumer_topic: str
    messages: int
    samples: int
    max_seconds: float
    address_extra: str
    go_binary: str | None
    child_timeout: float


def _child_json(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"exit status {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_variant(variant: Variant, plan: Plan) -> dict[str, Any]:
    if variant.group in ("producer", "latency"):
        # A fresh topic a run: every run starts on an empty log, and deleting it keeps a full
        # run (some 20M records) from filling the broker's disk.
        from trpc_kafka._tools.broker import create_topic

        topic = f"bench-compare-{variant.name}-{uuid.uuid4().hex[:8]}"
        create_topic(plan.bootstrap, topic, partitions=PARTITIONS)
        try:
            return _run_variant(variant, plan, topic)
        finally:
            delete_topic(plan.bootstrap, topic)
    return _run_variant(variant, plan, plan.consumer_topic)


def delete_topic(bootstrap: str, topic: str) -> None:
    """Best effort: a topic left behind costs disk, not correctness."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})  # no info lines
    try:
        for future in admin.delete_topics([topic], operation_timeout=15).values():
            future.result(timeout=30)
    except Exception as exc:
        _progress(f"could not delete topic {topic}: {exc}")


def _run_variant(variant: Variant, plan: Plan, topic: str) -> dict[str, Any]:
    group = f"bench-{variant.name}-{uuid.uuid4().hex[:8]}"
    if variant.runner == "run":
        workers = int(variant.name.rsplit("_", 1)[1])
        return run_scaling(workers, plan, group)
    if variant.runner == "go":
        assert plan.go_binary is not None
        cmd = [
            plan.go_binary,
            "-mode",
            GO_MODES[variant.name],
            "-bootstrap",
            plan.bootstrap,
            "-topic",
            topic,
            "-messages",
            str(plan.messages),
            "-samples",
            str(plan.samples),
            "-max-seconds",
            str(plan.max_seconds),
            "-group",
            group,
            "-join-seconds",
            str(JOIN_ALLOWANCE),
        ]
    else:
        cmd = [
            sys.executable,
            str(HERE / "variants.py"),
            variant.name,
            "--bootstrap",
            plan.bootstrap,
            "--topic",
            topic,
            "--messages",
            str(plan.messages),
            "--samples",
            str(plan.samples),
            "--max-seconds",
            str(plan.max_seconds),
            "--group",
            group,
            "--address-extra",
            plan.address_extra,
        ]
    result: dict[str, Any] = _child_json(cmd, plan.child_timeout)
    return result


def run_scaling(workers: int, plan: Plan, group: str) -> dict[str, Any]:
    """Our service under ``trpc-kafka run --workers N`` drains a backlog, the group settled.

    The workers join a fresh, empty topic; once the broker reports every worker holding
    partitions they are stopped (SIGSTOP), the topic is loaded, and they are let go: the rate
    is that of N settled members, not of a start-up race. Started on the backlog, the first
    worker takes every partition and the others get theirs only after an incremental
    (cooperative-sticky) rebalance of two rounds, each noticed at a heartbeat (3 s): longer
    than the whole 1M drain on 2 cores. ``settle_s`` keeps that cost: from the start until
    every worker held partitions.
    """
    from trpc_kafka._tools.broker import create_topic

    topic = f"bench-scaling-{uuid.uuid4().hex[:8]}"
    create_topic(plan.bootstrap, topic, partitions=PARTITIONS)
    try:
        return _run_scaling(workers, plan, group, topic)
    finally:
        delete_topic(plan.bootstrap, topic)


def _run_scaling(workers: int, plan: Plan, group: str, topic: str) -> dict[str, Any]:
    from consumer import fill

    with tempfile.TemporaryDirectory(prefix="trpc-kafka-scaling-") as tmp:
        stats_dir = Path(tmp) / "stats"
        stats_dir.mkdir()
        config = Path(tmp) / "trpc_python.yaml"
        # A stopped worker sends no heartbeat: the session outlasts the load (a busy machine
        # may take 20 s for 1M records). It also bounds max.poll.interval.ms from below.
        address = (
            f"{plan.bootstrap}?topics={topic}&group={group}&initial=oldest"
            f"&groupSessionTimeout={SCALING_SESSION_MS}{plan.address_extra}"
        )
        config.write_text(
            "server:\n  app: bench\n  server: scaling\n  service:\n"
            f"    - name: bench.scaling\n      address: {address}\n      protocol: kafka\n"
        )
        env = {
            **os.environ,
            "BENCH_STATS_DIR": str(stats_dir),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        }
        cmd = [sys.executable, "-m", "trpc_kafka._tools.cli", "run", "scaling_app:setup"]
        cmd += ["-c", str(config), "--workers", str(workers), "--log-level", "WARNING"]
        begin = time.time()
        log = Path(tmp) / "stderr.log"  # a file, not a pipe: nobody reads a pipe mid-run
        with log.open("w") as stderr:
            process = subprocess.Popen(
                cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        stopped: list[int] = []
        try:
            settle_s = _wait_settled(plan.bootstrap, group, workers, process, begin)
            pids = [s["pid"] for s in _read_stats(stats_dir)]
            if len(pids) != workers:
                raise RuntimeError(f"{len(pids)} worker stats files for {workers} workers")
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            load_started = time.monotonic()
            fill(plan.bootstrap, topic, plan.messages)
            load_s = time.monotonic() - load_started
            if load_s > SCALING_SESSION_MS / 1000 / 2:
                raise RuntimeError(
                    f"loading took {load_s:.0f} s: too close to the session timeout of the "
                    f"stopped workers ({SCALING_SESSION_MS / 1000:g} s)"
                )
            resumed = time.time()
            _continue(stopped)
            while process.poll() is None:
                stats = _read_stats(stats_dir)
                if sum(s["count"] for s in stats) >= plan.messages:
                    break
                first = min((s["first"] for s in stats if s["count"]), default=0.0)
                if time.time() > consumer_deadline(resumed, first, plan.max_seconds):
                    break
                time.sleep(0.05)
        finally:
            _continue(stopped)  # a stopped process acts on SIGTERM only once continued
            process.send_signal(signal.SIGTERM)  # a graceful stop: commit and leave the group
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.returncode not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
            said = log.read_text(errors="replace").strip()[-2000:]
            raise RuntimeError(f"exit status {process.returncode}: {said}")
        time.sleep(2 * 0.1)  # the writers' last lines after the final records
        stats = _read_stats(stats_dir)
    return {
        **_scaling_result(stats, workers, plan.messages),
        "settle_s": settle_s,
        "load_s": load_s,
        "total_s": time.time() - begin,
    }


def _wait_settled(
    bootstrap: str, group: str, workers: int, process: subprocess.Popen[bytes], begin: float
) -> float:
    """Seconds from ``begin`` until the broker reports each of the workers holding partitions
    of the (still empty) topic, the group stable; at most JOIN_ALLOWANCE."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})  # no info lines
    while time.time() < begin + JOIN_ALLOWANCE:
        if process.poll() is not None:
            raise RuntimeError(f"trpc-kafka run exited with status {process.returncode}")
        try:
            described = admin.describe_consumer_groups([group], request_timeout=10)[group]
            group_now = described.result(timeout=15)
        except Exception:  # not yet known to the coordinator: ask again
            group_now = None
        if group_now is not None and _settled(group_now, workers):
            return time.time() - begin
        time.sleep(0.1)
    raise RuntimeError(f"the {workers} workers did not all hold partitions in {JOIN_ALLOWANCE:g} s")


def _settled(group: Any, workers: int) -> bool:
    """Stable, ``workers`` members, each with partitions, all PARTITIONS assigned."""
    held = [len(m.assignment.topic_partitions) for m in group.members]
    state = str(getattr(group.state, "name", group.state))
    return state == "STABLE" and len(held) == workers and min(held) > 0 and sum(held) == PARTITIONS


def _continue(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _read_stats(stats_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in stats_dir.glob("*.json"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # replaced under us: read it next time
            continue
    return out


def _scaling_result(stats: list[dict[str, Any]], workers: int, n: int) -> dict[str, Any]:
    """The drain's rate, from the first record any worker handled to the last one."""
    active = [s for s in stats if s["count"]]
    if not active:
        raise RuntimeError("no worker handled a record")
    seen = sum(s["count"] for s in active)
    first = min(s["first"] for s in active)
    last = max(s["last"] for s in active)
    cpu_s = sum(s["cpu_s"] for s in active)
    return {
        "messages": min(seen, n),
        "seconds": last - first,
        "rate": min(seen, n) / (last - first),
        "capped": seen < n,
        # CPU of the worker processes (all threads) a record: what a busy machine cannot skew.
        "cpu_us_per_record": cpu_s / seen * 1e6,
        "workers": workers,
        "workers_with_records": len(active),
        "per_worker": sorted((s["count"] for s in active), reverse=True),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in active),
    }


# -- the driver -----------------------------------------------------------------------------------


def preload(bootstrap: str, n: int) -> str:
    from consumer import preload as preload_topic

    started = time.monotonic()
    topic = preload_topic(bootstrap, n)
    _progress(f"pre-loaded {n:,} records into {topic} in {time.monotonic() - started:.1f} s")
    return topic


def _summary(group: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    if not runs:
        return {}
    peak = max(r["peak_rss_mb"] for r in runs)
    if group == "latency":
        return {
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "peak_rss_mb": peak,
        }
    summary = {
        "rate": statistics.median(r["rate"] for r in runs),
        "messages": statistics.median(r["messages"] for r in runs),
        "capped_runs": sum(bool(r.get("capped")) for r in runs),
        "peak_rss_mb": peak,
    }
    if group == "scaling":
        summary["workers"] = runs[0]["workers"]
        summary["workers_with_records"] = min(r["workers_with_records"] for r in runs)
        summary["settle_s"] = statistics.median(r["settle_s"] for r in runs)
        summary["cpu_us_per_record"] = statistics.median(r["cpu_us_per_record"] for r in runs)
    return summary


def _describe(variant: Variant, result: dict[str, Any]) -> str:
    if variant.group == "latency":
        return f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
    text = f"{result['rate']:>11,.0f} msg/s ({result['messages']:,} in {result['seconds']:.2f} s"
    if result.get("capped"):
        text += ", capped"
    if "settle_s" in result:
        text += f"; every worker held partitions {result['settle_s']:.1f} s after the start"
        text += f", per worker {', '.join(f'{c:,}' for c in result['per_worker'])}"
        text += f", {result['cpu_us_per_record']:.2f} µs CPU a record"
    return text + ")"


def _selected(args: argparse.Namespace) -> list[Variant]:
    def matches(v: Variant, words: list[str]) -> bool:
        return any(w == v.group or w in v.name for w in words)

    chosen = [v for v in VARIANTS if not args.only or matches(v, args.only)]
    return [v for v in chosen if not matches(v, args.skip)]


def _versions(go_version: str | None) -> dict[str, str]:
    import confluent_kafka

    def version_of(distribution: str) -> str:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "confluent_kafka": str(confluent_kafka.__version__),
        "librdkafka": confluent_kafka.libversion()[0],
        "aiokafka": version_of("aiokafka"),
        "faststream": version_of("faststream"),
        "go": go_version or "not used",
        "sarama": _sarama_version() if go_version else "not used",
    }


def run(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    variants = _selected(args)
    skipped: dict[str, str] = {}
    for v in variants:
        if v.needs and v.needs != "go" and importlib.util.find_spec(v.needs) is None:
            skipped[v.name] = f"{v.needs} is not installed (pip install -e '.[bench]')"
    go_binary = go_version = None
    if any(v.runner == "go" for v in variants):
        go_binary, go_said = build_go(args.go_build_timeout)
        if go_binary is None:
            _progress(go_said)
            skipped.update({v.name: go_said for v in variants if v.runner == "go"})
        else:
            go_version = go_said
    for name, why in skipped.items():
        if not name.startswith("go_"):
            _progress(f"skipped {name}: {why}")
    variants = [v for v in variants if v.name not in skipped]

    needs_data = any(v.group == "consumer" for v in variants)  # scaling loads its own
    plan = Plan(
        bootstrap=bootstrap,
        consumer_topic=preload(bootstrap, args.messages) if needs_data else "",
        messages=args.messages,
        samples=args.samples,
        max_seconds=args.max_seconds,
        address_extra=args.address_extra,
        go_binary=go_binary,
        child_timeout=args.max_seconds + JOIN_ALLOWANCE + 120,
    )
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    failures: dict[str, list[str]] = {}
    total = len(variants) * args.rounds
    started = time.monotonic()
    step = 0
    for round_no in range(args.rounds):
        # Rotate the order within each group from round to round: no variant always runs
        # first (cold page cache, a fresh log segment) or right after the heaviest one.
        ordered: list[Variant] = []
        for group in GROUPS:
            members = [v for v in variants if v.group == group]
            if members:
                shift = round_no % len(members)
                ordered += members[shift:] + members[:shift]
        for variant in ordered:
            step += 1
            elapsed = time.monotonic() - started
            # After the first round, the rounds' pace says how long the rest takes.
            eta = ""
            if round_no:
                left = elapsed / (step - 1) * (total - step + 1)
                eta = f", about {_clock(left)} left"
            head = (
                f"[{step}/{total} {_clock(elapsed)}{eta}] "
                f"round {round_no + 1}/{args.rounds} {variant.name}"
            )
            try:
                result = run_variant(variant, plan)
            except (
                RuntimeError,
                subprocess.TimeoutExpired,
                ValueError,
                KeyError,
                IndexError,
            ) as exc:
                failures.setdefault(variant.name, []).append(str(exc))
                _progress(f"{head}: FAILED: {str(exc).splitlines()[-1] if str(exc) else exc!r}")
                continue
            runs[variant.name].append(result)
            _progress(
                f"{head}: {_describe(variant, result)}, peak RSS {result['peak_rss_mb']:.0f} MB"
            )
    if plan.consumer_topic:
        delete_topic(bootstrap, plan.consumer_topic)
    summaries = {v.name: _summary(v.group, runs[v.name]) for v in variants}
    machine: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
        # Load averages well above the CPU count mean the figures are noise.
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "broker": "local 1-node Apache Kafka (KRaft) on the same machine",
        **_versions(go_version),
    }
    return {
        "label": args.label,
        "command": shlex.join([".venv/bin/python", "bench/compare.py", *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": machine,
        "workload": {
            "messages": args.messages,
            "value_bytes": 100,
            "compression": "none",
            "partitions": PARTITIONS,
            "rounds": args.rounds,
            "latency_samples": args.samples,
            "max_seconds_per_run": args.max_seconds,
            "address_extra": args.address_extra,
            "in_flight": 1000,
            "consume_batch": 500,
        },
        "variants": {
            v.name: {"group": v.group, "title": v.title, **summaries[v.name], "runs": runs[v.name]}
            for v in variants
        },
        "ratios": _ratios(variants, summaries),
        "targets": _targets(summaries),
        "skipped": skipped,
        "failed": failures,
    }


def _ratios(variants: list[Variant], summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, bases in BASELINES.items():
        for base in bases:
            base_rate = summaries.get(base, {}).get("rate")
            if not base_rate:
                continue
            out[f"vs_{base}"] = {
                v.name: round(summaries[v.name]["rate"] / base_rate, 3)
                for v in variants
                if v.group == group and summaries[v.name].get("rate")
            }
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0],
        epilog="variants: " + ", ".join(v.name for v in VARIANTS),
    )
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and one round")
    parser.add_argument("--messages", type=int, help="records per run (default 1,000,000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--samples", type=int, help="acked sends timed per latency run (1000)")
    parser.add_argument("--max-seconds", type=float, help="cap of one run (default 60)")
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="WORD", help="groups or parts of variant names"
    )
    parser.add_argument("--skip", nargs="+", default=[], metavar="WORD", help="the same, left out")
    parser.add_argument("--address-extra", default="", help="'&k=v' added to ours and raw's")
    parser.add_argument("--go-build-timeout", type=float, default=600.0)
    parser.add_argument("--label", help="what this run is (kept in the JSON, shown by table.py)")
    parser.add_argument("--out", type=Path, help="default bench/results/compare[-quick].json")
    args = parser.parse_args(argv)
    defaults = (20_000, 1, 100, 10.0) if args.quick else (1_000_000, 3, 1000, 60.0)
    for name, default in zip(
        ("messages", "rounds", "samples", "max_seconds"), defaults, strict=True
    ):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.messages < 1000 or args.rounds < 1 or args.samples < 1 or args.max_seconds <= 0:
        parser.error("--messages must be >= 1000, --rounds and --samples >= 1, --max-seconds > 0")
    if args.out is None:
        args.out = RESULTS / ("compare-quick.json" if args.quick else "compare.json")
    if args.label is None:
        args.label = "smoke run (--quick)" if args.quick else "full run"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trpc_kafka._tools.broker import broker_or_temporary

    if not args.bootstrap:
        _progress("starting a local 1-node broker for this run (--bootstrap reuses one)")
    with broker_or_temporary(args.bootstrap) as bootstrap:
        result = run(args, bootstrap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    _progress(f"written: {args.out}")
    from table import render

    print(render(result))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
