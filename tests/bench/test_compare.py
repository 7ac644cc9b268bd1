"""The benchmark harness (bench/compare.py, bench/table.py): its arithmetic, its tables, and one
tiny round of every installed variant against the real broker, so the harness cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402
import table  # noqa: E402

# -- the arithmetic -------------------------------------------------------------------------------


def test_scaling_result_is_the_rate_from_the_first_record_of_any_worker_to_the_last() -> None:
    a = {"pid": 1, "count": 300, "first": 1.0, "last": 3.0, "peak_rss_mb": 50.0, "cpu_s": 0.3}
    b = {"pid": 2, "count": 200, "first": 0.5, "last": 2.5, "peak_rss_mb": 60.0, "cpu_s": 0.2}
    result = compare._scaling_result([b, a], workers=2, n=500)
    assert result["rate"] == pytest.approx(500 / 2.5)
    assert (result["messages"], result["seconds"]) == (500, 2.5)
    assert result["per_worker"] == [300, 200]
    assert result["cpu_us_per_record"] == pytest.approx(1000.0)
    assert result["workers_with_records"] == 2
    assert result["peak_rss_mb"] == 60.0
    assert result["capped"] is False


def test_scaling_result_counts_the_workers_with_records_and_a_short_drain_as_capped() -> None:
    a = {"pid": 1, "count": 10, "first": 0.0, "last": 1.0, "peak_rss_mb": 1.0, "cpu_s": 0.1}
    idle = {"pid": 2, "count": 0, "first": 0.0, "last": 0.0, "peak_rss_mb": 1.0, "cpu_s": 0.0}
    result = compare._scaling_result([a, idle], workers=2, n=20)
    assert result["workers_with_records"] == 1
    assert result["capped"] is True
    with pytest.raises(RuntimeError, match="no worker handled a record"):
        compare._scaling_result([idle], workers=1, n=20)


def _group(state: str, *held: int) -> Any:
    """A stand-in for confluent-kafka's ConsumerGroupDescription."""

    def member(n: int) -> Any:
        return SimpleNamespace(assignment=SimpleNamespace(topic_partitions=list(range(n))))

    return SimpleNamespace(state=SimpleNamespace(name=state), members=[member(n) for n in held])


def test_the_group_is_settled_once_stable_with_every_worker_holding_partitions() -> None:
    assert compare._settled(_group("STABLE", 3, 3), workers=2)
    assert compare._settled(_group("STABLE", 6), workers=1)
    # The first round of an incremental rebalance: stable, the newcomer holds nothing yet.
    assert not compare._settled(_group("STABLE", 3, 0), workers=2)
    assert not compare._settled(_group("STABLE", 6), workers=2)  # one has not joined
    assert not compare._settled(_group("PREPARING_REBALANCE", 3, 3), workers=2)
    assert not compare._settled(_group("STABLE", 2, 2), workers=2)  # partitions unassigned


def test_summary_is_the_median_rate_and_the_highest_peak() -> None:
    runs = [
        {"rate": 3.0, "messages": 10, "peak_rss_mb": 5.0},
        {"rate": 1.0, "messages": 10, "peak_rss_mb": 9.0, "capped": True},
        {"rate": 2.0, "messages": 10, "peak_rss_mb": 7.0},
    ]
    summary = compare._summary("consumer", runs)
    assert summary == {"rate": 2.0, "messages": 10, "capped_runs": 1, "peak_rss_mb": 9.0}
    latency = compare._summary(
        "latency",
        [
            {"p50_ms": 1.0, "p99_ms": 4.0, "peak_rss_mb": 3.0},
            {"p50_ms": 3.0, "p99_ms": 2.0, "peak_rss_mb": 4.0},
        ],
    )
    assert latency == {"p50_ms": 2.0, "p99_ms": 3.0, "peak_rss_mb": 4.0}
    scaling = compare._summary(
        "scaling",
        [
            {**run, "workers": 2, "workers_with_records": k, "settle_s": k * 3.0}
            | {"cpu_us_per_record": k * 1.0}
            for run, k in zip(runs, (2, 1, 2), strict=True)
        ],
    )
    assert (scaling["workers"], scaling["workers_with_records"]) == (2, 1)
    assert (scaling["settle_s"], scaling["cpu_us_per_record"]) == (6.0, 2.0)


