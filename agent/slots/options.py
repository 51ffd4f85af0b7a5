"""Checking a backend's `[slots.options]` table against the options it declares.

Each backend declares `OPTIONS = {key: Option(checker, default)}`. `parse_options` rejects
unknown keys and invalid values with one `BackendConfigError` line naming the backend and the
key, and fills in the defaults. Checkers raise ValueError("problem").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.slots.errors import BackendConfigError

Checker = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Option:
    check: Checker
    default: Any = None
    help: str = ""


def parse_options(
    backend: str, spec: Mapping[str, Option], options: Mapping[str, Any]
) -> dict[str, Any]:
    """Validated options with defaults filled in; raises BackendConfigError on any mistake."""
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise BackendConfigError(
            f"slots backend {backend!r}: unknown option {unknown[0]!r}; "
            f"known options: {', '.join(sorted(spec)) or 'none'}"
        )
    values: dict[str, Any] = {}
    for key, option in spec.items():
        if key not in options:
            values[key] = option.default
            continue
        try:
            values[key] = option.check(options[key])
        except ValueError as exc:
            raise BackendConfigError(f"slots backend {backend!r}: option {key!r}: {exc}") from None
    return values


def string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    return Path(string(value))


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def integer(low: int, high: int) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return value

    return check


def choice(*allowed: str) -> Checker:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return str(value)

    return check


def slot_table(value: Any) -> dict[str, str]:
    """A table slot name -> string (or integer, kept as its decimal text)."""
    if not isinstance(value, Mapping):
        raise ValueError("expected a table such as { A = ..., B = ... }")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, str | int) or item == "":
            raise ValueError(f"{key}: expected a non-empty string or an integer")
        out[str(key)] = str(item)
    return out


def check_slot_table(
    backend: str, key: str, table: Mapping[str, str], slots: Mapping[str, Path]
) -> None:
    """A slot table must name exactly the configured slots."""
    if table and set(table) != set(slots):
        raise BackendConfigError(
            f"slots backend {backend!r}: option {key!r} must name the slots {sorted(slots)}, "
            f"got {sorted(table)}"
        )


def partition_number(device: Path) -> int | None:
    """The trailing partition number of a device path (/dev/mmcblk0p2 -> 2, /dev/sda3 -> 3)."""
    digits = ""
    for char in reversed(device.name):
        if not char.isdigit():
            break
        digits = char + digits
    if not digits or digits == device.name:
        return None
    return int(digits)
