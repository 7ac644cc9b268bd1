"""The README's performance tables, made from a ``bench/compare.py`` result file.

    .venv/bin/python bench/table.py [bench/results/compare.json]            # print them
    .venv/bin/python bench/table.py bench/results/compare.json --readme README.md

``--readme`` replaces what stands between the lines ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` of the file with the tables (and the command that made them), so the
README's figures are always those of a committed result file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
DEFAULT = Path(__file__).resolve().parent / "results" / "compare.json"


def _rate(v: dict[str, Any]) -> str:
    rate = v.get("rate")
    if rate is None:
        return "failed"
    text = f"{rate / 1000:,.1f}k" if rate < 100_000 else f"{rate / 1000:,.0f}k"
    if v.get("capped_runs"):
        text += f" ({v['messages'] / 1000:,.0f}k in the time cap)"
    return text


def _ratio(v: dict[str, Any], base: dict[str, Any] | None) -> str:
    if not base or not base.get("rate") or v.get("rate") is None:
        return "-"
    return f"{v['rate'] / base['rate']:.2f}"


def _rss(v: dict[str, Any]) -> str:
    return f"{v['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in v else "-"


def _load(machine: dict[str, Any]) -> str:
    loads = [machine.get(f"load_average_at_{when}") for when in ("start", "end")]
    if not all(loads):
        return ""
    start, end = (load[0] for load in loads if load)
    return f"; 1-minute load average {start:.1f} at the start, {end:.1f} at the end"


def render(result: dict[str, Any], *, targets: bool = True) -> str:
    """The tables; ``targets``: with the table of issue 13's targets (not the README's)."""
    variants: dict[str, dict[str, Any]] = result["variants"]

    def group(name: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in variants.items() if v["group"] == name}

    w = result["workload"]
    m = result["machine"]
    lines = [
        f"{result.get('label') or 'run'}: `{result['command']}` ({result['when']}; "
        f"{w['messages']:,} records of {w['value_bytes']} bytes per run, {w['partitions']} "
        f"partitions, medians of {w['rounds']} interleaved round(s), each variant in its own "
        f"process; {m['cpus']} CPUs, Python {m['python']}, confluent-kafka "
        f"{m['confluent_kafka']} (librdkafka {m['librdkafka']}), aiokafka {m['aiokafka']}, "
        f"faststream {m['faststream']}, Sarama {m['sarama']}{_load(m)}).",
    ]
    producers = group("producer")
    if producers:
        raw = variants.get("raw_produce_poll")
        raw_cb = variants.get("raw_produce_callback")
        go = variants.get("go_async_producer")
        lines += [
            "",
            "| producer variant | msg/s | × raw | × raw with a callback | × Go AsyncProducer "
            "| peak RSS |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {v['title']} | {_rate(v)} | {_ratio(v, raw)} | {_ratio(v, raw_cb)} "
            f"| {_ratio(v, go)} | {_rss(v)} |"
            for v in producers.values()
        ]
    latency = group("latency")
    if latency:
        lines += [
            "",
            f"| acked send, one at a time ({w['latency_samples']:,} samples) | p50 | p99 |",
            "|---|---|---|",
        ]
        lines += [
            f"| {v['title']} | {v['p50_ms']:.2f} ms | {v['p99_ms']:.2f} ms |"
            if "p50_ms" in v
            else f"| {v['title']} | failed | failed |"
            for v in latency.values()
        ]
    consumers = group("consumer")
    if consumers:
        raw = variants.get("raw_consume")
        go = variants.get("go_consumer_group")
        lines += [
            "",
            "| consumer variant | msg/s | × raw | × Go consumer group | peak RSS |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {v['title']} | {_rate(v)} | {_ratio(v, raw)} | {_ratio(v, go)} | {_rss(v)} |"
            for v in consumers.values()
        ]
    scaling = group("scaling")
    if scaling:
        one = variants.get("run_workers_1")
        lines += [
            "",
            "| our service, no-op `async def` handler, draining a backlog with every worker "
            "already holding partitions | msg/s | × 1 worker | CPU µs a record, all workers "
            "| s from start until every worker held partitions | peak RSS a worker |",
            "|---|---|---|---|---|---|",
        ]
        for v in scaling.values():
            idle = v.get("workers", 1) - v.get("workers_with_records", v.get("workers", 1))
            drain = _rate(v) + (f" ({idle} worker(s) got no record)" if idle > 0 else "")
            settle = f"{v['settle_s']:.1f}" if "settle_s" in v else "-"
            cpu = f"{v['cpu_us_per_record']:.2f}" if "cpu_us_per_record" in v else "-"
            lines.append(
                f"| {v['title']} | {drain} | {_ratio(v, one)} | {cpu} | {settle} | {_rss(v)} |"
            )
    if targets and result.get("targets"):
        lines += ["", "| issue 13's target | this run | target | met |", "|---|---|---|---|"]
        lines += [
            f"| {t['what']} | {t['value']:g} | {t['bound']} | {'yes' if t['met'] else 'no'} |"
            for t in result["targets"]
        ]
    notes = [f"{k}: {why}" for k, why in result.get("skipped", {}).items()]
    notes += [f"{k}: failed ({len(errs)} run(s))" for k, errs in result.get("failed", {}).items()]
    if notes:
        lines += ["", "Not measured: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def rewrite_readme(path: Path, tables: str) -> None:
    text = path.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{path}: expected one {BEGIN} line followed by one {END} line")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{tables}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("result", type=Path, nargs="?", default=DEFAULT)
    parser.add_argument("--readme", type=Path, help="rewrite this file's marked block")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text(encoding="utf-8"))
    if args.readme:
        rewrite_readme(args.readme, render(result, targets=False))
        print(f"rewritten: the {BEGIN} block of {args.readme}", file=sys.stderr)
    else:
        print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
