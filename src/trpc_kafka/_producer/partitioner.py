"""Partition choice of the ``partitioner`` key, as Sarama makes it.

- ``random``: left to librdkafka (its ``random`` partitioner), every message.
- ``roundrobin``: a counter per topic over the topic's partition count (Sarama's
  ``roundRobinPartitioner``), kept per producer.
- ``hash``: Sarama's default ``hashPartitioner``: FNV-1a 32 of the key bytes, taken as a signed
  32-bit integer, remainder with Go's truncated semantics, negated if negative. librdkafka's own
  ``fnv1a`` partitioner takes the hash unsigned and so picks other partitions for about half of
  the keys; Go and Python producers sharing a topic keep per-key order only with this one.
  Keyless messages go to a random partition (librdkafka), as in Sarama.
"""

from __future__ import annotations

import itertools
from typing import Final

FNV32_OFFSET: Final = 0x811C9DC5
FNV32_PRIME: Final = 0x01000193
_MASK32: Final = 0xFFFFFFFF
_SIGN32: Final = 0x80000000

UNASSIGNED: Final = -1
"""librdkafka's RD_KAFKA_PARTITION_UA: let librdkafka's partitioner choose."""


def fnv1a_32(data: bytes) -> int:
    """FNV-1a 32-bit hash of ``data`` as an unsigned integer (Go's ``fnv.New32a().Sum32()``)."""
    h = FNV32_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV32_PRIME) & _MASK32
    return h


def partition_of_hash(sum32: int, partitions: int) -> int:
    """Sarama's arithmetic: ``p := int32(sum32) % n; if p < 0 { p = -p }``.

    Go's ``%`` truncates toward zero, so for a negative ``h`` the result is ``-(|h| % n)``;
    negating gives ``|h| % n``. For ``h = -2**31`` Go's ``-h`` overflows but the remainder is
    taken first, so ``2**31 % n`` is still right.
    """
    signed = sum32 - (1 << 32) if sum32 & _SIGN32 else sum32
    return abs(signed) % partitions


def hash_partition(key: bytes | str, partitions: int) -> int:
    """The partition Sarama's hash partitioner picks for ``key`` among ``partitions``."""
    data = key.encode() if isinstance(key, str) else key
    return partition_of_hash(fnv1a_32(data), partitions)


class RoundRobin:
    """One counter per topic; ``next(topic, n)`` cycles 0..n-1 (thread-safe under the GIL)."""

    __slots__ = ("_counters",)

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def next(self, topic: str, partitions: int) -> int:
        counter = self._counters.get(topic)
        if counter is None:
            counter = self._counters.setdefault(topic, itertools.count())
        return next(counter) % partitions