def test_targets_are_ratios_of_medians_and_skip_what_did_not_run() -> None:
    summaries: dict[str, dict[str, Any]] = {
        "ours_service_async": {"rate": 300.0, "peak_rss_mb": 90.0},
        "ours_service_def": {"rate": 270.0},
        "raw_consume": {"rate": 600.0},
        "ours_latency": {"p50_ms": 0.3},
        "raw_latency": {"p50_ms": 0.2},
    }
    targets = {t["what"]: t for t in compare._targets(summaries)}
    assert targets["plain def handler / async def handler"] == {
        "what": "plain def handler / async def handler",
        "value": 0.9,
        "bound": ">= 0.8",
        "met": True,
    }
    assert targets["async def handler / raw consume"]["met"] is False  # 0.5 < 0.6
    assert targets["async def handler peak RSS, MB (1M records)"]["met"] is False  # 90 > 86
    assert targets["acked send p50 / raw p50"]["value"] == 1.5
    assert targets["acked send p50 / raw p50"]["met"] is False
    assert "batch handler / raw consume" not in targets  # not run


def test_quick_defaults_and_selection() -> None:
    args = compare.parse_args(["--quick", "--only", "consumer", "go_async", "--skip", "faststream"])
    assert (args.messages, args.rounds, args.samples) == (20_000, 1, 100)
    assert args.out.name == "compare-quick.json"
    names = [v.name for v in compare._selected(args)]
    assert "raw_consume" in names and "go_async_producer" in names
    assert "faststream_subscriber" not in names and "raw_produce_poll" not in names
    full = compare.parse_args([])
    assert (full.messages, full.rounds) == (1_000_000, 3)
    with pytest.raises(SystemExit):
        compare.parse_args(["--messages", "10"])


def test_without_go_the_go_variants_are_skipped_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert compare.build_go(timeout=1) == (
        None,
        "Go not found on PATH: the Go Sarama variants are skipped",
    )


# -- the tables -----------------------------------------------------------------------------------


def _result() -> dict[str, Any]:
    def v(group: str, title: str, **fields: Any) -> dict[str, Any]:
        return {"group": group, "title": title, "peak_rss_mb": 40.0, "runs": [], **fields}

    return {
        "label": "test",
        "command": "bench/compare.py",
        "when": "now",
        "workload": {
            "messages": 1000,
            "value_bytes": 100,
            "partitions": 6,
            "rounds": 3,
            "latency_samples": 10,
        },
        "machine": {
            "cpus": 2,
            "python": "3",
            "confluent_kafka": "2",
            "librdkafka": "2",
            "aiokafka": "0",
            "faststream": "0",
            "sarama": "v1",
        },
        "variants": {
            "raw_produce_poll": v("producer", "raw", rate=400_000.0, messages=1000),
            "raw_produce_callback": v("producer", "raw cb", rate=200_000.0, messages=1000),
            "ours_async_send_message": v("producer", "ours", rate=100_000.0, messages=1000),
            "faststream_publish": v("producer", "fs", rate=1_000.0, messages=300, capped_runs=3),
            "ours_latency": v("latency", "ours lat", p50_ms=0.3, p99_ms=0.7),
            "raw_consume": v("consumer", "raw c", rate=700_000.0, messages=1000),
            "ours_service_async": v("consumer", "ours c", rate=350_000.0, messages=1000),
            "run_workers_1": v(
                "scaling", "w1", rate=100_000.0, messages=1000, settle_s=1.04, cpu_us_per_record=4.5
            ),
            "run_workers_2": v("scaling", "w2", rate=150_000.0, messages=1000, settle_s=6.5),
            "run_workers_3": v(
                "scaling", "w3", rate=90_000.0, messages=1000, workers=3, workers_with_records=2
            ),
        },
        "skipped": {"go_async_producer": "Go not found on PATH"},
        "failed": {},
    }


def test_render_gives_ratios_against_the_baselines_and_marks_capped_runs() -> None:
    text = table.render(_result())
    assert "| ours | 100k | 0.25 | 0.50 | - | 40 MB |" in text
    assert "| fs | 1.0k (0k in the time cap) | 0.00 | 0.01 | - | 40 MB |" in text
    assert "| ours lat | 0.30 ms | 0.70 ms |" in text
    assert "| ours c | 350k | 0.50 | - | 40 MB |" in text
    assert "| w1 | 100k | 1.00 | 4.50 | 1.0 | 40 MB |" in text
    assert "| w2 | 150k | 1.50 | - | 6.5 | 40 MB |" in text
    assert "| w3 | 90.0k (1 worker(s) got no record) | 0.90 | - | - | 40 MB |" in text
    assert "Not measured: go_async_producer: Go not found on PATH." in text
    assert "issue 13's target" not in text  # the result has none


