"""Shared fixtures: a test CSMS, agent configs, and the agent as a real process."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, write_toml

ROOT = Path(__file__).resolve().parent.parent


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
        agent = AgentProcess(config, env).start()
        agents.append(agent)
        return agent

    return start
