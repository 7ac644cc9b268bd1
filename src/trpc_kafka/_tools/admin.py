"""``trpc-kafka topics ...`` and ``trpc-kafka groups ...``: look at and change a cluster.

The same views as Kafka's ``kafka-topics`` and ``kafka-consumer-groups`` tools, as readable
tables, on the same address strings as the library (SASL and TLS keys included).
``groups reset-offsets`` only shows the plan unless ``--execute`` is given, as Kafka's tool does.
"""

from __future__ import annotations

import argparse
import concurrent.futures
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    ConsumerGroupTopicPartitions,
    TopicPartition,
)
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from trpc_kafka._tools.clients import (
    CliError,
    add_cluster_arguments,
    admin_client,
    cluster_config,
    print_table,
    topic_metadata,
    wait,
)
from trpc_kafka._tools.positions import Position, parse_position


def add_parsers(commands: Any) -> None:
    """Register ``topics`` and ``groups`` with their actions on the CLI's subparsers."""
    topics = commands.add_parser(
        "topics", help="list, create, describe or delete topics", description=__doc__
    )
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="topics with partition and replica counts")
    add_cluster_arguments(listing)
    listing.add_argument("--all", action="store_true", help="include internal topics (__*)")
    listing.set_defaults(handler=_topics_list)

    create = actions.add_parser("create", help="create a topic")
    add_cluster_arguments(create)
    create.add_argument("topic")
    create.add_argument("-p", "--partitions", type=int, default=1, help="(default: 1)")
    create.add_argument("-r", "--replication-factor", type=int, default=1, help="(default: 1)")
    create.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a topic config, e.g. retention.ms=3600000 (repeatable)",
    )
    create.set_defaults(handler=_topics_create)

    describe = actions.add_parser(
        "describe", help="partitions (leader, replicas, in-sync, offsets) and configs"
    )
    add_cluster_arguments(describe)
    describe.add_argument("topic")
    describe.set_defaults(handler=_topics_describe)

    delete = actions.add_parser("delete", help="delete a topic and its data")
    add_cluster_arguments(delete)
    delete.add_argument("topic")
    delete.set_defaults(handler=_topics_delete)

    groups = commands.add_parser(
        "groups", help="list and describe consumer groups, reset their offsets"
    )
    actions = groups.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="consumer groups with state and type")
    add_cluster_arguments(listing)
    listing.set_defaults(handler=_groups_list)

    describe = actions.add_parser(
        "describe", help="members and per-partition committed offset, end offset and lag"
    )
    add_cluster_arguments(describe)
    describe.add_argument("group")
    describe.set_defaults(handler=_groups_describe)

    reset = actions.add_parser(
        "reset-offsets",
        help="move a group's committed offsets (the group must have no active members)",
    )
    add_cluster_arguments(reset)
    reset.add_argument("group")
    reset.add_argument("-t", "--topic", required=True)
    reset.add_argument(
        "--to",
        required=True,
        metavar="POSITION",
        help="oldest, newest, an offset (e.g. 42), or a time (2026-01-31T12:00:00Z, or @ms)",
    )
    reset.add_argument(
        "--partition", type=int, action="append", help="only this partition (repeatable)"
    )
    reset.add_argument(
        "--execute", action="store_true", help="apply the plan (without it, only show it)"
    )
    reset.set_defaults(handler=_groups_reset)


def _topics_list(args: argparse.Namespace) -> int:
    admin = admin_client(cluster_config(args))
    metadata = wait(_future_of(admin.list_topics, timeout=15), "list topics")
    rows = []
    for name in sorted(metadata.topics):
        if name.startswith("__") and not args.all:
            continue
        topic = metadata.topics[name]
        replicas = {len(p.replicas) for p in topic.partitions.values()}
        rows.append((name, len(topic.partitions), max(replicas) if replicas else 0))
    print_table(("TOPIC", "PARTITIONS", "REPLICATION"), rows)
    return 0


def _topics_create(args: argparse.Namespace) -> int:
    configs = dict(_name_value(item, "--config") for item in args.config)
    if args.partitions < 1:
        raise CliError(f"--partitions {args.partitions}: must be at least 1")
    if args.replication_factor < 1:
        raise CliError(f"--replication-factor {args.replication_factor}: must be at least 1")
    admin = admin_client(cluster_config(args))
    new = NewTopic(
        args.topic,
        num_partitions=args.partitions,
        replication_factor=args.replication_factor,
        config=configs,
    )
    futures = admin.create_topics([new], operation_timeout=15)
    wait(futures[args.topic], f"create topic {args.topic!r}", args.topic)
    print(
        f"created topic {args.topic} ({args.partitions} partition(s), "
        f"replication factor {args.replication_factor})"
    )
    return 0


