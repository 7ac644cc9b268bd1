"""The token bucket of limiterRate / limiterBurst (limiter.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.consumer._util import load_factor, wait_until
from trpc_kafka._consumer.limiter import TokenBucket


async def test_token_bucket_rate_and_burst() -> None:
    bucket = TokenBucket(rate=50, burst=5)
    start = time.monotonic()
    for _ in range(5):
        await bucket.acquire()
    assert time.monotonic() - start < 0.05 * load_factor(), "the burst is free"
    for _ in range(10):
        await bucket.acquire()
    assert 0.17 <= time.monotonic() - start < 0.5 * load_factor(), "then 50 per second"


async def test_token_bucket_batch_larger_than_burst_and_cancel_refunds() -> None:
    bucket = TokenBucket(rate=100, burst=0)
    start = time.monotonic()
    await bucket.acquire(1)
    await bucket.acquire(20)  # more than the bucket holds: waits for the deficit
    assert 0.17 <= time.monotonic() - start < 0.5 * load_factor()
    waiter = asyncio.ensure_future(bucket.acquire(100))
    # Cancelled once it reserved its tokens (and sleeps on the deficit).
    await wait_until(lambda: bucket._tokens <= -99, what="the reservation")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    start = time.monotonic()
    await bucket.acquire(1)
    assert time.monotonic() - start < 0.3 * load_factor(), "a cancelled wait gives its tokens back"


async def test_token_bucket_rate_zero_lets_only_the_burst_through() -> None:
    bucket = TokenBucket(rate=0, burst=2)
    await bucket.acquire()
    await bucket.acquire()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(bucket.acquire(), 0.1)
