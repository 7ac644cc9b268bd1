"""tRPC errors: one class with type, code and message, printed exactly as tRPC-Go prints them."""

from __future__ import annotations

import enum
from typing import Final


class ErrorType(enum.IntEnum):
    """Who raised the error, with tRPC-Go's numbering."""

    FRAMEWORK = 1
    BUSINESS = 2
    CALLEE_FRAMEWORK = 3

    @property
    def description(self) -> str:
        return _TYPE_DESCRIPTIONS[self]


_TYPE_DESCRIPTIONS: Final = {
    ErrorType.FRAMEWORK: "framework",
    ErrorType.BUSINESS: "business",
    ErrorType.CALLEE_FRAMEWORK: "callee framework",
}

# tRPC framework return codes (trpc.proto RetCode), the ones the reference plugin and users meet.
RET_OK: Final = 0
# Server side.
RET_SERVER_DECODE_ERR: Final = 1
RET_SERVER_ENCODE_ERR: Final = 2
RET_SERVER_NOSERVICE_ERR: Final = 11
RET_SERVER_NOFUNC_ERR: Final = 12
RET_SERVER_TIMEOUT_ERR: Final = 21
RET_SERVER_OVERLOAD_ERR: Final = 22
RET_SERVER_THROTTLED_ERR: Final = 23
RET_SERVER_FULL_LINK_TIMEOUT_ERR: Final = 24
RET_SERVER_SYSTEM_ERR: Final = 31
RET_SERVER_AUTH_ERR: Final = 41
RET_SERVER_VALIDATE_ERR: Final = 51
# Client side.
RET_CLIENT_TIMEOUT_ERR: Final = 101
RET_CLIENT_FULL_LINK_TIMEOUT_ERR: Final = 102
RET_CLIENT_CONNECT_ERR: Final = 111
RET_CLIENT_ENCODE_ERR: Final = 121
RET_CLIENT_DECODE_ERR: Final = 122
RET_CLIENT_THROTTLED_ERR: Final = 123
RET_CLIENT_OVERLOAD_ERR: Final = 124
RET_CLIENT_ROUTE_ERR: Final = 131
RET_CLIENT_NETWORK_ERR: Final = 141
RET_CLIENT_VALIDATE_ERR: Final = 151
RET_CLIENT_CANCELED: Final = 161
RET_CLIENT_READ_FRAME_ERR: Final = 171
RET_UNKNOWN: Final = 999


class TrpcError(Exception):
    """A tRPC error. ``str()`` is ``type:framework, code:141, msg:...`` as in tRPC-Go."""

    __slots__ = ("code", "msg", "type")

    def __init__(self, code: int, msg: str, type: ErrorType = ErrorType.FRAMEWORK) -> None:
        super().__init__(code, msg)
        self.code = code
        self.msg = msg
        self.type = type

    def __str__(self) -> str:
        return f"type:{self.type.description}, code:{self.code}, msg:{self.msg}"

    def __repr__(self) -> str:
        return f"TrpcError({self.code}, {self.msg!r}, {self.type.name})"


def framework_error(code: int, msg: str) -> TrpcError:
    """A framework error (raised by this library), like tRPC-Go's ``errs.NewFrameError``."""
    return TrpcError(code, msg, ErrorType.FRAMEWORK)


def business_error(code: int, msg: str) -> TrpcError:
    """A business error (raised by user code), like tRPC-Go's ``errs.New``."""
    return TrpcError(code, msg, ErrorType.BUSINESS)


def error_code(exc: BaseException | None) -> int:
    """The tRPC code of any exception: 0 for None, the code of a TrpcError, else 999."""
    if exc is None:
        return RET_OK
    if isinstance(exc, TrpcError):
        return exc.code
    return RET_UNKNOWN
