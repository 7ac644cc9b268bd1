"""What the observability filters (``otel``, ``prometheus``) share."""

from __future__ import annotations

from trpc_kafka._consumer.raw import RAW_KEY, Claim
from trpc_kafka._runtime.context import Context


def claim_of(ctx: Context) -> Claim | None:
    """The partition claim of a handled message's context, or None.

    A consumer's own context keeps it in a slot: read there, without ``ctx.value()``, which
    makes the context's values dict on first use (~3 us a message). A context a filter
    copied carries it in its values.
    """
    claim = getattr(ctx, "_claim", None)
    if claim is None:
        claim = ctx.value(RAW_KEY)
    return claim if isinstance(claim, Claim) else None
