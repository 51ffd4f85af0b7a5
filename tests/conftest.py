"""Shared fixtures: a test CSMS, agent configs, and the agent as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.demo.csms import TestCsms

ROOT = Path(__file__).resolve().parent.parent


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_toml(path: Path, document: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


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


class AgentProcess:
    """`python -m agent -c CONFIG run` as a child process, its log in a file."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        inherited = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
        }
        self.env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "-v", "-c", str(self.config), "run"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout}s:\n{self.log}") from None

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def wait_log(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the agent's log:\n{self.log}")
            time.sleep(0.05)  # polling a log file: there is no event to await


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
