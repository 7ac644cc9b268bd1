"""``cluster``: the in-memory cluster and the real local broker, one run of a test each.

Every test using it runs once per backend with the same code, so the in-memory cluster is held
to what the broker does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.testing._backends import Backend, Memory, Real
from trpc_kafka.testing import InMemoryKafka


@pytest.fixture(params=["memory", "real"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        async with InMemoryKafka() as kafka:
            yield Memory(kafka)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        new_topic = request.getfixturevalue("new_topic")
        yield Real(bootstrap, new_topic)
