"""Read-only views of the consumer group session and the partition claim (reference Q13).

The reference exposes Sarama's ``ConsumerGroupSession`` and ``ConsumerGroupClaim`` through
``GetRawSaramaContext`` for monitoring and logs, with the warning that calling their write
methods is undefined behaviour. Here the views hold values only: nothing in them can commit,
seek or change the assignment, and no librdkafka object is reachable through them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final, Protocol

from trpc_kafka._runtime.context import Context


@dataclass(frozen=True, slots=True)
class GroupSessionView:
    """The consumer group membership of the service, as of its latest rebalance.

    ``generation_id`` is the group generation librdkafka joined with. librdkafka has no direct
    getter for it; it is read from the group metadata librdkafka exports for transactions
    (``consumer_group_metadata()``). None when that format is not recognised or the member has
    not joined yet; never a made-up number.
    """

    group: str
    member_id: str
    generation_id: int | None
    assignment: tuple[tuple[str, int], ...]
    """(topic, partition) pairs assigned to this member, sorted."""


@dataclass(frozen=True, slots=True)
class ClaimView:
    """The partition the message came from.

    ``initial_offset`` is the offset of the first message delivered to this service for the
    current assignment of the partition: where consumption (re)started, i.e. the committed
    offset or the ``initial`` position of a new group. ``high_watermark`` is the offset the next
    record written to the partition will get, as last reported by the broker in a fetch
    response (librdkafka's cached value, no request is sent); None when not known yet.
    """

    topic: str
    partition: int
    initial_offset: int
    high_watermark: int | None


@dataclass(frozen=True, slots=True)
class RawKafkaContext:
    """``session`` and ``claim`` of the message being handled; for monitoring only."""

    session: GroupSessionView
    claim: ClaimView
    delivery_count: int | None = None
    """Share groups (``groupType=share``): how many times the broker has delivered this record,
    this delivery included (1 the first time). None for a consumer group."""


class ClaimSource(Protocol):
    """What the transport offers a claim: the current session and cached watermarks."""

    def session_view(self) -> GroupSessionView: ...

    def high_watermark(self, topic: str, partition: int) -> int | None: ...


class Claim:
    """Internal: put into a handler's context; turned into a frozen view on request."""

    __slots__ = ("_source", "initial_offset", "partition", "topic")

    def __init__(self, source: ClaimSource, topic: str, partition: int) -> None:
        self._source = source
        self.topic = topic
        self.partition = partition
        self.initial_offset = -1

    def view(self) -> RawKafkaContext:
        source = self._source
        return RawKafkaContext(
            session=source.session_view(),
            claim=ClaimView(
                topic=self.topic,
                partition=self.partition,
                initial_offset=self.initial_offset,
                high_watermark=source.high_watermark(self.topic, self.partition),
            ),
        )


RAW_KEY: Final = object()
"""The context value key under which a consumer context carries its :class:`Claim`."""


def get_raw_kafka_context(ctx: Context) -> RawKafkaContext | None:
    """The group session and partition claim of the message ``ctx`` belongs to.

    None when ``ctx`` is not the context of a handled Kafka message (as the reference's
    ``ok == false``). The result is a snapshot made now; call again for fresh values.
    """
    claim = ctx.value(RAW_KEY)
    if not isinstance(claim, Claim):
        return None
    return claim.view()


_CGMD_MAGIC: Final = b"CGMDv2:"
_INT32: Final = struct.Struct("=i")  # librdkafka writes the generation in host byte order


def generation_of(group_metadata: Any) -> int | None:
    """The generation id in librdkafka's serialised consumer group metadata, else None.

    The format (``rd_kafka_consumer_group_metadata_write``): magic ``CGMDv2:``, the generation
    as a host-order int32, then group id, member id... A generation < 0 means not joined.
    """
    if not isinstance(group_metadata, bytes) or not group_metadata.startswith(_CGMD_MAGIC):
        return None
    start = len(_CGMD_MAGIC)
    if len(group_metadata) < start + _INT32.size:
        return None
    (generation,) = _INT32.unpack_from(group_metadata, start)
    return int(generation) if generation >= 0 else None