def test_render_shows_targets_except_for_the_readme() -> None:
    result = _result()
    result["targets"] = [{"what": "x / y", "value": 0.5, "bound": ">= 0.6", "met": False}]
    assert "| x / y | 0.5 | >= 0.6 | no |" in table.render(result)
    assert "x / y" not in table.render(result, targets=False)


def test_rewrite_readme_replaces_only_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{table.BEGIN}\nold\n{table.END}\nafter\n")
    table.rewrite_readme(readme, "new table")
    assert readme.read_text() == f"# x\nbefore\n{table.BEGIN}\nnew table\n{table.END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="expected one"):
        table.rewrite_readme(readme, "new table")
    assert readme.read_text() == "no markers\n"


def test_the_readme_has_the_marked_block() -> None:
    text = (BENCH.parent / "README.md").read_text(encoding="utf-8")
    assert text.count(table.BEGIN) == 1 and text.count(table.END) == 1


# -- one tiny round of everything installed -------------------------------------------------------


@pytest.mark.slow
def test_one_tiny_round_of_every_installed_variant(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    messages = 1000
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "compare.py"),
            "--quick",
            "--bootstrap",
            kafka_bootstrap,
            "--messages",
            str(messages),
            "--samples",
            "20",
            "--max-seconds",
            "6",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["failed"] == {}
    expected = {
        v.name
        for v in compare.VARIANTS
        if not v.needs
        or (v.needs == "go" and shutil.which("go"))
        or (v.needs != "go" and importlib.util.find_spec(v.needs))
    }
    assert set(result["variants"]) == expected, result["skipped"]
    for name, variant in result["variants"].items():
        assert len(variant["runs"]) == 1, name
        run = variant["runs"][0]
        assert run["peak_rss_mb"] > 0, name
        if variant["group"] == "latency":
            assert run["samples"] == 20 and 0 < run["p50_ms"] <= run["p99_ms"], name
            continue
        assert run["rate"] > 0, name
        if not run["capped"]:  # everything sent was acknowledged, everything loaded was read
            assert run["messages"] == messages, name
    assert {t["what"] for t in result["targets"]} >= {"batch handler / raw consume"}
    # A progress line per run on stderr, the tables on stdout.
    assert done.stderr.count("round 1/1") == len(expected)
    assert "| consumer variant |" in done.stdout


def test_each_scaling_worker_drains_its_share_of_the_backlog(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    # Issue 13 section 4: started on a pre-loaded topic, the second worker got its partitions
    # only after an incremental rebalance of two heartbeats, when the first had drained all:
    # "--workers 2" measured one worker. (The backlog topic is what the old method drained.)
    from consumer import fill

    backlog = new_topic(compare.PARTITIONS)
    fill(kafka_bootstrap, backlog, 6000)
    plan = compare.Plan(
        bootstrap=kafka_bootstrap,
        consumer_topic=backlog,
        messages=6000,
        samples=1,
        max_seconds=30.0,
        address_extra="",
        go_binary=None,
        child_timeout=120.0,
    )
    result = compare.run_scaling(2, plan, f"test-scaling-{uuid.uuid4().hex[:8]}")
    assert result["workers_with_records"] == 2, result
    assert result["per_worker"] == [3000, 3000]  # 3 partitions of 1,000 records each
    assert result["messages"] == 6000 and not result["capped"]
    assert 0 < result["settle_s"] < 60
    assert result["cpu_us_per_record"] > 0


@pytest.mark.skipif(not importlib.util.find_spec("aiokafka"), reason="needs aiokafka")
def test_a_failing_variant_is_recorded_and_the_others_still_run(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "compare.py"),
            "--quick",
            "--bootstrap",
            kafka_bootstrap,
            "--only",
            "raw_produce_poll",
            "aiokafka_latency",
            "--samples",
            "5",
            "--address-extra",
            "&nosuchkey=1",  # our and raw's address refuse it; aiokafka's has none
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-4000:]
    assert "raw_produce_poll: FAILED:" in done.stderr and "unknown key 'nosuchkey'" in done.stderr
    result = json.loads(out.read_text())
    assert list(result["failed"]) == ["raw_produce_poll"]
    assert len(result["variants"]["aiokafka_latency"]["runs"]) == 1
    assert "Not measured: raw_produce_poll: failed (1 run(s))." in done.stdout
