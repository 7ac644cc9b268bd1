"""The raw-context views (raw.py): the generation read from librdkafka's group metadata."""

from __future__ import annotations

import struct

from trpc_kafka._consumer.raw import generation_of


def test_generation_of_librdkafka_group_metadata() -> None:
    blob = b"CGMDv2:" + struct.pack("=i", 7) + b"group\x00member\x00\x01"
    assert generation_of(blob) == 7
    assert generation_of(b"CGMDv2:" + struct.pack("=i", -1) + b"g\x00\x00\x01") is None
    assert generation_of(b"CGMDv9:....") is None
    assert generation_of(b"CG") is None
    assert generation_of(None) is None
