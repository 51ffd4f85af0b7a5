"""The system test builds the .deb and boots Debian 12 under systemd-nspawn (about a minute, and
it installs nothing on the host). It runs in `make system` (which sets OCPP_FW_AGENT_SYSTEM_TEST=1),
not in the unit and compatibility runs that collect all of tests/."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[2] / "build" / "system" / "report.txt"
_LOADED = time.time()

if os.environ.get("OCPP_FW_AGENT_SYSTEM_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the timings and facts the test wrote (build/system/report.txt), pass or fail."""
    if REPORT.exists() and REPORT.stat().st_mtime >= _LOADED:
        terminalreporter.section("system test report")
        for line in REPORT.read_text().splitlines():
            terminalreporter.write_line(line)