def _topics_describe(args: argparse.Namespace) -> int:
    admin = admin_client(cluster_config(args))
    topic = topic_metadata(admin, args.topic)
    partitions = sorted(topic.partitions.values(), key=lambda p: p.id)
    tps = [TopicPartition(args.topic, p.id) for p in partitions]
    low = _offsets(admin, tps, _spec("earliest"))
    high = _offsets(admin, tps, _spec("latest"))
    print(f"topic {args.topic}: {len(partitions)} partition(s)")
    print_table(
        ("PARTITION", "LEADER", "REPLICAS", "IN-SYNC", "OLDEST", "NEWEST", "MESSAGES"),
        [
            (
                p.id,
                p.leader,
                p.replicas,
                p.isrs,
                low.get(p.id),
                high.get(p.id),
                _difference(high.get(p.id), low.get(p.id)),
            )
            for p in partitions
        ],
    )
    resource = ConfigResource(ResourceType.TOPIC, args.topic)
    entries = wait(admin.describe_configs([resource])[resource], "describe configs", args.topic)
    changed = sorted(
        (name, entry.value)
        for name, entry in entries.items()
        if not entry.is_default and not entry.is_sensitive
    )
    print(f"configs set on the topic or broker ({len(changed)}; the others are Kafka's defaults):")
    if changed:
        print_table(("CONFIG", "VALUE"), changed)
    return 0


def _topics_delete(args: argparse.Namespace) -> int:
    admin = admin_client(cluster_config(args))
    topic_metadata(admin, args.topic)  # a clear "not found" before asking to delete
    futures = admin.delete_topics([args.topic], operation_timeout=15)
    wait(futures[args.topic], f"delete topic {args.topic!r}", args.topic)
    print(f"deleted topic {args.topic}")
    return 0


def _groups_list(args: argparse.Namespace) -> int:
    admin = admin_client(cluster_config(args))
    result = wait(admin.list_consumer_groups(request_timeout=15), "list groups")
    rows = [
        (
            g.group_id,
            _enum_name(g.state),
            _enum_name(getattr(g, "type", None)),
        )
        for g in sorted(result.valid, key=lambda g: g.group_id)
    ]
    print_table(("GROUP", "STATE", "TYPE"), rows)
    for error in result.errors:
        print(f"(a broker did not answer: {error})")
    return 0


def _groups_describe(args: argparse.Namespace) -> int:
    admin = admin_client(cluster_config(args))
    group = _describe_group(admin, args.group)
    members = sorted(group.members, key=lambda m: m.member_id)
    print(
        f"group {group.group_id}: {_enum_name(group.state)}, {len(members)} member(s), "
        f"assignor {group.partition_assignor or '-'}"
    )
    owner: dict[tuple[str, int], str] = {}
    for member in members:
        for tp in member.assignment.topic_partitions:
            owner[(tp.topic, tp.partition)] = member.client_id or member.member_id
    committed = _committed(admin, args.group)
    keys = sorted(set(committed) | set(owner))
    ends = _offsets(admin, [TopicPartition(t, p) for t, p in keys], _spec("latest"), keyed=True)
    rows = []
    for key in keys:
        offset = committed.get(key)
        end = ends.get(key)
        rows.append((key[0], key[1], offset, end, _difference(end, offset), owner.get(key)))
    if rows:
        print_table(("TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"), rows)
    else:
        print("no committed offsets and no assignments")
    if members:
        print_table(
            ("MEMBER", "CLIENT-ID", "HOST", "PARTITIONS"),
            [
                (m.member_id, m.client_id, m.host, len(m.assignment.topic_partitions))
                for m in members
            ],
        )
    return 0


