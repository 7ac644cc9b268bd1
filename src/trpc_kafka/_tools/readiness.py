"""When a starting local cluster is usable, and a restarted node back in it; else why not."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from typing import Final, NoReturn

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# Where it is defined: confluent_kafka.admin re-exports it without declaring it for mypy.
from confluent_kafka.cimpl import NewTopic

from trpc_kafka._kafka_errors import kafka_error_of
from trpc_kafka._tools import security
from trpc_kafka._tools.distribution import HOST, BrokerError, PortTakenError, log_excerpt
from trpc_kafka._tools.nodes import Node, children
from trpc_kafka._tools.security import Credentials

# The local broker logs under one name, as it did before it was split into modules.
log = logging.getLogger("trpc_kafka._tools.broker")

# The topic whose creation with replication factor N proves a cluster of N nodes usable.
PROBE_TOPIC: Final = "trpc-kafka-ready-probe"


def _quiet(*_: object) -> None:
    """librdkafka error callback: refused connections are expected while JVMs start."""


def wait_ready(nodes: Sequence[Node], deadline: float, timeout: float) -> None:
    """Until every node answers a metadata request listing all nodes as brokers."""
    admins = {
        node.node_id: AdminClient(
            {
                "bootstrap.servers": f"{HOST}:{node.plain_port}",
                "log_level": 0,
                # Retry soon: the default backoff grows to 10 s while the JVM is not up yet.
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 250,
            },
            error_cb=_quiet,
        )
        for node in nodes
    }
    try:
        pending = list(nodes)
        while True:
            for node in nodes:
                if not node.running():
                    _raise_exited(node)
            pending = [
                n for n in pending if not _answers(admins[n.node_id], n.plain_port, len(nodes))
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                node = pending[0]
                raise BrokerError(
                    f"broker node {node.node_id} (port {node.port}) was not ready within "
                    f"{timeout:g} s; log: {node.log}\n{log_excerpt(node.log)}"
                )
            time.sleep(0.1)
    finally:
        # Destroyed now, not when a caller drops a traceback that holds this frame.
        admins.clear()


def _admin(nodes: Sequence[Node]) -> AdminClient:
    """An admin client on the nodes' credential-free ports, quiet about refused connections."""
    return AdminClient(
        {
            "bootstrap.servers": ",".join(f"{HOST}:{node.plain_port}" for node in nodes),
            "log_level": 0,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 250,
        },
        error_cb=_quiet,
    )


def wait_usable(nodes: Sequence[Node], deadline: float, timeout: float) -> None:
    """Until a topic replicated on every node exists with all replicas in sync; then delete it.

    Nodes answering metadata is not enough: the controller may not count a node as usable yet
    and reject a topic with replication factor N (INVALID_REPLICATION_FACTOR).
    """
    admin = _admin(nodes)
    spec = NewTopic(PROBE_TOPIC, num_partitions=1, replication_factor=len(nodes))
    last = "none"
    created = False
    while True:
        for node in nodes:
            if not node.running():
                _raise_exited(node)
        left = max(0.5, deadline - time.monotonic())
        try:
            if not created:
                futures = admin.create_topics([spec], operation_timeout=min(left, 10.0))
                try:
                    futures[PROBE_TOPIC].result(timeout=min(left, 15.0))
                except KafkaException as exc:
                    err = kafka_error_of(exc)
                    if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                created = True
            found = admin.list_topics(topic=PROBE_TOPIC, timeout=min(left, 3.0)).topics.get(
                PROBE_TOPIC
            )
            if found is not None and found.error is None and found.partitions:
                if all(
                    p.error is None and p.leader >= 0 and len(p.isrs) == len(nodes)
                    for p in found.partitions.values()
                ):
                    break
                last = "replicas not in sync yet"
            else:
                last = f"topic not in the metadata yet ({None if found is None else found.error})"
        except (KafkaException, concurrent.futures.TimeoutError) as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() > deadline:
            node = nodes[0]
            raise BrokerError(
                f"the {len(nodes)} node(s) answer but a topic with replication factor "
                f"{len(nodes)} was not usable within {timeout:g} s (last: {last}); "
                f"log: {node.log}\n{log_excerpt(node.log)}"
            )
        time.sleep(0.1)
    _delete_probe(admin, nodes, deadline)


