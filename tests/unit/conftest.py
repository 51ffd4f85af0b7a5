"""Helpers shared by the unit tests: agent.toml files written from dicts, a clock, an id factory."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.demo.rig import toml_value

ConfigWriter = Callable[..., Path]


def base_config(state_dir: Path) -> dict[str, dict[str, Any]]:
    """A valid profile-0 document."""
    return {
        "csms": {
            "url": "ws://127.0.0.1:9/ocpp",
            "charge_point_id": "CP-UNIT-1",
            "security_profile": 0,
        },
        "identity": {"vendor": "ExampleVendor", "model": "AB-Charger"},
        "state": {"dir": str(state_dir)},
    }


@pytest.fixture
def write_config(tmp_path: Path) -> ConfigWriter:
    """`write_config(csms={...}, drop=[("csms", "url")], extra="raw toml")` → the file's path.

    Starts from `base_config`; each keyword section is merged into it (a value of None removes
    the key); `drop` removes keys; `extra` is appended verbatim.
    """

    def write(
        name: str = "agent.toml",
        drop: tuple[tuple[str, str], ...] = (),
        extra: str = "",
        **sections: Mapping[str, Any],
    ) -> Path:
        document = base_config(tmp_path / "state")
        for section, values in sections.items():
            table = document.setdefault(section, {})
            for key, value in values.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
        for section, key in drop:
            document[section].pop(key, None)
        lines = []
        for section, table in document.items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
            lines.append("")
        path = tmp_path / name
        path.write_text("\n".join(lines) + extra, encoding="utf-8")
        return path

    return write


class FakeClock:
    """An injected monotonic (or wall) clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def id_factory(prefix: str = "cp") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"
