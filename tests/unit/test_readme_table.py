"""README.md shows the update state machine as generated from agent/firmware/machine.py (#9).

The block between the `machine-table` markers must be exactly `machine_doc.markdown_table()`: a
change to TRANSITIONS or RESUME without pasting `python -m agent.firmware.machine_doc` fails here.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from agent.firmware import machine, machine_doc

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- machine-table:begin -->\n", "<!-- machine-table:end -->"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "one machine-table block"
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_readme_block_is_the_generated_table() -> None:
    assert readme_block() == machine_doc.markdown_table()


def test_module_prints_the_table() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "agent.firmware.machine_doc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == machine_doc.markdown_table()


def test_every_row_and_phase_is_rendered() -> None:
    lines = machine_doc.markdown_table().splitlines()
    for row in machine.TRANSITIONS:
        assert any(
            f"| `{row.event}` | `{row.target}` |" in line and row.why in line for line in lines
        )
    for phase in machine.Phase:
        assert any(line.startswith(f"| `{phase}` |") for line in lines), phase


def test_a_changed_row_makes_the_readme_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: one edited reason in TRANSITIONS no longer matches the README."""
    first = dataclasses.replace(machine.TRANSITIONS[0], why="edited")
    monkeypatch.setattr(machine_doc, "TRANSITIONS", (first, *machine.TRANSITIONS[1:]))
    assert readme_block() != machine_doc.markdown_table()