def _delete_probe(admin: AdminClient, nodes: Sequence[Node], deadline: float) -> None:
    """Delete the probe topic and wait until no node lists it: users never see it."""
    per_node = [(node, _admin([node])) for node in nodes]
    deleted = False
    while True:
        if not deleted:
            try:
                for future in admin.delete_topics([PROBE_TOPIC], operation_timeout=10.0).values():
                    future.result(timeout=15.0)
                deleted = True
            except (KafkaException, concurrent.futures.TimeoutError) as exc:
                # UNKNOWN_TOPIC_OR_PART: an earlier attempt went through after all.
                err = kafka_error_of(exc)
                deleted = err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        if deleted:
            # Each node learns of the deletion from the metadata log, a moment apart.
            with contextlib.suppress(KafkaException):
                per_node = [
                    (node, client)
                    for node, client in per_node
                    if PROBE_TOPIC in client.list_topics(timeout=3.0).topics
                ]
            if not per_node:
                return
        if time.monotonic() > deadline:
            # The cluster is usable; a leftover probe topic is only untidy.
            log.warning("topic %s is still listed after the start's deadline", PROBE_TOPIC)
            return
        time.sleep(0.1)


def _rejoined(admin: AdminClient, node_id: int, cluster_size: int) -> str | None:
    """None once ``node_id`` is a broker again and in sync on all its partitions; else why not."""
    try:
        metadata = admin.list_topics(timeout=3.0)
    except KafkaException as exc:
        return str(exc)
    if node_id not in metadata.brokers:
        return f"node {node_id} not registered yet ({len(metadata.brokers)} of {cluster_size})"
    for topic in metadata.topics.values():
        for partition in topic.partitions.values():
            if node_id in partition.replicas and (
                node_id not in partition.isrs or partition.leader < 0
            ):
                return f"{topic.topic}[{partition.id}] not in sync on node {node_id} yet"
    return None


def wait_rejoined(
    started: Sequence[Node], cluster_size: int, deadline: float, timeout: float
) -> None:
    """Until each restarted node answers, is registered and caught up (start_node)."""
    admins = {node.node_id: _admin([node]) for node in started}
    try:
        pending = list(started)
        while True:
            for node in started:
                if not node.running():
                    _raise_exited(node)
            reasons = {}
            for node in pending:
                reason = _rejoined(admins[node.node_id], node.node_id, cluster_size)
                if reason is not None:
                    reasons[node.node_id] = reason
            pending = [node for node in pending if node.node_id in reasons]
            if not pending:
                return
            if time.monotonic() > deadline:
                node = pending[0]
                raise BrokerError(
                    f"node {node.node_id} (port {node.port}) did not rejoin the cluster within "
                    f"{timeout:g} s ({reasons[node.node_id]}); check that at least "
                    f"{cluster_size // 2 + 1} of the {cluster_size} nodes run (the controller "
                    f"quorum); log: {node.log}\n{log_excerpt(node.log)}"
                )
            time.sleep(0.2)
    finally:
        admins.clear()


def _raise_exited(node: Node) -> NoReturn:
    child = children.get(node.pid)
    code = "" if child is None else f" with exit code {child.returncode}"
    excerpt = log_excerpt(node.log)
    error = PortTakenError if "Address already in use" in excerpt else BrokerError
    raise error(
        f"broker node {node.node_id} (pid {node.pid}, port {node.port}) exited{code} during "
        f"start; log: {node.log}\n{excerpt}"
    )


def _answers(admin: AdminClient, port: int, brokers: int) -> bool:
    try:
        # A refused connection fails here at once, instead of a metadata request's timeout.
        socket.create_connection((HOST, port), timeout=0.5).close()
        # A loaded machine can take more than a second to answer.
        metadata = admin.list_topics(timeout=3.0)
    except (OSError, KafkaException):
        return False
    return len(metadata.brokers) >= brokers


def secure_ready(
    nodes: Sequence[Node], creds: Credentials, deadline: float, timeout: float
) -> None:
    """Grant alice her ACLs, then wait until each node's secured listener lets admin in."""
    try:
        security.grant_acls([f"{HOST}:{node.internal_port}" for node in nodes], deadline)
    except (KafkaException, TimeoutError) as exc:
        node = nodes[0]
        raise BrokerError(
            f"could not set up the ACLs of the secured cluster within {timeout:g} s: {exc}; "
            f"log: {node.log}\n{log_excerpt(node.log)}"
        ) from None
    settings: dict[str, str | int | float] = {
        **creds.client_settings(),
        "log_level": 0,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 250,
    }
    for node in nodes:
        errors: list[str] = []
        admin = AdminClient(
            {**settings, "bootstrap.servers": f"{HOST}:{node.port}"},
            error_cb=lambda err, seen=errors: seen.append(err.str()),
        )
        while True:
            try:
                admin.list_topics(timeout=1.0)
                break
            except KafkaException as exc:
                errors.append(str(exc))
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the {creds.protocol} listener of node {node.node_id} (port {node.port}) "
                    f"did not let admin in within {timeout:g} s (last error: "
                    f"{errors[-1] if errors else 'none'}); log: {node.log}\n{log_excerpt(node.log)}"
                )
