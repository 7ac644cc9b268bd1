"""Address keys groupType and groupProtocol: their librdkafka settings and the combinations
refused at parse time (unit tests: no broker)."""

from __future__ import annotations

import pytest

from trpc_kafka import ConfigError, get_default_config
from trpc_kafka._config.address import parse_address
from trpc_kafka._config.rdkafka import (
    consumer_settings,
    share_consumer_settings,
    share_group_configs,
)

BASE = "127.0.0.1:9092?topics=t&group=g"


def test_defaults_are_the_classic_protocol_and_a_consumer_group() -> None:
    cfg = parse_address(BASE)
    assert (cfg.group_type, cfg.group_protocol) == ("consumer", "classic")
    settings = consumer_settings(cfg)
    assert "group.protocol" not in settings
    assert settings["partition.assignment.strategy"] == "cooperative-sticky"


@pytest.mark.parametrize(("strategy", "assignor"), [("sticky", "uniform"), ("range", "range")])
def test_consumer_protocol_maps_strategy_to_the_brokers_assignor(
    strategy: str, assignor: str
) -> None:
    cfg = parse_address(f"{BASE}&groupProtocol=consumer&strategy={strategy}")
    settings = consumer_settings(cfg)
    assert settings["group.protocol"] == "consumer"
    assert settings["group.remote.assignor"] == assignor
    assert "partition.assignment.strategy" not in settings
    assert "session.timeout.ms" not in settings


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("groupProtocol=consumer&strategy=roundrobin", "strategy", "uniform and range"),
        ("groupProtocol=consumer&groupSessionTimeout=7000", "groupSessionTimeout", "broker"),
        (
            "groupProtocol=consumer&rdkafka.heartbeat.interval.ms=500",
            "rdkafka.heartbeat.interval.ms",
            "librdkafka refuses",
        ),
        (
            "groupProtocol=consumer&rdkafka.partition.assignment.strategy=range",
            "rdkafka.partition.assignment.strategy",
            "groupProtocol=consumer",
        ),
        ("rdkafka.group.protocol=consumer", "rdkafka.group.protocol", "groupProtocol"),
        ("groupProtocol=eager", "groupProtocol", "classic | consumer"),
        ("groupType=queue", "groupType", "consumer | share"),
        ("groupType=share&groupProtocol=consumer", "groupProtocol", "protocol of their own"),
        ("groupType=share&strategy=range", "strategy", "the broker assigns"),
        ("groupType=share&groupSessionTimeout=7000", "groupSessionTimeout", "share.session"),
        (
            "groupType=share&rdkafka.auto.offset.reset=earliest",
            "rdkafka.auto.offset.reset",
            "groupType=share",
        ),
    ],
)
def test_combinations_that_cannot_work_are_config_errors_naming_the_key(
    extra: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(f"{BASE}&{extra}")
    assert info.value.key == key
    assert words in str(info.value)


def test_a_code_built_config_is_checked_the_same_way() -> None:
    cfg = get_default_config()
    cfg.brokers, cfg.topics, cfg.group = ["127.0.0.1:9092"], ["t"], "g"
    cfg.group_protocol = "consumer"
    cfg.strategy = "roundrobin"
    with pytest.raises(ConfigError, match="strategy"):
        cfg.validate()


def test_share_settings_acknowledge_explicitly_and_leave_group_configs_to_the_broker() -> None:
    cfg = parse_address(f"{BASE}&groupType=share")
    settings = share_consumer_settings(cfg)
    assert settings["share.acknowledgement.mode"] == "explicit"
    assert settings["max.poll.records"] == 100
    for refused in (
        "partition.assignment.strategy",
        "session.timeout.ms",
        "auto.offset.reset",
        "isolation.level",
        "enable.auto.commit",
        "allow.auto.create.topics",
    ):
        assert refused not in settings
    assert share_group_configs(cfg) == {}
    batch = parse_address(f"{BASE}&groupType=share&batch=25&rdkafka.fetch.wait.max.ms=50")
    assert share_consumer_settings(batch)["max.poll.records"] == 25
    assert share_consumer_settings(batch)["fetch.wait.max.ms"] == "50"


def test_share_group_configs_come_from_initial_and_isolation_level() -> None:
    cfg = parse_address(f"{BASE}&groupType=share&initial=oldest&isolationLevel=ReadCommitted")
    assert share_group_configs(cfg) == {
        "share.auto.offset.reset": "earliest",
        "share.isolation.level": "read_committed",
    }


def test_share_settings_are_accepted_by_librdkafkas_share_consumer() -> None:
    from confluent_kafka import ShareConsumer

    cfg = parse_address(f"{BASE}&groupType=share&batch=10&fetchMax=2000000")
    consumer = ShareConsumer({**share_consumer_settings(cfg), "log_level": 0})
    consumer.close()
