"""The API's lines: requests parsed and checked, replies built. Pure: no I/O, no state.

The protocol is the README's "Local API mode" section; a host is written from it alone.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from agent.ocpp import v16
from agent.ocpp.errors import OcppError
from agent.ocpp.validate import from_wire, parse_datetime

API_VERSION = 1
MAX_LINE = 65536  # bytes, with the newline

# Error codes (README "Errors").
FORBIDDEN = "forbidden"
BUSY = "busy"
LINE_TOO_LONG = "line_too_long"
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
UNKNOWN_METHOD = "unknown_method"
BAD_PARAMS = "bad_params"
NO_UPDATE = "no_update"
TOO_LATE = "too_late"
INTERNAL = "internal"
INTERNAL_MESSAGE = "internal error in the firmware agent (details in its log)"

# start_update's params -> the OCPP request's wire names (the core takes that request).
_FIRMWARE_FIELDS = {
    "location": "location",
    "retrieve_date_time": "retrieveDateTime",
    "install_date_time": "installDateTime",
    "signing_certificate": "signingCertificate",
    "signature": "signature",
}
_TOP_FIELDS = {"request_id": "requestId", "retries": "retries", "retry_interval": "retryInterval"}
_SNAKE = {wire: name for name, wire in {**_FIRMWARE_FIELDS, **_TOP_FIELDS}.items()}


class ApiError(Exception):
    """A request answered with an error line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class Request:
    id: int | str
    method: str
    params: dict[str, Any]


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def error_line(request_id: Any, code: str, message: str) -> bytes:
    return encode({"id": request_id, "error": {"code": code, "message": message}})


def parse_request(line: bytes) -> Request:
    """One request line; ApiError(bad_json / bad_request) otherwise."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # too deep: not ours
        raise ApiError(BAD_JSON, f"not a UTF-8 JSON line: {str(exc)[:200]}") from None
    if not isinstance(message, dict):
        raise ApiError(BAD_REQUEST, "a request is a JSON object")
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        raise ApiError(BAD_REQUEST, "id: expected an integer or a string")
    method = message.get("method")
    if not isinstance(method, str):
        raise ApiError(BAD_REQUEST, "method: expected a string")
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise ApiError(BAD_REQUEST, "params: expected an object")
    unknown = sorted(set(message) - {"id", "method", "params"})
    if unknown:
        raise ApiError(BAD_REQUEST, f"unknown member(s) {unknown}")
    return Request(request_id, method, params)


def request_id_of(line: bytes) -> Any:
    """The id of a request line that failed to parse, for its error reply (None if none)."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    value = message.get("id") if isinstance(message, dict) else None
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None


def update_request(params: dict[str, Any]) -> v16.SignedUpdateFirmwareReq:
    """start_update's params as the core's request, checked as the OCPP schema checks it."""
    unknown = sorted(set(params) - set(_FIRMWARE_FIELDS) - set(_TOP_FIELDS))
    if unknown:
        raise ApiError(BAD_PARAMS, f"unknown parameter(s) {unknown}")
    firmware = {
        wire: params[name]
        for name, wire in _FIRMWARE_FIELDS.items()
        if name in params and params[name] is not None
    }
    payload: dict[str, Any] = {
        wire: params[name]
        for name, wire in _TOP_FIELDS.items()
        if name in params and params[name] is not None
    }
    payload["firmware"] = firmware
    for name in ("retries", "retry_interval"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ApiError(BAD_PARAMS, f"{name}: must not be negative")
    try:
        return from_wire(v16.SignedUpdateFirmwareReq, payload)
    except OcppError as exc:
        raise ApiError(BAD_PARAMS, _snake_case(str(exc))) from None


def _snake_case(message: str) -> str:
    """An OCPP validation message with the API's parameter names."""
    where, sep, rest = message.partition(": ")
    if not sep:
        return message
    name = where.rsplit(".", 1)[-1]
    return f"{_SNAKE.get(name, name)}: {rest}"


def integer(params: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = params.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(BAD_PARAMS, f"{name}: expected an integer")
    return value


def only(params: dict[str, Any], *names: str) -> None:
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ApiError(BAD_PARAMS, f"unknown parameter(s) {unknown}")


def moment(params: dict[str, Any], name: str) -> float | None:
    """An optional RFC 3339 parameter as an epoch."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(BAD_PARAMS, f"{name}: expected an RFC 3339 date-time string")
    try:
        return parse_datetime(value, name).timestamp()
    except OcppError as exc:
        raise ApiError(BAD_PARAMS, str(exc)) from None
