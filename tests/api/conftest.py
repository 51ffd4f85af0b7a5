"""API-mode fixtures: the charger rig (file slots, PKI) with the agent as a real process in
`[csms] mode = "api"`, a firmware server, and clients of the local socket."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import AgentProcess, ChargerRig, Firmware
from tests.api.client import ApiClient
from tests.e2e.conftest import IMAGE, wait_until

GROUP = 4300  # the socket's group (numeric: no entry in /etc/group needed)
MEMBER_UID = 4301  # an unprivileged uid for the peer-credential tests
LISTENING = "local API on"  # the agent's log line once its socket is made


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for the socket (sun_path holds 107 bytes), traversable by other uids."""
    path = Path(tempfile.mkdtemp(prefix="fwapi-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fileserver() -> Iterator[FirmwareHttpServer]:
    with FirmwareHttpServer() as server:
        yield server


class ApiCharger:
    """The rig's agent in API mode, with the verbs the scenarios need."""

    def __init__(self, rig: ChargerRig, socket_path: Path, agents: list[AgentProcess]) -> None:
        self.rig, self.socket, self._agents = rig, socket_path, agents
        self.agent: AgentProcess | None = None
        self.clients: list[ApiClient] = []

    def start(self, **api: Any) -> AgentProcess:
        config = self.rig.config(
            csms={"mode": "api"},
            api={"socket": str(self.socket), "group": str(GROUP), **api},
            firmware={"gate_poll_interval": 30},
        )
        return self._run(config)

    def restart(self) -> AgentProcess:
        return self._run(self.rig.base / "agent.toml")

    def _run(self, config: Path) -> AgentProcess:
        log = config.with_suffix(".log")
        before = log.read_text().count(LISTENING) if log.exists() else 0
        agent = self.agent = AgentProcess(config).start()
        self._agents.append(agent)

        def listening() -> bool:
            assert agent.proc is not None and agent.proc.poll() is None, agent.log
            return agent.log.count(LISTENING) > before

        wait_for(listening, "the agent's socket")
        return agent

    def stop(self) -> None:
        assert self.agent is not None
        assert self.agent.stop() == 0, self.agent.log

    def connect(self, hello: bool = True) -> ApiClient:
        client = ApiClient(str(self.socket))
        self.clients.append(client)
        if hello:
            client.hello()
        return client

    def update_params(self, firmware: Firmware, request_id: int, **extra: Any) -> dict[str, Any]:
        """start_update's params for `firmware`, signed by the rig's signer."""
        params: dict[str, Any] = {
            "request_id": request_id,
            "location": firmware.url,
            "retrieve_date_time": "2020-01-01T00:00:00Z",
            "signing_certificate": self.rig.signer.pem,
            "signature": firmware.signature,
        }
        params.update(extra)
        return params

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()


@pytest.fixture
def rig(tmp_path: Path) -> ChargerRig:
    return ChargerRig(tmp_path, "ws://unused.invalid/ocpp")


@pytest.fixture
def firmware(rig: ChargerRig, fileserver: FirmwareHttpServer) -> Firmware:
    fileserver.put("/fw/2.0.bin", IMAGE)
    return Firmware(fileserver.url("/fw/2.0.bin"), IMAGE, rig.sign(IMAGE))


@pytest.fixture
def charger(rig: ChargerRig, sockdir: Path, agents: list[AgentProcess]) -> Iterator[ApiCharger]:
    charger = ApiCharger(rig, sockdir / "api.sock", agents)
    yield charger
    charger.close_clients()


def wait_for(predicate: Any, what: str, timeout: float = 60) -> Any:
    """Poll another process's state; return the predicate's value."""
    return wait_until(predicate, timeout, what)


def as_uid(uid: int, *, groups: list[int] | None = None, dac_override: bool = False) -> list[str]:
    """A setpriv prefix running a command as `uid` (and gid), with only `groups` (none by
    default); `dac_override` keeps the one capability that passes the socket's file mode, so
    the agent's own credential check is what refuses."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}"]
    argv += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    if dac_override:
        argv += ["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]
    return argv


def client_script() -> str:
    return str(Path(__file__).with_name("client.py"))


def env_for_other_uid() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
