"""Experiment (issue 13 §3, not a design in use): would serving delivery reports on the event
loop's thread cut the CPU per ``async_send_message``?

py-spy ``--native`` shows the delivery thread waiting for the GIL once per report (the binding's
``dr_msg_cb`` takes it for every message, even with ``delivery.report.only.error``, before it
looks at the error). Raw confluent-kafka polls on the sending thread, where taking the GIL is
uncontended. This sends with ``async_send_message`` and calls ``poll(0)`` on the loop's thread
every ``EVERY`` sends (0: never, as the library does), the delivery thread polling as usual,
each setting in a process of its own, rounds interleaved:

    .venv/bin/python bench/producer_loop_poll.py --bootstrap HOST:PORT [--messages 500000]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VALUE = b"x" * 100
# name -> (poll(0) on the loop every N sends, extra address keys)
SETTINGS = {
    "async1": (0, "&async=1"),
    "async1_poll32": (32, "&async=1"),
    "async1_poll1": (1, "&async=1"),
    "async0": (0, ""),
    "async0_poll32": (32, ""),
}


def child(bootstrap: str, topic: str, n: int, every: int, extra: str) -> dict[str, Any]:
    import trpc_kafka

    async def main() -> dict[str, Any]:
        failed: list[object] = []
        proxy = trpc_kafka.new_client_proxy(
            f"exp.{uuid.uuid4().hex[:6]}",
            target=f"kafka://{bootstrap}?compression=none{extra}",
            error_callback=lambda e, *_: failed.append(e),
        )
        await proxy.async_send_message(topic, None, VALUE)
        entry = proxy._entry
        assert entry is not None
        await entry.wait_empty_async(30)
        poll = entry.producer.poll
        send = proxy.async_send_message
        cpu = time.process_time()
        start = time.perf_counter()
        for i in range(n):
            await send(topic, None, VALUE)
            if every and i % every == 0:
                poll(0)
        await proxy.close()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if failed:
            raise RuntimeError(f"{len(failed)} sends failed: {failed[0]}")
        return {"rate": n / seconds, "cpu_us_per_msg": cpu / n * 1e6}

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("TOPIC", "EVERY", "EXTRA"))
    args = parser.parse_args()
    if args.child:
        topic, every, extra = args.child
        print(json.dumps(child(args.bootstrap, topic, args.messages, int(every), extra)))
        return 0
    sys.path.insert(0, str(HERE))
    from compare import PARTITIONS, delete_topic

    from trpc_kafka._tools.broker import create_topic

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        for name, (every, extra) in SETTINGS.items():
            topic = f"bench-loop-poll-{uuid.uuid4().hex[:8]}"
            create_topic(args.bootstrap, topic, partitions=PARTITIONS)
            cmd = [sys.executable, __file__, "--bootstrap", args.bootstrap]
            cmd += ["--messages", str(args.messages), "--child", topic, str(every), extra]
            try:
                done = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            finally:
                delete_topic(args.bootstrap, topic)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[name].append(result)
            print(
                f"round {r + 1} {name}: {result['rate']:,.0f} msg/s, "
                f"{result['cpu_us_per_msg']:.2f} us CPU/msg",
                file=sys.stderr,
            )
    summary = {
        name: {
            "rate": round(statistics.median(x["rate"] for x in rs)),
            "cpu_us_per_msg": round(statistics.median(x["cpu_us_per_msg"] for x in rs), 3),
            "cpu_us_per_msg_runs": [round(x["cpu_us_per_msg"], 3) for x in rs],
        }
        for name, rs in runs.items()
    }
    print(json.dumps({"messages": args.messages, "rounds": args.rounds, "variants": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
