"""The service-wide token bucket of ``limiterRate`` / ``limiterBurst``.

Same model as Go's ``golang.org/x/time/rate`` limiter that the reference uses: tokens refill at
``rate`` per second up to ``burst``; handling a message takes one token (a batch takes one per
message). Waiters reserve their tokens at once and sleep for the deficit, so several partitions
waiting together still get the configured rate in total, first come first served.

Differences, chosen because the Go behaviour is a trap: ``limiterBurst=0`` with a finite rate
means a bucket of one token (smooth pacing, no burst) instead of refusing every wait; a batch
larger than the burst waits for its whole deficit instead of failing. ``limiterRate=0`` is Go's
``Limit(0)``: the first ``limiterBurst`` messages pass, then nothing more.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``await bucket.acquire(n)`` returns once ``n`` tokens were taken."""

    __slots__ = ("_last", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        if rate < 0 or burst < 0:
            raise ValueError(f"rate and burst must be >= 0, got {rate}, {burst}")
        self.rate = float(rate)
        self.capacity = float(burst) if rate == 0 else float(max(burst, 1))
        self._tokens = self.capacity
        self._last = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        if self.rate:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self, n: int = 1) -> None:
        self._refill()
        if self.rate == 0 and self._tokens < n:
            await asyncio.get_running_loop().create_future()  # never: only a cancel ends it
        self._tokens -= n
        if self._tokens >= 0:
            return
        try:
            await asyncio.sleep(-self._tokens / self.rate)
        except asyncio.CancelledError:
            # Not handled after all: give the reservation back.
            self._tokens += n
            raise
