"""The in-memory cluster: topics of partitioned logs, consumer groups with committed offsets.

Everything is guarded by one condition variable (:attr:`Cluster.cond`): clients wait on it for
records, delivery reports and rebalances, and every change notifies it. No callback of a client
ever runs while it is held.

Groups follow Kafka's rebalance protocol in the small: a member joining or leaving (or a topic
appearing that members subscribe to) bumps the generation and computes a target assignment
(range, roundrobin, or sticky for librdkafka's cooperative-sticky). Each member moves to its
target inside its own ``consume()`` call, as librdkafka serves rebalance callbacks there: first
``on_revoke`` of what it gives up (eager strategies give up everything), then ``on_assign`` of
partitions their previous owner has released. So a partition is never held by two members, and
its new owner starts from the offset the old one committed in ``on_revoke``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError

TopicPart = tuple[str, int]
Header = tuple[str, "bytes | None"]
Record = tuple["bytes | None", "bytes | None", "list[Header] | None", int]
"""key, value, headers (None when the record has none), timestamp (ms since the epoch)."""

EAGER_STRATEGIES = ("range", "roundrobin")


def now_ms() -> int:
    return int(time.time() * 1000)


class Topic:
    __slots__ = ("logs", "name", "order")

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.logs: list[list[Record]] = [[] for _ in range(partitions)]
        self.order: list[tuple[int, int]] = []
        """(partition, offset) of every record in the order they were written."""


class Member:
    """One subscribed consumer of a group (the group's view of it)."""

    __slots__ = (
        "applied",
        "eager",
        "earliest",
        "group",
        "member_id",
        "owned",
        "strategy",
        "target",
        "topics",
    )

    def __init__(
        self, group: Group, member_id: str, topics: list[str], strategy: str, earliest: bool
    ) -> None:
        self.group = group
        self.earliest = earliest
        self.member_id = member_id
        self.topics = topics
        self.strategy = strategy
        self.eager = strategy in EAGER_STRATEGIES
        self.owned: set[TopicPart] = set()
        self.target: set[TopicPart] = set()
        self.applied = 0
        """The generation whose target this member has fully taken (eager strategies)."""

    def settled(self) -> bool:
        if self.eager and self.applied != self.group.generation:
            return False
        return self.owned == self.target


class Group:
    __slots__ = ("committed", "generation", "members", "name", "owner", "reset_marks", "stored")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[Member] = []
        self.generation = 0
        self.committed: dict[TopicPart, int] = {}
        self.stored: dict[TopicPart, int] = {}
        """The highest offset any member stored (handled + 1), committed or not yet."""
        self.owner: dict[TopicPart, Member] = {}
        self.reset_marks: dict[TopicPart, int] = {}
        """Where ``latest`` starts: the end of the partition when the group first needed it."""

    def settled(self) -> bool:
        return all(m.settled() for m in self.members)


class Cluster:
    def __init__(self, default_partitions: int, auto_create: bool) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.default_partitions = default_partitions
        self.auto_create = auto_create
        self.topics: dict[str, Topic] = {}
        self.groups: dict[str, Group] = {}
        self.down = False
        """No broker answers (:meth:`InMemoryKafka.unreachable`)."""
        self.failures: list[list[Any]] = []
        """Injected send failures: [KafkaError, topic or None, sends left]."""
        self.waiters = 0
        """Threads or tasks waiting for handling: consumers then return from consume() often,
        so their service stores handled offsets at once."""
        self._next_member = 0
        self._roundrobin: dict[str, int] = {}

    # -- topics (call with cond held) --------------------------------------------------------

    def topic(self, name: str, *, create: bool) -> Topic | None:
        found = self.topics.get(name)
        if found is None and create:
            found = self.create_topic(name, self.default_partitions)
        return found

    def create_topic(self, name: str, partitions: int) -> Topic:
        with self.cond:
            found = self.topics.get(name)
            if found is not None:
                return found
            created = self.topics[name] = Topic(name, partitions)
            for group in self.groups.values():
                if any(name in m.topics for m in group.members):
                    self.rebalance(group)
            self.cond.notify_all()
            return created

    def append(self, topic: Topic, partition: int, record: Record) -> int:
        log = topic.logs[partition]
        offset = len(log)
        log.append(record)
        topic.order.append((partition, offset))
        self.cond.notify_all()
        return offset

    def next_roundrobin(self, topic: Topic) -> int:
        n = self._roundrobin.get(topic.name, 0)
        self._roundrobin[topic.name] = n + 1
        return n % len(topic.logs)

    def take_failure(self, topic: str, *, queue_full: bool) -> Any:
        """The injected error the next send to ``topic`` gets (one use of its rule), or None.

        ``queue_full``: the rules of ``KafkaError._QUEUE_FULL``, which ``produce()`` raises as
        ``BufferError``, as librdkafka does; the others fail the delivery report.
        """
        for rule in self.failures:
            error, only, left = rule
            if (only is None or only == topic) and (
                error.code() == KafkaError._QUEUE_FULL
            ) == queue_full:
                if left is not None:
                    rule[2] = left - 1
                    if rule[2] <= 0:
                        self.failures.remove(rule)
                return error
        return None

    def end_offset(self, tp: TopicPart) -> int:
        topic = self.topics.get(tp[0])
        if topic is None or tp[1] >= len(topic.logs):
            return 0
        return len(topic.logs[tp[1]])

    # -- groups (call with cond held) ---------------------------------------------------------

    def join(
        self, group_name: str, topics: list[str], strategy: str, *, earliest: bool, create: bool
    ) -> Member:
        group = self.groups.get(group_name)
        if group is None:
            group = self.groups[group_name] = Group(group_name)
        self._next_member += 1
        member = Member(
            group, f"memory-{group_name}-{self._next_member}", topics, strategy, earliest
        )
        for name in topics:
            self.topic(name, create=create)
        group.members.append(member)
        self.rebalance(group)
        return member

    def leave(self, member: Member) -> None:
        group = member.group
        if member in group.members:
            group.members.remove(member)
            for tp in list(member.owned):
                if group.owner.get(tp) is member:
                    del group.owner[tp]
            member.owned.clear()
            self.rebalance(group)

    def rebalance(self, group: Group) -> None:
        group.generation += 1
        members = sorted(group.members, key=lambda m: m.member_id)
        if not members:
            self.cond.notify_all()
            return
        if members[0].strategy == "roundrobin":
            targets = self._roundrobin_assign(members)
        elif members[0].eager:
            targets = self._range_assign(members)
        else:
            targets = self._sticky_assign(members)
        for member in members:
            member.target = targets[member.member_id]
            for tp in member.target:
                if tp not in group.committed and tp not in group.reset_marks:
                    group.reset_marks[tp] = 0 if member.earliest else self.end_offset(tp)
        self.cond.notify_all()

    def _partitions_of(self, members: Iterable[Member]) -> list[TopicPart]:
        names = sorted({t for m in members for t in m.topics if t in self.topics})
        return [(t, p) for t in names for p in range(len(self.topics[t].logs))]

    def _range_assign(self, members: list[Member]) -> dict[str, set[TopicPart]]:
        targets: dict[str, set[TopicPart]] = {m.member_id: set() for m in members}
        for name in sorted({t for m in members for t in m.topics if t in self.topics}):
            takers = [m for m in members if name in m.topics]
            count = len(self.topics[name].logs)
            per, extra = divmod(count, len(takers))
            start = 0
            for i, member in enumerate(takers):
                n = per + (1 if i < extra else 0)
                targets[member.member_id].update((name, p) for p in range(start, start + n))
                start += n
        return targets

    def _roundrobin_assign(self, members: list[Member]) -> dict[str, set[TopicPart]]:
        targets: dict[str, set[TopicPart]] = {m.member_id: set() for m in members}
        i = 0
        for tp in self._partitions_of(members):
            for _ in range(len(members)):
                member = members[i % len(members)]
                i += 1
                if tp[0] in member.topics:
                    targets[member.member_id].add(tp)
                    break
        return targets

    def _sticky_assign(self, members: list[Member]) -> dict[str, set[TopicPart]]:
        wanted = self._partitions_of(members)
        valid = set(wanted)
        targets = {m.member_id: {tp for tp in m.target if tp in valid} for m in members}
        taken: set[TopicPart] = set()
        for member in members:  # a partition claimed twice stays with the first member
            targets[member.member_id] -= taken
            taken |= targets[member.member_id]

        def lightest(topic: str) -> str | None:
            takers = [m.member_id for m in members if topic in m.topics]
            return min(takers, key=lambda mid: len(targets[mid])) if takers else None

        for tp in wanted:
            if tp not in taken:
                mid = lightest(tp[0])
                if mid is not None:
                    targets[mid].add(tp)
        moved = True
        while moved:  # move one partition at a time from the heaviest to a lighter member
            moved = False
            for heavy in sorted(targets, key=lambda mid: -len(targets[mid])):
                for tp in sorted(targets[heavy]):
                    mid = lightest(tp[0])
                    if mid is not None and len(targets[heavy]) - len(targets[mid]) > 1:
                        targets[heavy].discard(tp)
                        targets[mid].add(tp)
                        moved = True
                        break
                if moved:
                    break
        return targets

    def plan(self, member: Member) -> tuple[str, list[TopicPart]] | None:
        """The next rebalance step of ``member``: ("revoke" | "assign", partitions) or None."""
        group = member.group
        if member not in group.members:
            return None
        if member.eager:
            if member.applied == group.generation:
                return None
            if member.owned:
                return "revoke", sorted(member.owned)
            if all(group.owner.get(tp) in (None, member) for tp in member.target):
                return "assign", sorted(member.target)
            return None
        revoke = member.owned - member.target
        if revoke:
            return "revoke", sorted(revoke)
        free = [tp for tp in member.target - member.owned if group.owner.get(tp) is None]
        if free:
            return "assign", sorted(free)
        return None

    def revoked(self, member: Member, tps: list[TopicPart]) -> None:
        group = member.group
        for tp in tps:
            member.owned.discard(tp)
            if group.owner.get(tp) is member:
                del group.owner[tp]
        self.cond.notify_all()

    def assigned(self, member: Member, tps: list[TopicPart], generation: int) -> None:
        group = member.group
        for tp in tps:
            member.owned.add(tp)
            group.owner[tp] = member
        if member.eager:
            member.applied = generation
        self.cond.notify_all()

    def start_offset(self, member: Member, tp: TopicPart) -> int:
        group = member.group
        committed = group.committed.get(tp)
        if committed is not None:
            return committed
        mark = group.reset_marks.get(tp)
        if mark is not None:
            return mark
        return 0 if member.earliest else self.end_offset(tp)

    # -- handling progress --------------------------------------------------------------------

    def lagging(self, topics: set[str] | None, group_name: str | None) -> list[str]:
        """What is not handled yet: one line per partition of a subscribed group behind its end.

        An empty list: every record of ``topics`` (all when None) was handled (stored or
        committed) by every group subscribing to it (``group_name`` only, when given). A line
        without a partition: a topic no live group subscribes to.
        """
        behind: list[str] = []
        names = set(self.topics) if topics is None else topics
        for name in sorted(names):
            groups = [
                g
                for g in self.groups.values()
                if (group_name is None or g.name == group_name)
                and any(name in m.topics for m in g.members)
            ]
            if not groups:
                if topics is not None:
                    behind.append(f"topic {name!r}: no consumer group subscribes to it")
                continue
            topic = self.topics.get(name)
            if topic is None:
                continue
            for group in groups:
                for p, log in enumerate(topic.logs):
                    tp = (name, p)
                    done = max(group.stored.get(tp, -1), group.committed.get(tp, -1))
                    if done < 0:
                        done = group.reset_marks.get(tp, 0)
                    if done < len(log):
                        behind.append(
                            f"group {group.name!r} {name}[{p}]: handled up to offset {done}, "
                            f"end {len(log)}"
                        )
        return behind
