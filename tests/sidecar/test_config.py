"""`[csms] mode` and `[sidecar]`: defaults, and mistakes refused with one line each."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent import config
from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, ChargerRig

BASE = {
    "csms": {"url": "ws://127.0.0.1:9/ocpp", "charge_point_id": "CP-1", "security_profile": 0},
    "identity": {"vendor": "V", "model": "M"},
}


def parse(**sections: dict[str, object]) -> config.Config:
    raw = {name: dict(values) for name, values in BASE.items()}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config.parse(raw, Path("agent.toml"))


def test_direct_by_default_and_sidecar_on_loopback_by_default() -> None:
    loaded = parse()
    assert loaded.csms.mode == "direct"
    assert loaded.sidecar.address == ("127.0.0.1", 8180)
    assert loaded.sidecar.update_firmware == "refuse"
    chosen = parse(csms={"mode": "sidecar"}, sidecar={"listen": "[::1]:9000"})
    assert (chosen.csms.mode, chosen.sidecar.address) == ("sidecar", ("::1", 9000))


@pytest.mark.parametrize(
    ("sections", "problem"),
    [
        ({"csms": {"mode": "proxy"}}, "[csms] mode: expected one of direct, sidecar"),
        ({"sidecar": {"listen": "localhost:80"}}, "expected an IP address before the port"),
        ({"sidecar": {"listen": "127.0.0.1:0"}}, "expected a port 1-65535"),
        ({"sidecar": {"listen": 8180}}, '[sidecar] listen: expected "host:port"'),
        ({"sidecar": {"update_firmware": "yes"}}, "expected one of refuse, forward"),
    ],
)
def test_mistakes_are_refused(sections: dict[str, dict[str, object]], problem: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        parse(**sections)
    assert problem in str(refused.value)


def test_a_listen_port_already_taken_stops_the_daemon_with_one_line(
    tmp_path: Path, csms: TestCsms, agents: list[AgentProcess]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        rig = ChargerRig(tmp_path, csms.url)
        listen = f"127.0.0.1:{port}"
        agent = AgentProcess(rig.config(csms={"mode": "sidecar"}, sidecar={"listen": listen}))
        agents.append(agent.start())
        assert agent.wait() == 2
    assert f"[sidecar] listen: cannot listen on {listen}: Address already in use" in agent.log
    assert "Traceback" not in agent.log
