"""`[csms] mode = "api"` and `[api]`: what it needs, its defaults, and mistakes (one line each,
exit 2 at start for a socket that cannot be made)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent import config
from agent.demo.rig import SOURCE_ROOT, AgentProcess, ChargerRig
from tests.api.conftest import GROUP, LISTENING, wait_for

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


def test_without_capabilities_the_daemon_hands_the_socket_over_only_as_a_group_member(
    sockdir: Path, tmp_path: Path
) -> None:
    """The shipped unit runs as root with no capability: chown to the group then needs the
    daemon in that group (SupplementaryGroups=, README); without it, exit 2 and why."""
    rig = ChargerRig(tmp_path, "ws://unused.invalid/ocpp")
    path = rig.config(csms={"mode": "api"}, api={"socket": str(sockdir / "s"), "group": GROUP})
    no_caps = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
    command = [sys.executable, "-m", "agent", "-c", str(path), "run"]

    refused = subprocess.run(
        [*no_caps, "--clear-groups", *command], cwd=SOURCE_ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert "Operation not permitted (without CAP_CHOWN the daemon must be a member" in (
        refused.stderr
    )

    log = tmp_path / "member.log"
    with log.open("wb") as out:
        member = subprocess.Popen(
            [*no_caps, f"--groups={GROUP}", *command], cwd=SOURCE_ROOT, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: LISTENING in log.read_text() or member.poll() is not None, "start")
        assert LISTENING in log.read_text(), log.read_text()
        assert (sockdir / "s").stat().st_gid == GROUP
    finally:
        member.terminate()
        assert member.wait(30) == 0
