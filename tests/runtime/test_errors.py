"""tRPC errors print and number exactly as tRPC-Go's."""

from __future__ import annotations

import pytest

from trpc_kafka._runtime import errors
from trpc_kafka._runtime.errors import (
    ErrorType,
    TrpcError,
    business_error,
    error_code,
    framework_error,
)


def test_str_is_trpc_go_format() -> None:
    assert str(TrpcError(141, "x")) == "type:framework, code:141, msg:x"


def test_business_and_callee_framework_types() -> None:
    assert (
        str(business_error(10001, "no such user")) == "type:business, code:10001, msg:no such user"
    )
    err = TrpcError(21, "timeout", ErrorType.CALLEE_FRAMEWORK)
    assert str(err) == "type:callee framework, code:21, msg:timeout"
    assert str(framework_error(101, "t")) == "type:framework, code:101, msg:t"
    assert (ErrorType.FRAMEWORK, ErrorType.BUSINESS, ErrorType.CALLEE_FRAMEWORK) == (1, 2, 3)


def test_fields_and_repr() -> None:
    err = business_error(7, "m")
    assert (err.code, err.msg, err.type) == (7, "m", ErrorType.BUSINESS)
    assert repr(err) == "TrpcError(7, 'm', BUSINESS)"
    with pytest.raises(TrpcError) as info:
        raise framework_error(141, "down")
    assert info.value.code == 141


def test_error_code() -> None:
    assert error_code(None) == 0
    assert error_code(framework_error(131, "route")) == 131
    assert error_code(ValueError("x")) == 999


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RET_OK", 0),
        ("RET_SERVER_DECODE_ERR", 1),
        ("RET_SERVER_ENCODE_ERR", 2),
        ("RET_SERVER_NOSERVICE_ERR", 11),
        ("RET_SERVER_NOFUNC_ERR", 12),
        ("RET_SERVER_TIMEOUT_ERR", 21),
        ("RET_SERVER_OVERLOAD_ERR", 22),
        ("RET_SERVER_THROTTLED_ERR", 23),
        ("RET_SERVER_FULL_LINK_TIMEOUT_ERR", 24),
        ("RET_SERVER_SYSTEM_ERR", 31),
        ("RET_SERVER_AUTH_ERR", 41),
        ("RET_SERVER_VALIDATE_ERR", 51),
        ("RET_CLIENT_TIMEOUT_ERR", 101),
        ("RET_CLIENT_FULL_LINK_TIMEOUT_ERR", 102),
        ("RET_CLIENT_CONNECT_ERR", 111),
        ("RET_CLIENT_ENCODE_ERR", 121),
        ("RET_CLIENT_DECODE_ERR", 122),
        ("RET_CLIENT_THROTTLED_ERR", 123),
        ("RET_CLIENT_OVERLOAD_ERR", 124),
        ("RET_CLIENT_ROUTE_ERR", 131),
        ("RET_CLIENT_NETWORK_ERR", 141),
        ("RET_CLIENT_VALIDATE_ERR", 151),
        ("RET_CLIENT_CANCELED", 161),
        ("RET_CLIENT_READ_FRAME_ERR", 171),
        ("RET_UNKNOWN", 999),
    ],
)
def test_code_constants_match_trpc(name: str, value: int) -> None:
    assert getattr(errors, name) == value
