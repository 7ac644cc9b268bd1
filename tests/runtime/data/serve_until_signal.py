"""Serves signal_server.yaml with a printing transport until SIGINT or SIGTERM.

Prints ``ready`` once every service started; each step of the graceful stop prints a line, so
the test can check the order from stdout.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from trpc_kafka._runtime.server import Service, new_server, register_transport


class PrintingTransport:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def start(self) -> None:
        print(f"started {self.service.name}", flush=True)
        if self.service.address == "second":
            print("ready", flush=True)

    async def stop(self, timeout: float) -> None:
        await asyncio.sleep(0.05)  # some draining work: the stop must be awaited, not dropped
        print(f"stopped {self.service.name} within {timeout}", flush=True)


async def flush_hook() -> None:
    print("hook ran", flush=True)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    register_transport("printing", PrintingTransport)
    server = new_server(sys.argv[1])
    server.add_shutdown_hook(flush_hook)
    server.serve_forever()
    print("serve returned", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
