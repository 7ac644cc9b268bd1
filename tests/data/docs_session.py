"""Runs the code blocks of one documentation section in order, as a reader would.

Usage: ``python docs_session.py BLOCKS.json``; the file is a list of ``{"kind": "python" |
"file", "code": ..., "name": ...}``. Python blocks share one namespace (the section reads as one
program); a ``file`` block is written to ``name`` in the working directory. Before each block a
line ``@@block N`` goes to stdout so that the test can act while a block runs (e.g. SIGTERM a
server once it serves).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    blocks = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        print(f"@@block {i}", flush=True)
        if block["kind"] == "file":
            Path(block["name"]).write_text(block["code"], encoding="utf-8")
        else:
            exec(compile(block["code"], f"<{block['where']}>", "exec"), namespace)
    print("@@done", flush=True)


if __name__ == "__main__":
    main()
