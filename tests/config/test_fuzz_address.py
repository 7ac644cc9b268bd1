"""Seeded fuzzing of the address parser: every mutated address parses or is a ConfigError.

10,000+ addresses mutated from valid consumer and producer addresses (keys, values,
separators, unicode with lone surrogates, NUL, huge numbers, duplicates, empty parts,
``rdkafka.*`` properties and callback names), each parsed and its config repr'd in a worker
process (tests/config/fuzz.py): a crash is counted, not fatal. Pass: 0 crashes, 0 exception
types other than ConfigError, no input over 1 s of CPU, worker RSS bounded.
"""

from __future__ import annotations

import random
from urllib.parse import quote

import pytest

from tests.config.fuzz import run_fuzz
from trpc_kafka._config.address import ADDRESS_KEYS

SEED = 20261202
COUNT = 10_500

SEEDS = [
    "127.0.0.1:9092?topics=orders&group=g1",
    "10.0.0.1:9092,10.0.0.2:9093?topics=a,b&group=g&batch=100&batchFlush=500&strategy=range",
    "kafka://127.0.0.1:9092?topic=orders&clientid=svc&async=1&partitioner=hash",
    "kafka://[::1]:9092?topic=t&compression=zstd&requiredAcks=-1&idempotent=true",
    "h:1?topics=t&group=g&mechanism=SCRAM-SHA-512&user=u&password=p%26w&protocol=SASL_PLAINTEXT",
    "h:1?topics=t&group=g&rdkafka.fetch.wait.max.ms=50&rdkafka.client.rack=r1",
    "kafka://h:1?topic=t&rdkafka.linger.ms=5&rdkafka.sasl.password=x&maxRetry=2",
    "h:1?topics=t&group=g&limiterRate=10.5&limiterBurst=3&deadLetterTopic=dlq&trpcMeta=1",
    "svc?topics=t&group=g&discover=polaris&namespace=Production",
    "h:1?topics=t&group=g&groupSessionTimeout=10000&groupRebalanceTimeout=60000",
]
RDKAFKA = [
    "linger.ms",
    "client.id",
    "fetch.wait.max.ms",
    "socket.timeout.ms",
    "acks",
    "debug",
    "ssl.key.pem",
    "ssl.keystore.password",
    "sasl.oauthbearer.config",
    "sasl.password",
    "compression.type",
    "message.max.bytes",
    "statistics.interval.ms",
    "security.protocol",
    "error_cb",
    "stats_cb",
    "oauth_cb",
    "throttle_cb",
    "logger",
    "on_delivery",
    "on_commit",
    "dr_cb",
    "default.topic.config",
    "no.such.property",
    "",
    ".",
    "linger.ms.",
]
VALUES = [
    "",
    "0",
    "1",
    "-1",
    "+5",
    "007",
    "1.5",
    "1e3",
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "true",
    "false",
    "yes",
    "T",
    "9" * 20,
    "9" * 4301,
    "9" * 5000,
    "-" + "9" * 5000,
    "1_000",
    "٣",
    "１",
    "\ud800",
    "a\udfffb",
    "\x00",
    "a\x00b",
    "%00",
    "%ff",
    "%",
    "%zz",
    "%ED%A0%80",
    "é",
    "∞",
    "\u202e",
    "\n",
    " ",
    "a b",
    "&",
    "=",
    "?",
    ",",
    ",,",
    "a,,b",
    "kafka://",
    "x" * 3000,
    "sticky",
    "roundrobin",
    "ReadCommitted",
    "oldest",
    "gzip",
    "SSL",
    "PLAIN",
    "/nonexistent/ca.pem",
    "/etc/passwd",
    "/",
    "1.1.1.0",
    "0.9.0.0",
    "99.99.99.99",
]
KEYS = [
    *ADDRESS_KEYS,
    "Topic",
    "topics ",
    " group",
    "rdkafka.",
    "rdkafka",
    "unknown",
    "",
    "\ud800",
    "to\x00pic",
    "%74opic",
    "password%00",
]
HOSTS = [
    "h:1",
    "127.0.0.1:9092",
    "[::1]:9092",
    "h:0",
    "h:65536",
    "h",
    ":9092",
    "",
    ",",
    "h:1,,h:2",
    "h:1, h:2",
    "\ud800:1",
    "h:1\x00",
    "h:" + "9" * 5000,
    "svc",
    "h:٣",
]
SCHEMES = ["", "kafka://", "kafak://", "KAFKA://", "http://", "kafka:/", "kafka:", "://", "x+y://"]
SEPARATORS = ["?", "&", "=", ",", ";", "#", "&&", "??", "==", "%26", "%3D"]