def _groups_reset(args: argparse.Namespace) -> int:
    position = parse_position(args.to, "--to")
    admin = admin_client(cluster_config(args))
    group = _describe_group(admin, args.group, must_exist=False)
    if group is not None and group.members:
        raise CliError(
            f"group {args.group!r} has {len(group.members)} active member(s); stop them "
            f"first (Kafka only moves the offsets of an empty group)"
        )
    topic = topic_metadata(admin, args.topic)
    ids = sorted(topic.partitions)
    if args.partition:
        unknown = sorted(set(args.partition) - set(ids))
        if unknown:
            raise CliError(
                f"--partition {unknown[0]}: topic {args.topic!r} has partitions 0-{len(ids) - 1}"
            )
        ids = sorted(set(args.partition))
    targets = _targets(admin, args.topic, ids, position)
    committed = _committed(admin, args.group)
    print_table(
        ("TOPIC", "PARTITION", "COMMITTED", "NEW"),
        [(args.topic, p, committed.get((args.topic, p)), targets[p]) for p in ids],
    )
    if not args.execute:
        print("dry run: nothing changed (add --execute to apply)")
        return 0
    request = ConsumerGroupTopicPartitions(
        args.group, [TopicPartition(args.topic, p, targets[p]) for p in ids]
    )
    futures = admin.alter_consumer_group_offsets([request], request_timeout=15)
    result = wait(futures[args.group], f"reset offsets of group {args.group!r}", args.topic)
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise CliError(f"partition {failed[0].partition}: {failed[0].error.str()}")
    print(f"reset {len(ids)} partition(s) of group {args.group}")
    return 0


def _targets(admin: Any, topic: str, ids: list[int], position: Position) -> dict[int, int]:
    """The offset each partition moves to."""
    tps = [TopicPartition(topic, p) for p in ids]
    if position.kind == "offset":
        return dict.fromkeys(ids, position.value)
    if position.kind == "oldest":
        spec = _spec("earliest")
    elif position.kind == "newest":
        spec = _spec("latest")
    else:
        spec = OffsetSpec.for_timestamp(position.value)
    found = _offsets(admin, tps, spec)
    latest = _offsets(admin, tps, _spec("latest")) if position.kind == "time" else {}
    # No record at or after the time: the partition's end, as Kafka's tool does.
    return {p: (found[p] if found.get(p, -1) >= 0 else latest.get(p, 0)) for p in ids}


def _describe_group(admin: Any, group: str, *, must_exist: bool = True) -> Any:
    futures = admin.describe_consumer_groups([group], request_timeout=15)
    description = wait(futures[group], f"describe group {group!r}")
    dead = _enum_name(description.state) in ("DEAD", "UNKNOWN")
    if dead and not description.members:
        if must_exist:
            raise CliError(f"group {group!r}: not found (no members and no committed offsets)")
        return None
    return description


def _committed(admin: Any, group: str) -> dict[tuple[str, int], int]:
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=15
    )
    result = wait(futures[group], f"committed offsets of group {group!r}")
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.topic_partitions
        if tp.offset != OFFSET_INVALID and tp.offset >= 0
    }


def _offsets(admin: Any, tps: list[TopicPartition], spec: Any, *, keyed: bool = False) -> Any:
    """Offsets of ``tps`` for ``spec``, by partition id (or by (topic, partition))."""
    if not tps:
        return {}
    futures = admin.list_offsets({tp: spec for tp in tps}, request_timeout=15)
    out: dict[Any, int] = {}
    for tp, future in futures.items():
        info = wait(future, f"offsets of {tp.topic}[{tp.partition}]", tp.topic)
        out[(tp.topic, tp.partition) if keyed else tp.partition] = info.offset
    return out


def _future_of(fn: Any, **kwargs: Any) -> Any:
    """``fn(**kwargs)`` (a blocking call) as a completed future, for :func:`wait`."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    try:
        future.set_result(fn(**kwargs))
    except Exception as exc:  # handed to wait(), which reports it
        future.set_exception(exc)
    return future


def _spec(which: str) -> Any:
    """``OffsetSpec.earliest()`` or ``.latest()`` (untyped in confluent-kafka)."""
    return getattr(OffsetSpec, which)()


def _difference(end: int | None, start: int | None) -> int | None:
    if end is None or start is None or end < 0 or start < 0:
        return None
    return max(end - start, 0)


def _enum_name(value: Any) -> str:
    if value is None:
        return "-"
    return str(getattr(value, "name", value))


def _name_value(item: str, flag: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise CliError(f"{flag} {item!r}: expected NAME=VALUE")
    return name, value
