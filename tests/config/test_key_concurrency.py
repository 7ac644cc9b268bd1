"""The ``keyConcurrency`` key: its range, and the modes it cannot combine with, refused at load."""

from __future__ import annotations

import pytest

from trpc_kafka._config.address import get_default_config, parse_address
from trpc_kafka._config.errors import ConfigError

BASE = "127.0.0.1:9092?topics=t&group=g"


def test_default_is_one_and_values_parse() -> None:
    assert get_default_config().key_concurrency == 1
    assert parse_address(BASE).key_concurrency == 1
    assert parse_address(f"{BASE}&keyConcurrency=64").key_concurrency == 64
    assert parse_address(f"{BASE}&keyConcurrency=10000").key_concurrency == 10000


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "10001", "1.5", "99999999999999999999"])
def test_bad_values_name_the_key_the_value_and_the_range(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(f"{BASE}&keyConcurrency={raw}")
    text = str(info.value)
    assert "'keyConcurrency'" in text
    assert repr(raw) in text
    assert "an integer from 1 to 10000" in text
    assert info.value.key == "keyConcurrency"


def test_an_empty_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="'keyConcurrency' has an empty value"):
        parse_address(f"{BASE}&keyConcurrency=")


def test_refused_with_a_batch_handler() -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(f"{BASE}&keyConcurrency=8&batch=10")
    text = str(info.value)
    assert "'keyConcurrency' (8)" in text and "'batch' (10)" in text
    assert info.value.key == "keyConcurrency"
    # One of them at its default is fine.
    parse_address(f"{BASE}&keyConcurrency=1&batch=10")
    parse_address(f"{BASE}&keyConcurrency=8&batch=0")


def test_refused_with_a_share_group() -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(f"{BASE}&keyConcurrency=8&groupType=share")
    assert "groupType=share" in str(info.value)
    assert info.value.key == "keyConcurrency"
    parse_address(f"{BASE}&keyConcurrency=8&groupProtocol=consumer")


def test_a_code_built_config_is_checked_too() -> None:
    cfg = get_default_config()
    cfg.key_concurrency = 0
    with pytest.raises(ConfigError, match="keyConcurrency"):
        cfg.validate()
    cfg.key_concurrency = 4
    cfg.batch = 2
    with pytest.raises(ConfigError, match="'batch'"):
        cfg.validate()
