"""Partition choice of the ``partitioner`` key, as Sarama makes it.

Each is a value (:func:`parse_partitioner`) that a proxy holds and calls; the pool only answers
partition counts.

- ``random``: left to librdkafka (its ``random`` partitioner), every message.
- ``roundrobin``: a counter per topic over the topic's partition count (Sarama's
  ``roundRobinPartitioner``), kept by the partitioner value (one per proxy).
- ``hash``: Sarama's default ``hashPartitioner``: FNV-1a 32 of the key bytes, taken as a signed
  32-bit integer, remainder with Go's truncated semantics, negated if negative. librdkafka's own
  ``fnv1a`` partitioner takes the hash unsigned and so picks other partitions for about half of
  the keys; Go and Python producers sharing a topic keep per-key order only with this one.
  Keyless messages go to a random partition (librdkafka), as in Sarama.
"""

from __future__ import annotations

import itertools
from typing import Final

from trpc_kafka._producer.message import Payload, payload_problem

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


class Partitioner:
    """The ``partitioner`` of a target as a value: each proxy holds one and calls it per send.

    :meth:`early` answers what needs no partition count (None: ask :meth:`choose` once the
    count is known); the pool only answers partition counts. ``needs_count`` False means
    :meth:`early` always answers, so a proxy never looks a count up.
    """

    __slots__ = ()
    name: str = ""
    needs_count: bool = True

    def early(self, topic: str, key: Payload) -> int | None:
        """The partition when no count is needed (``UNASSIGNED``: librdkafka picks), else None.

        Raises the 121 error of a key this partitioner cannot use.
        """
        return None

    def choose(self, topic: str, key: Payload, count: int) -> int:
        """The partition among ``count`` (called only when :meth:`early` answered None)."""
        return UNASSIGNED

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomPartitioner(Partitioner):
    """``random``: librdkafka's own ``random`` partitioner picks, per message."""

    __slots__ = ()
    name = "random"
    needs_count = False

    def early(self, topic: str, key: Payload) -> int | None:
        return UNASSIGNED


class RoundRobin(Partitioner):
    """``roundrobin``: a counter per topic cycling 0..n-1 (Sarama's ``roundRobinPartitioner``).

    The counters belong to this value, so to the proxy holding it (thread-safe under the GIL:
    ``next()`` of an ``itertools.count`` is atomic).
    """

    __slots__ = ("_counters",)
    name = "roundrobin"

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def choose(self, topic: str, key: Payload, count: int) -> int:
        return self.next(topic, count)

    def next(self, topic: str, partitions: int) -> int:
        counter = self._counters.get(topic)
        if counter is None:
            counter = self._counters.setdefault(topic, itertools.count())
        return next(counter) % partitions


class HashPartitioner(Partitioner):
    """``hash``: Sarama's ``hashPartitioner`` (see the module docstring); keyless: random."""

    __slots__ = ()
    name = "hash"

    def early(self, topic: str, key: Payload) -> int | None:
        if key is None:
            return UNASSIGNED  # keyless: random, as Sarama
        if not isinstance(key, (bytes, str)):
            raise payload_problem(topic, key, None, None)
        return None

    def choose(self, topic: str, key: Payload, count: int) -> int:
        if key is None:
            return UNASSIGNED
        assert isinstance(key, (bytes, str))
        try:
            return hash_partition(key, count)
        except UnicodeEncodeError:  # a str key with a lone surrogate
            raise payload_problem(topic, key, None, None) from None


_PARTITIONERS: Final[dict[str, type[Partitioner]]] = {
    "random": RandomPartitioner,
    "roundrobin": RoundRobin,
    "hash": HashPartitioner,
}


def parse_partitioner(name: str) -> Partitioner:
    """A new partitioner value for the ``partitioner`` key (validated at address parse time)."""
    return _PARTITIONERS[name]()
