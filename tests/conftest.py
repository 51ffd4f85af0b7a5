"""Shared fixtures: a test CSMS, agent configs, and the agent as a real process."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agent.demo.rig import write_toml

if TYPE_CHECKING:  # imported where used: the ocpp/websockets stack costs ~1 s per pytest start,
    # and `make mutation` starts pytest once per mutant on tests that need no CSMS
    from agent.demo.csms import TestCsms
    from agent.demo.rig import AgentProcess

ROOT = Path(__file__).resolve().parent.parent
# In CI a skip is a failure: a missing tool or privilege must break the build, not hide a test.
STRICT_SKIPS = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _skip_reason(longrepr: object) -> str:
    """The reason pytest recorded for a skip: (path, line, "Skipped: why") or a plain repr."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if STRICT_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = _skip_reason(report.longrepr)
        report.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport() -> Generator[None, Any, None]:
    """A test (or its fixture) that skips fails instead when CI=true."""
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report() -> Generator[None, Any, None]:
    """A module skipped at import (importorskip, allow_module_level) fails too when CI=true."""
    outcome = yield
    _fail_skip(outcome.get_result())


# Every deadline in the suite only catches a hang, so none is shorter than this (seconds): with
# both cores busy a daemon restart can take tens of seconds, and slow must not mean red.
HANG_GUARD_SECONDS = "180"


def pytest_configure() -> None:
    """Raise the demo CSMS's and the rigs' waits to the hang guard (an environment variable, so
    that it costs no import: `make mutation` starts pytest once per mutant)."""
    os.environ.setdefault("FW_AGENT_TEST_HANG_GUARD", HANG_GUARD_SECONDS)


def agent_config(tmp_path: Path, csms_url: str, **sections: Mapping[str, Any]) -> Path:
    """A config for a local CSMS; `sections` override or extend the defaults."""
    document: dict[str, dict[str, Any]] = {
        "csms": {
            "url": csms_url,
            "charge_point_id": "CP-TEST-1",
            "security_profile": 0,
            "call_timeout": 5,
            "reconnect_min": 0.2,
            "reconnect_max": 1,
            "ping_interval": 0,
        },
        "identity": {"vendor": "ExampleVendor", "model": "AB-Charger", "firmware_version": "1.0"},
        "state": {"dir": str(tmp_path / "state")},
    }
    for name, values in sections.items():
        document.setdefault(name, {}).update(values)
    return write_toml(tmp_path / "agent.toml", document)


@pytest.fixture
def csms() -> Iterator[TestCsms]:
    from agent.demo.csms import TestCsms

    server = TestCsms().start()
    yield server
    server.stop()
    assert server.schema_violations == [], "the agent sent messages that violate the schemas"


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    """Collects started agents and stops them at teardown (the log is printed on failure)."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


@pytest.fixture
def run_agent(agents: list[AgentProcess]) -> Any:
    def start(config: Path, env: Mapping[str, str] | None = None) -> AgentProcess:
        from agent.demo.rig import AgentProcess

        agent = AgentProcess(config, env).start()
        agents.append(agent)
        return agent

    return start
