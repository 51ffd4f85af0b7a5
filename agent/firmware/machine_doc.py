"""The state machine as markdown for the README, generated so its tables cannot drift from the code.

`markdown_table()` renders `machine.TRANSITIONS` (one line a row, in the table's order) and
`machine.RESUME`; tests/unit/test_readme_table.py checks that README.md carries exactly this
text between its `machine-table` markers. `python -m agent.firmware.machine_doc` prints it, to
paste there after a change to machine.py.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

from agent.firmware.machine import INITIAL, RESUME, TRANSITIONS, Phase
from agent.ocpp.v16 import FirmwareStatus

_ORDER = {phase: index for index, phase in enumerate(Phase)}


def _prose(text: str) -> str:
    return textwrap.fill(text, width=99, break_on_hyphens=False, break_long_words=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows)
    return lines


def _phases(phases: Iterable[Phase]) -> str:
    return ", ".join(_code(phase) for phase in sorted(phases, key=_ORDER.__getitem__))


def _status(status: FirmwareStatus | None) -> str:
    return _code(status.value) if status is not None else "(none)"


def transitions_table() -> list[str]:
    """Every row of TRANSITIONS: from | event | to | status | why."""
    rows = (
        (_phases(row.sources), _code(row.event), _code(row.target), _status(row.status), row.why)
        for row in TRANSITIONS
    )
    return _table(("from", "event", "to", "status", "why"), rows)


def resume_table() -> list[str]:
    """What a saved job does first: phase | same boot | new boot."""
    rows = (
        (_code(phase), same, "same" if new == same else new)
        for phase, (same, new) in sorted(RESUME.items(), key=lambda item: _ORDER[item[0]])
    )
    return _table(
        ("saved phase", "same boot (daemon restart)", "new boot (reboot, power cut)"), rows
    )


def markdown_table() -> str:
    """Both tables, each with the one sentence that says how to read it."""
    born = " or ".join(f"{_code(phase)} ({_status(status)})" for phase, status in INITIAL.items())
    lines = [
        _prose(
            f"A job is created in {born}; `advance()` moves it only along these rows. The status"
            " is sent on entering the row's target (for `finished`: the outcome)."
        ),
        "",
        *transitions_table(),
        "",
        _prose("A job saved in a phase continues so when the daemon starts:"),
        "",
        *resume_table(),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
