"""`[csms] mode = "api"` and `[api]`: what it needs, its defaults, and mistakes (one line each,
exit 2 at start for a socket that cannot be made)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.demo.rig import AgentProcess, ChargerRig

IDENTITY = {"vendor": "V", "model": "M"}


def test_api_mode_needs_no_csms_url_and_has_defaults() -> None:
    loaded = config.parse({"csms": {"mode": "api"}, "identity": IDENTITY}, Path("agent.toml"))
    assert loaded.csms.mode == "api"
    assert loaded.api.socket == Path("/run/ocpp-fw-agent/api.sock")
    assert (loaded.api.group, loaded.api.max_clients, loaded.api.response_timeout) == (
        "ocpp-fw",
        4,
        5.0,
    )
    assert loaded.effective()["api"]["group"] == "ocpp-fw"
    numeric = config.parse(
        {"csms": {"mode": "api"}, "identity": IDENTITY, "api": {"group": 4300}},
        Path("agent.toml"),
    )
    assert numeric.api.group == "4300"


def test_other_modes_still_need_the_csms() -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.parse({"csms": {"mode": "direct"}, "identity": IDENTITY}, Path("agent.toml"))
    assert "[csms] url: missing (required)" in str(refused.value)


@pytest.mark.parametrize(
    ("api", "problem"),
    [
        ({"group": "no group!"}, "[api] group: expected a group name or a numeric gid"),
        ({"max_clients": 0}, "[api] max_clients: expected an integer 1-64, got 0"),
        ({"response_timeout": -1}, "[api] response_timeout: expected a number of seconds"),
        ({"socket": ""}, "[api] socket: expected a non-empty string"),
        ({"port": 1}, "[api] port: unknown key"),
    ],
)
def test_mistakes_are_refused(api: dict[str, object], problem: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.parse({"csms": {"mode": "api"}, "identity": IDENTITY, "api": api}, Path("a.toml"))
    assert problem in str(refused.value)


def test_a_socket_that_cannot_be_made_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    rig = ChargerRig(tmp_path, "ws://unused.invalid/ocpp")
    path = rig.config(
        csms={"mode": "api"},
        api={"socket": str(tmp_path / "api.sock"), "group": "no-such-group-here"},
    )
    agent = AgentProcess(path).start()
    assert agent.wait() == 2
    assert "[api] socket: no group named 'no-such-group-here'" in agent.log
    assert "Traceback" not in agent.log
