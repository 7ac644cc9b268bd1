"""The address parser: every reference key, its default, and the errors for bad input."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from trpc_kafka._config.address import (
    ADDRESS_KEYS,
    KafkaConfig,
    get_default_config,
    parse_address,
    redact_address,
    register_addr_config,
    resolve_address,
    unregister_addr_config,
)
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.keys import SPEC_LIST, SPECS, _to_int
from trpc_kafka._config.rdkafka import consumer_settings, producer_settings

# Every key of ../shared/reference/parameters.md (the reference plugin, v1.2.0).
REFERENCE_KEYS = {
    "clientid", "topic", "topics", "group", "async", "compression", "version", "strategy",
    "partitioner", "fetchDefault", "fetchMax", "maxMessageBytes", "flushMessages",
    "flushMaxMessages", "flushBytes", "flushFrequency", "initial", "maxWaitTime", "batch",
    "batchFlush", "requiredAcks", "maxRetry", "retryInterval", "trpcMeta", "idempotent",
    "netMaxOpenRequests", "maxProcessingTime", "netDailTimeout", "netReadTimeout",
    "netWriteTimeout", "groupSessionTimeout", "groupRebalanceTimeout", "groupRebalanceRetryMax",
    "isolationLevel", "metadataRetryMax", "metadataRetryBackoff", "metadataRefreshFrequency",
    "metadataFull", "metadataAllowAutoTopicCreation", "user", "password", "mechanism",
    "protocol", "discover", "namespace", "limiterRate", "limiterBurst",
}  # fmt: skip


def test_every_reference_key_is_known() -> None:
    assert set(ADDRESS_KEYS) >= REFERENCE_KEYS
    # Ours, beyond the reference.
    assert set(ADDRESS_KEYS) - REFERENCE_KEYS == {
        "deadLetterTopic", "tlsCAFile", "tlsCertFile", "tlsKeyFile", "tlsKeyPassword",
        "tlsVerifyHostname", "groupType", "groupProtocol", "keyConcurrency",
    }  # fmt: skip


def test_defaults_are_the_reference_defaults() -> None:
    cfg = get_default_config()
    assert cfg.client_id == "trpcgo"
    assert cfg.compression == "gzip"
    assert cfg.version == "1.1.1.0"
    assert cfg.strategy == "sticky"
    assert cfg.partitioner == "random"
    assert (cfg.fetch_default, cfg.fetch_max) == (524288, 1048576)
    assert cfg.max_message_bytes == 131072
    assert (cfg.flush_messages, cfg.flush_max_messages, cfg.flush_bytes) == (0, 0, 0)
    assert cfg.flush_frequency_ms == 0
    assert cfg.initial == "newest"
    assert cfg.max_wait_time_ms == 1000
    assert (cfg.batch, cfg.batch_flush_ms) == (0, 2000)
    assert cfg.required_acks == -1
    assert (cfg.producer_max_retry, cfg.producer_retry_interval_ms) == (3, 100)
    assert (cfg.consumer_max_retry, cfg.consumer_retry_interval_ms) == (0, 3000)
    assert cfg.trpc_meta is False and cfg.idempotent is False
    assert cfg.net_max_open_requests == 5
    assert cfg.max_processing_time_ms == 100
    assert (cfg.net_dial_timeout_ms, cfg.net_read_timeout_ms, cfg.net_write_timeout_ms) == (
        30000,
        30000,
        30000,
    )
    assert (cfg.group_session_timeout_ms, cfg.group_rebalance_timeout_ms) == (10000, 60000)
    assert cfg.group_rebalance_retry_max == 4
    assert cfg.isolation_level == "ReadUncommitted"
    assert (cfg.metadata_retry_max, cfg.metadata_retry_backoff_ms) == (1, 1000)
    assert cfg.metadata_refresh_frequency_s == 120
    assert cfg.metadata_full is False and cfg.metadata_allow_auto_topic_creation is True
    assert cfg.limiter_rate is None and cfg.limiter_burst == 0


def test_producer_target_with_scheme_and_several_hosts() -> None:
    cfg = parse_address("kafka://10.0.0.1:9092,10.0.0.2:9093?topic=orders&clientid=svc&async=1")
    assert cfg.brokers == ["10.0.0.1:9092", "10.0.0.2:9093"]
    assert (cfg.topic, cfg.client_id, cfg.async_produce) == ("orders", "svc", True)


def test_consumer_address_without_scheme() -> None:
    cfg = parse_address("127.0.0.1:9092?topics=t1,t2&group=g&strategy=range&initial=oldest")
    assert cfg.topics == ["t1", "t2"]
    assert (cfg.group, cfg.strategy, cfg.initial) == ("g", "range", "oldest")
    assert cfg.consumer_client_id == "g"  # default client id: the group, as the reference


def test_explicit_client_id_wins_for_consumers() -> None:
    cfg = parse_address("h:1?topics=t&group=g&clientid=mine")
    assert cfg.consumer_client_id == "mine"


@pytest.mark.parametrize(
    ("query", "field", "expected"),
    [
        ("compression=none", "compression", "none"),
        ("compression=zstd", "compression", "zstd"),
        ("partitioner=hash", "partitioner", "hash"),
        ("partitioner=roundrobin", "partitioner", "roundrobin"),
        ("requiredAcks=0", "required_acks", 0),
        ("requiredAcks=1", "required_acks", 1),
        ("maxRetry=0", "max_retry", 0),
        ("retryInterval=250", "retry_interval_ms", 250),
        ("trpcMeta=true", "trpc_meta", True),
        ("idempotent=TRUE", "idempotent", True),
        ("isolationLevel=ReadCommitted", "isolation_level", "ReadCommitted"),
        ("version=0.10.2.0", "version", "0.10.2.0"),
        ("version=2.8.0", "version", "2.8.0"),
        ("limiterRate=12.5", "limiter_rate", 12.5),
        ("limiterBurst=3", "limiter_burst", 3),
        ("batch=500", "batch", 500),
        ("deadLetterTopic=dlq", "dead_letter_topic", "dlq"),
        ("metadataFull=1", "metadata_full", True),
        ("netDailTimeout=1500", "net_dial_timeout_ms", 1500),
    ],
)
def test_values_are_typed(query: str, field: str, expected: object) -> None:
    assert getattr(parse_address(f"h:1?{query}"), field) == expected


def test_max_retry_sets_both_sides() -> None:
    cfg = parse_address("h:1?maxRetry=7&retryInterval=20")
    assert (cfg.producer_max_retry, cfg.consumer_max_retry) == (7, 7)
    assert (cfg.producer_retry_interval_ms, cfg.consumer_retry_interval_ms) == (20, 20)


def test_values_are_percent_decoded_and_plus_is_kept() -> None:
    cfg = parse_address("h:1?user=u&password=a%26b+c%3D&mechanism=PLAIN")
    assert cfg.password == "a&b+c="


def test_rdkafka_pass_through() -> None:
    cfg = parse_address("h:1?rdkafka.linger.ms=7&rdkafka.queue.buffering.max.messages=1000")
    assert cfg.rdkafka == {"linger.ms": "7", "queue.buffering.max.messages": "1000"}


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("h:1?async=yes", "invalid value 'yes' for key 'async'; allowed: 1 (asynchronous) or 0"),
        ("h:1?foo=1", "unknown key 'foo'; allowed keys: clientid,"),
        ("h:1?topic=", "key 'topic' has an empty value"),
        ("h:1?compression=brotli", "'brotli' for key 'compression'; allowed: none | gzip"),
        ("h:1?partitioner=sticky", "allowed: random | roundrobin | hash"),
        ("h:1?strategy=cooperative", "allowed: sticky | range | roundrobin"),
        ("h:1?initial=earliest", "allowed: newest | oldest"),
        ("h:1?requiredAcks=2", "'2' for key 'requiredAcks'; allowed: an integer from -1 to 1"),
        ("h:1?maxMessageBytes=10", "allowed: an integer from 1000 to 1000000000"),
        ("h:1?fetchDefault=abc", "invalid value 'abc' for key 'fetchDefault'"),
        ("h:1?maxRetry=-1", "invalid value '-1' for key 'maxRetry'"),
        ("h:1?limiterRate=-2", "invalid value '-2.0' for key 'limiterRate'"),
        ("h:1?isolationLevel=read_committed", "allowed: ReadUncommitted | ReadCommitted"),
        ("h:1?version=2.x", "invalid value '2.x' for key 'version'"),
        ("h:1?version=0.9.0.1", "before 0.10.0 are not supported"),
        ("h:1?topic=a&topic=b", "key 'topic' is given twice"),
        ("h:1?topics=a,,b", "allowed: a comma-separated list of non-empty names"),
        ("h:1?topic", "key 'topic' has no '=value'"),
        ("h:1?", "ends with '?' but has no keys"),
        ("h:1?topic=a&&group=b", "empty '&&' item"),
        ("?topics=t", "names no broker"),
        ("h:99999?topic=t", "invalid broker 'h:99999'"),
        ("h?topic=t", "invalid broker 'h'"),
        ("h:1?idempotent=true&requiredAcks=1", "'requiredAcks' must be -1"),
        ("h:1?fetchDefault=2000000", "'fetchDefault' (2000000) must not exceed key 'fetchMax'"),
        ("h:1?discover=polaris", "key 'discover' (value 'polaris') needs key 'namespace'"),
        ("h:1?mechanism=SCRAM-SHA-512", "needs key 'user'"),
        ("h:1?user=u&password=p", "need key 'mechanism'"),
        ("h:1?mechanism=PLAIN&user=u", "needs key 'password'"),
        ("h:1?mechanism=GSSAPI&user=u&password=p", "allowed: SCRAM-SHA-512 | SCRAM-SHA-256"),
        ("h:1?rdkafka.linger.mss=3", "No such configuration property"),
        ("h:1?rdkafka.linger.ms=abc", "rejected by librdkafka: Invalid value"),
    ],
)
def test_bad_addresses_name_key_value_and_allowed(address: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(address)
    assert fragment in str(info.value)


def test_password_never_in_errors_or_repr(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-Pa55"
    caplog.set_level(logging.DEBUG)
    cfg = parse_address(f"h:1?mechanism=PLAIN&user=u&password={secret}")
    assert secret not in repr(cfg)
    assert secret not in str(cfg)
    for bad in (
        f"h:1?user=u&password={secret}",  # no mechanism
        f"h:1?mechanism=PLAIN&user=u&password={secret}&nope=1",
        f"h:1?mechanism=PLAIN&user=u&password={secret}&rdkafka.sasl.password=x&linger=1",
    ):
        with pytest.raises(ConfigError) as info:
            parse_address(bad)
        assert secret not in str(info.value)
        assert secret not in repr(info.value.args)
    assert secret not in caplog.text
    assert secret not in redact_address(f"kafka://h:1?password={secret}&topic=t")


def test_code_built_config_is_validated_on_registration() -> None:
    cfg = get_default_config()
    cfg.brokers = ["127.0.0.1:9092"]
    cfg.topics = ["t"]
    cfg.compression = "brotli"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="'brotli' for key 'compression'"):
        register_addr_config("fake_address", cfg)
    cfg.compression = "none"
    cfg.max_message_bytes = 5
    with pytest.raises(ConfigError, match="key 'maxMessageBytes'"):
        register_addr_config("fake_address", cfg)


def test_registered_config_replaces_parsing() -> None:
    cfg = get_default_config()
    cfg.brokers = ["127.0.0.1:9092"]
    cfg.topics = ["test_topic"]
    cfg.group = "g"
    register_addr_config("fake_address", cfg)
    try:
        cfg.topics.append("changed-after-registration")
        got = resolve_address("fake_address")
        assert got.topics == ["test_topic"]
        assert resolve_address("kafka://fake_address").group == "g"
        got.topics.append("x")  # callers get copies
        assert resolve_address("fake_address").topics == ["test_topic"]
    finally:
        unregister_addr_config("fake_address")
    with pytest.raises(ConfigError, match="invalid broker 'fake_address'"):
        resolve_address("fake_address")


def test_registration_without_brokers_fails() -> None:
    with pytest.raises(ConfigError, match="has no brokers"):
        register_addr_config("fake_address", KafkaConfig(topics=["t"]))


def test_discovery_resolves_the_service_name() -> None:
    from trpc_kafka._config.address import register_discovery, resolve_brokers
    from trpc_kafka._config.rdkafka import producer_settings

    seen: list[tuple[str, str]] = []

    def resolve(service: str, namespace: str) -> list[str]:
        seen.append((service, namespace))
        return ["127.0.0.1:19092", "127.0.0.1:19093"]

    with pytest.raises(ConfigError, match="no service discovery named 'mesh'"):
        parse_address("kafka.svc:1?discover=mesh&namespace=Production")
    register_discovery("mesh", resolve)
    cfg = parse_address("kafka.svc:1?discover=mesh&namespace=Production&topic=t")
    assert resolve_brokers(cfg) == ["127.0.0.1:19092", "127.0.0.1:19093"]
    assert producer_settings(cfg)["bootstrap.servers"] == "127.0.0.1:19092,127.0.0.1:19093"
    assert seen[0] == ("kafka.svc:1", "Production")
    register_discovery("empty", lambda s, n: [])
    with pytest.raises(ConfigError, match="found no broker"):
        resolve_brokers(parse_address("svc:1?discover=empty&namespace=x"))


# -- hostile input (issue 8 section 2) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("h:1?rdkafka.client\ud800.id=x", "rdkafka.client\ud800.id"),  # segfaulted before
        ("h:1?rdkafka.client.id=\ud800", "rdkafka.client.id"),  # SystemError before
        ("h:1?topic=a\ud800", "topic"),
        ("h:1?topics=a,\udfff", "topics"),
        ("h:1?group=\ud800", "group"),
        ("h:1?clientid=\ud800", "clientid"),
        ("h:1?clientid=a%00b", "clientid"),  # librdkafka would cut the id at the NUL
        ("h:1?topic=a%00", "topic"),
        ("h:1?rdkafka.client.id=a%00b", "rdkafka.client.id"),
        ("h\ud800:1?topic=t", "hosts"),
    ],
)
def test_text_librdkafka_cannot_take_is_refused_first(address: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(address)
    assert info.value.key == key
    assert "NUL" in str(info.value) or "surrogate" in str(info.value)
    str(info.value).encode("utf-8")  # the message itself is printable


def test_code_built_configs_are_checked_the_same() -> None:
    cfg = get_default_config()
    cfg.brokers = ["h:1"]
    cfg.topic = "t\ud800"
    with pytest.raises(ConfigError, match=r"'topic'.*surrogate"):
        cfg.validate()
    cfg.topic = "t"
    cfg.rdkafka = {"stats_cb": "x"}
    with pytest.raises(ConfigError, match=r"'rdkafka.stats_cb'"):
        register_addr_config("fake_address_hostile", cfg)


@pytest.mark.parametrize("key", [k for k in ADDRESS_KEYS if SPECS[k].convert is _to_int])
def test_huge_integers_name_the_key(key: str) -> None:
    for digits in ("9" * 5000, "-" + "9" * 4301, "9" * 20):
        with pytest.raises(ConfigError) as info:
            parse_address(f"h:1?{key}={digits}")
        assert info.value.key == key
        assert "out of range" in str(info.value)
        assert len(str(info.value)) < 400  # the value is shortened


@pytest.mark.parametrize(
    "name",
    [
        "error_cb",
        "stats_cb",
        "oauth_cb",
        "throttle_cb",
        "logger",
        "on_delivery",
        "on_commit",
        "dr_cb",
        "dr_msg_cb",
        "default.topic.config",
    ],
)
def test_callback_settings_name_the_key(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(f"h:1?rdkafka.{name}=x")
    assert info.value.key == f"rdkafka.{name}"
    assert "callback or object setting" in str(info.value)


def test_weak_messages_made_clear() -> None:
    with pytest.raises(ConfigError, match=r"the address is empty .*'address' / 'target' key"):
        parse_address("")
    with pytest.raises(ConfigError, match=r"unknown scheme 'kafak'.*expected kafka://"):
        parse_address("kafak://h:9092?topic=t")
    with pytest.raises(ConfigError, match="unknown scheme 'http'"):
        parse_address("http://h:9092?topic=t")
    with pytest.raises(ConfigError, match=r"'groupSessionTimeout'.*from 6000 to 1800000"):
        parse_address("h:1?groupSessionTimeout=100")
    with pytest.raises(ConfigError, match="'limiterRate'; out of range"):
        parse_address("h:1?limiterRate=1e999")
    with pytest.raises(ConfigError, match="'maxRetry'"):
        parse_address("h:1?maxRetry=٣")  # a digit of another script
    for address in (
        "h:1?topic=a b",
        "h:1?topics=t,a%2Fb",
        "h:1?deadLetterTopic=..",
        "h:1?topics=" + "t" * 250,
    ):
        with pytest.raises(ConfigError, match="topic names of 1 to 249 characters"):
            parse_address(address)


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False)])
def test_async_means_what_it_means_in_go(value: str, expected: bool) -> None:
    assert parse_address(f"kafka://h:1?topic=t&async={value}").async_produce is expected


@pytest.mark.parametrize("value", ["true", "false", "True", "t", "yes", "2"])
def test_async_spellings_go_reads_differently_are_refused(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(f"kafka://h:1?topic=t&async={value}")
    assert info.value.key == "async"
    assert "1 (asynchronous) or 0 (synchronous)" in str(info.value)
    if value in ("true", "True", "t", "yes"):
        assert "only 1 is async there" in str(info.value)


def _bound_addresses() -> list[str]:
    out = []
    for spec in SPEC_LIST:
        if spec.convert is not _to_int:
            continue
        for bound in (spec.low, spec.high):
            if bound is None:
                continue
            extra = "&fetchMax=2147483135" if spec.key == "fetchDefault" else ""
            if spec.key == "fetchMax" and bound == spec.low:
                extra = f"&fetchDefault={int(bound)}"
            out.append(f"h:1?topics=t&group=g&{spec.key}={int(bound)}{extra}")
    return out


def test_librdkafka_accepts_every_value_the_parser_accepts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each integer key at its lowest and highest allowed value: librdkafka creates both a
    producer and a consumer with the mapped settings (a value it would refuse is refused at
    parse time, naming our key)."""
    quiet = logging.getLogger("test.quiet")
    quiet.disabled = True
    addresses = _bound_addresses()
    assert len(addresses) >= 40
    for address in addresses:
        cfg = parse_address(address)
        try:
            Producer({**producer_settings(cfg), "logger": quiet})
            Consumer({**consumer_settings(cfg), "logger": quiet})
        except KafkaException as exc:
            raise AssertionError(f"{address}: {exc}") from None
