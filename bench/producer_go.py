"""Producer throughput against the Go Sarama peer, interleaved in one run (issue 13 §3).

Each round runs every chosen variant once, each in a process of its own on a fresh topic of
6 partitions (``bench/variants.py`` children and the Go peer ``bench/go``, as
``bench/compare.py`` runs them), in a rotated order so that no variant always follows the same
one. Per variant: the median msg/s and its spread over the rounds, and the median CPU time per
message of the whole process (every thread: librdkafka's, Go's goroutines), which a busy
machine disturbs far less than the wall clock. Ratios are of medians, and also the median of
the per-round ratios (each round's variants ran within seconds of each other).

    .venv/bin/python bench/producer_go.py --bootstrap HOST:PORT [--messages 1000000]
        [--rounds 5] [--only NAME ...] [--out bench/results/producer-go.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import GO_BINARY, PARTITIONS, _child_json, build_go, delete_topic  # noqa: E402

# name -> (runner, variant or Go flags, extra address keys for ours and raw)
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "raw_produce_poll": ("python", ["raw_produce_poll"], ""),
    "raw_produce_callback": ("python", ["raw_produce_callback"], ""),
    "ours_async_send_message": ("python", ["ours_async_send_message"], ""),
    # async=1, no success callback: the producer reports failures only (pool.acquire).
    "ours_async1_send": ("python", ["ours_async1_send"], ""),
    "go_async_producer": ("go", ["-mode", "produce-async"], ""),
    "go_async_producer_errors_only": ("go", ["-mode", "produce-async", "-successes=false"], ""),
}
RATIOS = (
    ("ours_async_send_message", "go_async_producer", 1.2),
    ("ours_async_send_message", "raw_produce_callback", 0.9),
    ("ours_async1_send", "go_async_producer", 1.2),
    ("ours_async1_send", "go_async_producer_errors_only", 1.2),
    ("ours_async1_send", "raw_produce_callback", 0.9),
    ("go_async_producer_errors_only", "go_async_producer", None),
    ("ours_async1_send", "ours_async_send_message", None),
)


def _progress(line: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
    sys.stderr.flush()


def run_one(name: str, args: argparse.Namespace, go_binary: str | None) -> dict[str, Any]:
    from trpc_kafka._tools.broker import create_topic

    runner, what, extra = VARIANTS[name]
    topic = f"bench-prodgo-{name}-{uuid.uuid4().hex[:8]}"
    create_topic(args.bootstrap, topic, partitions=PARTITIONS)
    try:
        if runner == "go":
            assert go_binary is not None
            cmd = [go_binary, *what, "-bootstrap", args.bootstrap, "-topic", topic]
            cmd += ["-messages", str(args.messages), "-max-seconds", str(args.max_seconds)]
        else:
            cmd = [sys.executable, str(HERE / "variants.py"), *what]
            cmd += ["--bootstrap", args.bootstrap, "--topic", topic]
            cmd += ["--messages", str(args.messages), "--max-seconds", str(args.max_seconds)]
            cmd += ["--address-extra", extra]
        result: dict[str, Any] = _child_json(cmd, args.max_seconds + 180)
        return result
    finally:
        delete_topic(args.bootstrap, topic)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["rate"] for r in runs]
    cpu = [r["cpu_us_per_msg"] for r in runs if "cpu_us_per_msg" in r]
    median = statistics.median(rates)
    return {
        "rate": median,
        "rates": [round(x) for x in rates],
        "spread": round((max(rates) - min(rates)) / median, 3),  # (max - min) / median
        "cpu_us_per_msg": statistics.median(cpu) if cpu else None,
        "cpu_us_per_msg_runs": [round(x, 3) for x in cpu],
        "capped_runs": sum(bool(r.get("capped")) for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def _ratios(
    names: list[str], runs: dict[str, list[dict[str, Any]]], summaries: dict[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for ours, base, target in RATIOS:
        if ours not in names or base not in names:
            continue
        per_round = [a["rate"] / b["rate"] for a, b in zip(runs[ours], runs[base], strict=True)]
        cpu_a, cpu_b = summaries[ours]["cpu_us_per_msg"], summaries[base]["cpu_us_per_msg"]
        out.append(
            {
                "ratio": f"{ours} / {base}",
                "of_medians": round(summaries[ours]["rate"] / summaries[base]["rate"], 3),
                "median_of_rounds": round(statistics.median(per_round), 3),
                "rounds": [round(x, 3) for x in per_round],
                # CPU per message, base / ours: above 1 when ours needs less CPU per message.
                "cpu_base_over_ours": round(cpu_b / cpu_a, 3) if cpu_a and cpu_b else None,
                "target": target,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    names: list[str] = args.only
    go_binary = None
    if any(VARIANTS[n][0] == "go" for n in names):
        go_binary, why = build_go(300)
        if go_binary is None:
            _progress(why)
            names = [n for n in names if VARIANTS[n][0] != "go"]
        else:
            go_binary = str(GO_BINARY)
    load_at_start = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    started = time.monotonic()
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            result = run_one(name, args, go_binary)
            runs[name].append(result)
            cpu = result.get("cpu_us_per_msg")
            _progress(
                f"round {r + 1}/{args.rounds} {name}: {result['rate']:,.0f} msg/s"
                + ("" if cpu is None else f", {cpu:.2f} us CPU/msg")
                + f" (load {os.getloadavg()[0]:.1f})"
            )
    summaries = {n: _summary(runs[n]) for n in names}
    report = {
        "label": args.label,
        "command": " ".join(["bench/producer_go.py", *(argv or sys.argv[1:])]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": round(time.monotonic() - started),
        "load_at_start": [round(x, 2) for x in load_at_start],
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
        "messages": args.messages,
        "rounds": args.rounds,
        "variants": summaries,
        "ratios": _ratios(names, runs, summaries),
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
