"""Helpers of the share group tests: addresses, group configs, a check that nothing is left."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from confluent_kafka import AcknowledgeType, Producer, ShareConsumer
from confluent_kafka.admin import AdminClient

# Where they are defined: confluent_kafka.admin re-exports them without declaring it for mypy.
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType

from tests.consumer._util import new_group


def share_address(bootstrap: str, topic: str, group: str, extra: str = "") -> str:
    """A share group member's address reading from the oldest record, with fast retries."""
    keys = {
        "topics": topic,
        "group": group,
        "groupType": "share",
        "initial": "oldest",
        "retryInterval": "50",
    }
    for item in extra.split("&") if extra else ():
        key, _, value = item.partition("=")
        keys[key] = value
    return f"{bootstrap}?" + "&".join(f"{k}={v}" for k, v in keys.items())


def set_group_configs(bootstrap: str, group: str, **configs: str) -> None:
    """Set share group configs, e.g. ``share_record_lock_duration_ms="2000"``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
            for k, v in configs.items()
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def produce_small_batches(bootstrap: str, topic: str, values: Iterable[bytes]) -> None:
    """Produce in batches of at most 10 records: the broker hands out whole producer batches,
    so small ones spread over the members of a share group."""
    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 10, "linger.ms": 5})
    for value in values:
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0


def available(bootstrap: str, topic: str, group: str, timeout: float = 60.0) -> list[bytes]:
    """Records a new member of share group ``group`` can still acquire: empty when every record
    was accepted or rejected. A sentinel record written now marks the end (the broker hands out
    available records in offset order), so the answer is known once it arrives; the sentinel is
    accepted, the others released."""
    sentinel = f"sentinel-{uuid.uuid4().hex}".encode()
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, sentinel)
    assert producer.flush(30) == 0
    consumer = ShareConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "share.acknowledgement.mode": "explicit",
            "log_level": 3,
        }
    )
    found: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"the sentinel did not arrive in {timeout}s"
            done = False
            for record in consumer.poll(0.5):
                if record.error() is not None:
                    continue
                if record.value() == sentinel:
                    consumer.acknowledge(record, AcknowledgeType.ACCEPT)
                    done = True
                else:
                    found.append(record.value() or b"")
                    consumer.acknowledge(record, AcknowledgeType.RELEASE)
            if done:
                return found
    finally:
        consumer.close()


__all__ = ["available", "new_group", "produce_small_batches", "set_group_configs", "share_address"]
