"""Wire dict ⇄ payload dataclass, with each schema violation mapped to its 1.6 CALLERROR.

Mapping (OCPP-J 1.6 Table 7): a payload that is not an object or has an unknown key →
FormationViolation; a missing required key → OccurenceConstraintViolation; a value of the wrong
JSON type → TypeConstraintViolation; a value of the right type but outside its enum, length or
format → PropertyConstraintViolation. The dataclasses in `v16` are the only schema source.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import types
import typing
from typing import Any, TypeVar

from agent.ocpp.errors import (
    FormationViolation,
    OccurenceConstraintViolation,
    PropertyConstraintViolation,
    TypeConstraintViolation,
)

T = TypeVar("T")
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # no OCPP integer needs more than 64 bits


_FIELD_CACHE: dict[type[Any], list[tuple[dataclasses.Field[Any], Any, bool]]] = {}


def _fields(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Any, bool]]:
    """(field, value type, optional) for each field; `X | None` becomes (X, True). Cached."""
    cached = _FIELD_CACHE.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        optional = False
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint, optional = args[0], True
        out.append((field, hint, optional))
    _FIELD_CACHE[cls] = out
    return out


def from_wire(cls: type[T], payload: Any, path: str = "") -> T:
    """Build `cls` from a JSON payload, or raise the OcppError that answers it."""
    if not isinstance(payload, dict):
        if path:  # a nested object of the wrong JSON type
            raise TypeConstraintViolation(f"{path}: expected a JSON object")
        raise FormationViolation("payload: expected a JSON object")
    known = {field.metadata["wire"] for field, _, _ in _fields(cls)}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise FormationViolation(f"{path or 'payload'}: unknown field(s) {unknown}")
    values: dict[str, Any] = {}
    for field, hint, optional in _fields(cls):
        key = field.metadata["wire"]
        where = f"{path}.{key}" if path else key
        if key not in payload:
            if field.default is dataclasses.MISSING:
                raise OccurenceConstraintViolation(f"{where}: required field missing")
            continue
        value = payload[key]
        if value is None and optional:
            raise TypeConstraintViolation(f"{where}: null is not allowed; omit the field")
        if typing.get_origin(hint) is list:
            values[field.name] = _convert_list(
                typing.get_args(hint)[0],
                value,
                where,
                (field.metadata.get("min_items", 0), field.metadata.get("max_items")),
                field.metadata.get("max_length"),
            )
        else:
            values[field.name] = _convert(hint, value, where, field.metadata.get("max_length"))
    return cls(**values)


def _convert(hint: Any, value: Any, where: str, max_length: int | None) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_wire(typing.cast(type[Any], hint), value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if not isinstance(value, str):
            raise TypeConstraintViolation(f"{where}: expected a string")
        try:
            return hint(value)
        except ValueError:
            raise PropertyConstraintViolation(f"{where}: {value!r} is not allowed") from None
    if hint is str:
        if not isinstance(value, str):
            raise TypeConstraintViolation(f"{where}: expected a string")
        if max_length is not None and len(value) > max_length:
            raise PropertyConstraintViolation(f"{where}: longer than {max_length} characters")
        return value
    if hint is bool:
        if type(value) is not bool:
            raise TypeConstraintViolation(f"{where}: expected true or false")
        return value
    if hint is int:
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int:
            raise TypeConstraintViolation(f"{where}: expected an integer")
        if not INT_MIN <= value <= INT_MAX:  # e.g. an interval of 10**400 s would overflow later
            raise PropertyConstraintViolation(f"{where}: integer out of range")
        return value
    if hint is datetime.datetime:
        if not isinstance(value, str):
            raise TypeConstraintViolation(f"{where}: expected a date-time string")
        return parse_datetime(value, where)
    raise TypeError(f"unsupported payload field type {hint!r}")  # a bug in v16, not the peer


def _convert_list(
    item: Any,
    value: Any,
    where: str,
    items: tuple[int, int | None],
    max_length: int | None,
) -> list[Any]:
    """A JSON array (GetConfiguration's keys, the 2.x device model) with `items` = (min, max)
    items: 2.x arrays are `minItems 1`, and a maximum keeps a hostile CSMS from making us
    build and answer a huge list; `max_length` bounds each string item."""
    min_items, max_items = items
    if not isinstance(value, list):
        raise TypeConstraintViolation(f"{where}: expected a JSON array")
    if len(value) < min_items:
        raise OccurenceConstraintViolation(f"{where}: at least {min_items} item(s) required")
    if max_items is not None and len(value) > max_items:
        raise OccurenceConstraintViolation(f"{where}: more than {max_items} items")
    return [_convert(item, v, f"{where}[{i}]", max_length) for i, v in enumerate(value)]


def parse_datetime(text: str, where: str = "date-time") -> datetime.datetime:
    """RFC 3339 date-time; a value without an offset is taken as UTC."""
    if "T" not in text.upper():
        raise PropertyConstraintViolation(f"{where}: {text!r} is not an RFC 3339 date-time")
    try:
        moment = datetime.datetime.fromisoformat(text.upper())
    except ValueError:
        raise PropertyConstraintViolation(
            f"{where}: {text!r} is not an RFC 3339 date-time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    try:  # e.g. 0001-01-01T00:00:00+01:00: no UTC equivalent, format_datetime would overflow
        moment.astimezone(datetime.UTC)
    except OverflowError:
        raise PropertyConstraintViolation(f"{where}: {text!r} is out of range") from None
    return moment


def format_datetime(moment: datetime.datetime) -> str:
    """UTC, millisecond precision, 'Z' suffix: what every CSMS parses."""
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def to_wire(obj: Any) -> dict[str, Any]:
    """The JSON payload of a dataclass: wire keys, None fields omitted, `{}` when empty."""
    out: dict[str, Any] = {}
    for field, _, _ in _fields(type(obj)):
        value = getattr(obj, field.name)
        if value is None:
            continue
        if isinstance(value, list):
            value = [_plain(v) for v in value]
        elif dataclasses.is_dataclass(value):
            value = to_wire(value)
        elif isinstance(value, datetime.datetime):
            value = format_datetime(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        out[field.metadata["wire"]] = value
    return out


def _plain(value: Any) -> Any:
    """One array item on the wire (a nested object or a plain value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value