def _pairs(address: str) -> tuple[str, str, list[list[str]]]:
    scheme = "kafka://" if address.startswith("kafka://") else ""
    hosts, _, query = address[len(scheme) :].partition("?")
    pairs = [item.split("=", 1) for item in query.split("&")] if query else []
    return scheme, hosts, pairs


def mutate(rng: random.Random) -> str:
    scheme, hosts, pairs = _pairs(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(12)
        if op == 0 and pairs:  # a value
            rng.choice(pairs)[-1] = rng.choice(VALUES)
        elif op == 1 and pairs:  # a key
            rng.choice(pairs)[0] = rng.choice(KEYS)
        elif op == 2:  # an rdkafka property
            pairs.append(["rdkafka." + rng.choice(RDKAFKA), rng.choice([*VALUES, "5", "all"])])
        elif op == 3 and pairs:  # a duplicate
            pairs.append(list(rng.choice(pairs)))
        elif op == 4 and pairs:  # a dropped pair
            pairs.pop(rng.randrange(len(pairs)))
        elif op == 5:  # an empty part
            pairs.insert(rng.randint(0, len(pairs)), [""] if rng.random() < 0.5 else ["", ""])
        elif op == 6:
            hosts = rng.choice(HOSTS)
        elif op == 7:
            scheme = rng.choice(SCHEMES)
        elif op == 8:  # a known key with any value, percent-encoded or not
            value = rng.choice(VALUES)
            pairs.append(
                [
                    rng.choice(ADDRESS_KEYS),
                    quote(value, errors="surrogatepass") if rng.random() < 0.3 else value,
                ]
            )
        elif op == 9 and pairs:  # a pair without '='
            pairs[rng.randrange(len(pairs))] = [rng.choice(KEYS)]
        else:
            pairs.append([rng.choice(ADDRESS_KEYS), rng.choice(VALUES)])
    text = scheme + hosts + ("?" + "&".join("=".join(p) for p in pairs) if pairs else "")
    if rng.random() < 0.15:  # a character inserted, replaced or deleted anywhere
        i = rng.randrange(len(text) + 1)
        piece = rng.choice([*SEPARATORS, "\ud800", "\x00", "é", "\x7f", "%", " "])
        text = text[:i] + piece + text[i + rng.randint(0, 1) :]
    return text


def addresses(count: int = COUNT, seed: int = SEED) -> list[str]:
    rng = random.Random(seed)
    # The seeds themselves too: the valid baseline must keep parsing.
    return SEEDS[:-1] + [mutate(rng) for _ in range(count)]


def test_mutations_are_varied() -> None:
    """The fuzz reaches every class the issue names (a generator that drifted would not)."""
    sample = addresses()
    assert len(sample) >= 10_000
    assert len(set(sample)) > 9_000
    for needle in ("\ud800", "\x00", "9" * 4301, "rdkafka.error_cb", "&&", "kafak://", "%00"):
        assert sum(needle in a for a in sample) >= 20, needle


@pytest.mark.slow
def test_fuzz_addresses() -> None:
    report = run_fuzz("address", addresses())
    print(report.summary())
    assert report.crashes == []
    assert report.others == []
    assert report.slow == []
    assert set(report.outcomes) <= {"ok", "ConfigError"}
    assert report.outcomes["ok"] >= len(SEEDS) - 1  # the valid baseline still parses
    assert report.max_rss_mb < 1024
