"""``make demo``: the project's main job in one command.

Starts a local broker, runs the example consumer service (examples/consumer) in its own
process, sends messages with the example producer (examples/producer), prints what the consumer
handled, then stops the consumer with SIGTERM (a graceful shutdown) and the broker. Exits 0 only
if every message sent was handled by both services.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from trpc_kafka._tools.broker import LocalBroker, create_topic

ROOT = Path(__file__).resolve().parent.parent
ORDERS = 5
EXPECTED = ORDERS + 2  # the acked sends, one produce() and one fire-and-forget send
TIMEOUT = 60.0


def _reader(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line.rstrip("\n"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(ROOT / ".kafka" / "demo"), help="broker state dir")
    broker = LocalBroker(parser.parse_args().dir)
    print("starting a local Kafka broker ...", flush=True)
    bootstrap = broker.start()
    print(f"broker: {bootstrap}", flush=True)
    consumer: subprocess.Popen[str] | None = None
    try:
        create_topic(bootstrap, "demo-orders", partitions=3)
        env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "PYTHONUNBUFFERED": "1"}
        consumer = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "consumer" / "service.py")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_reader, args=(consumer, lines), daemon=True).start()
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "producer" / "send_orders.py"), str(ORDERS)],
            env=env,
            check=True,
        )
        handled = audited = 0
        deadline = time.monotonic() + TIMEOUT
        while (handled < EXPECTED or audited < EXPECTED) and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith(("handled ", "audited ")):
                print(f"  consumer: {line}", flush=True)
            if line.startswith("handled "):
                handled += 1
            elif line.startswith("audited batch of "):
                audited += int(line.split()[3])
        print(f"handled {handled}/{EXPECTED} messages, audited {audited}/{EXPECTED}", flush=True)
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=30)
        while not lines.empty():
            print(f"  consumer: {lines.get()}", flush=True)
        ok = handled == EXPECTED and audited == EXPECTED and consumer.returncode == 0
        print("demo OK" if ok else "demo FAILED", flush=True)
        return 0 if ok else 1
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
        broker.stop()
        print("broker stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
