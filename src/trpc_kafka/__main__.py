"""``python -m trpc_kafka``: the ``trpc-kafka`` command line."""

from trpc_kafka._tools.cli import main

raise SystemExit(main())
