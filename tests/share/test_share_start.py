"""Start of a share group member, unit tests (a fake admin client, no broker)."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import trpc_kafka
from trpc_kafka import ConfigError, ConsumerMessage, Context
from trpc_kafka._consumer import share
from trpc_kafka._runtime.server import Server, Service


class _RefusingAdmin:
    """An admin client whose group config changes are refused as by a cluster's ACLs."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def incremental_alter_configs(self, resources: list[Any], **_: Any) -> dict[Any, Any]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_exception(KafkaException(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)))
        return {resources[0]: future}


async def test_group_configs_the_member_cannot_set_fail_the_start_naming_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(share, "AdminClient", _RefusingAdmin)
    server = Server(max_close_wait=1)
    server.add_service(
        Service(
            "worker",
            address="127.0.0.1:1?topics=t&group=jobs&groupType=share&initial=oldest"
            "&isolationLevel=ReadCommitted",
        )
    )

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        pass

    trpc_kafka.register_kafka_handler_service(server, handle)
    with pytest.raises(ConfigError) as info:
        await server.serve()
    text = str(info.value)
    assert "share.auto.offset.reset=earliest, share.isolation.level=read_committed" in text
    assert "'jobs'" in text and "ALTER_CONFIGS" in text
    assert "worker" in text
