"""End-to-end fixtures: a charger rig (file slots, PKI, agent), a CSMS, a firmware server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import AgentProcess, ChargerRig, Firmware

IMAGE = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: several chunks and checkpoints


@pytest.fixture
def fileserver() -> Iterator[FirmwareHttpServer]:
    with FirmwareHttpServer() as server:
        yield server


@pytest.fixture
def rig(tmp_path: Path, csms: TestCsms) -> ChargerRig:
    return ChargerRig(tmp_path, csms.url)


@pytest.fixture
def firmware(rig: ChargerRig, fileserver: FirmwareHttpServer) -> Firmware:
    return publish(rig, fileserver, "/fw/2.0.bin", IMAGE)


def publish(rig: ChargerRig, server: FirmwareHttpServer, path: str, image: bytes) -> Firmware:
    server.put(path, image)
    return Firmware(server.url(path), image, rig.sign(image))


class Charger:
    """The rig's agent plus the CSMS, with the few verbs the scenarios need."""

    def __init__(self, rig: ChargerRig, csms: TestCsms, agents: list[AgentProcess]) -> None:
        self.rig, self.csms, self._agents = rig, csms, agents
        self.agent: AgentProcess | None = None

    def start(self, **config: Any) -> AgentProcess:
        self.agent = AgentProcess(self.rig.config(**config)).start()
        self._agents.append(self.agent)
        return self.agent

    def restart(self) -> AgentProcess:
        self.agent = AgentProcess(self.rig.base / "agent.toml").start()
        self._agents.append(self.agent)
        return self.agent

    def update(self, firmware: Firmware, request_id: int, **extra: Any) -> str:
        """Send SignedUpdateFirmware; return the agent's answer status."""
        payload = self.rig.request(firmware, request_id, **extra)
        reply = self.csms.call(self.rig.charge_point_id, call.SignedUpdateFirmware(**payload))
        return str(reply.status)

    def statuses(self, request_id: int | None = None) -> list[str]:
        return [s for s, rid in self.csms.statuses() if request_id is None or rid == request_id]

    def wait_status(self, status: str, timeout: float = 30) -> list[tuple[str, int | None]]:
        def arrived() -> list[tuple[str, int | None]] | None:
            statuses = self.csms.statuses()
            return statuses if any(s == status for s, _ in statuses) else None

        return self.csms.wait_for(arrived, timeout, f"status {status}")  # type: ignore[no-any-return]

    def events(self) -> list[str]:
        return [m.payload["type"] for m in self.csms.messages("SecurityEventNotification")]


@pytest.fixture
def charger(rig: ChargerRig, csms: TestCsms, agents: list[AgentProcess]) -> Charger:
    return Charger(rig, csms, agents)
