"""End-to-end fixtures: a charger rig (file slots, PKI, agent), a CSMS, a firmware server."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import AgentProcess, ChargerRig, Firmware
from agent.demo.waiting import hang_guard

IMAGE = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: several chunks and checkpoints
HAPPY = ["Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting"]
# The same with the install gate closed for a while: InstallScheduled says why (L01.FR.34).
GATED = [*HAPPY[:3], "InstallScheduled", *HAPPY[3:]]
TERMINAL = {
    "Installed",
    "DownloadFailed",
    "InvalidSignature",
    "InstallVerificationFailed",
    "InstallationFailed",
}


def iso(epoch: float) -> str:
    """An OCPP dateTime for an epoch (whole seconds, UTC)."""
    moment = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def wall(monotonic: float) -> float:
    """A CSMS arrival time (monotonic) on the wall clock, to compare with scheduled times."""
    return time.time() - (time.monotonic() - monotonic)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll something only visible on disk (another process's state); return its value. The
    deadline only catches a hang (never shorter than the suite's hang guard)."""
    deadline = time.monotonic() + max(timeout, hang_guard())
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


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
        self._triggered: list[Any] = []  # notifications sent because of a trigger

    def start(self, env: dict[str, str] | None = None, **config: Any) -> AgentProcess:
        self.agent = AgentProcess(self.rig.config(**config), env).start()
        self._agents.append(self.agent)
        return self.agent

    def restart(self, env: dict[str, str] | None = None) -> AgentProcess:
        self.agent = AgentProcess(self.rig.base / "agent.toml", env).start()
        self._agents.append(self.agent)
        return self.agent

    def update(self, firmware: Firmware, request_id: int, **extra: Any) -> str:
        """Send SignedUpdateFirmware; return the agent's answer status."""
        payload = self.rig.request(firmware, request_id, **extra)
        reply = self.csms.call(self.rig.charge_point_id, call.SignedUpdateFirmware(**payload))
        return str(reply.status)

    def update_raw(self, payload: dict[str, Any]) -> list[Any]:
        """Send a SignedUpdateFirmware frame as is (past the library's own schema check);
        return the agent's CALLRESULT or CALLERROR frame."""
        unique_id = f"raw-{time.monotonic_ns()}"
        frame = [2, unique_id, "SignedUpdateFirmware", payload]
        self.csms.send_raw(self.rig.charge_point_id, json.dumps(frame))
        return self.csms.answer_to(unique_id)

    def trigger(self, core: bool = False) -> dict[str, Any]:
        """Trigger FirmwareStatusNotification (ExtendedTriggerMessage, or the core
        TriggerMessage); return the SignedFirmwareStatusNotification it caused."""
        before = len(self.csms.messages("SignedFirmwareStatusNotification"))
        kind = call.TriggerMessage if core else call.ExtendedTriggerMessage
        reply = self.csms.call(
            self.rig.charge_point_id, kind(requested_message="FirmwareStatusNotification")
        )
        assert reply.status == "Accepted"
        sent = self.csms.wait_message("SignedFirmwareStatusNotification", before + 1)
        assert len(sent) == before + 1, "a status arrived besides the triggered one"
        self._triggered.append(sent[-1])
        return sent[-1].payload

    def assert_triggers(self, status: str, request_id: int | None) -> None:
        """L01.FR.28/.29: both triggers re-send the last status with its requestId."""
        expected = (
            {"status": status}
            if request_id is None
            else {
                "status": status,
                "request_id": request_id,
            }
        )
        assert self.trigger() == expected
        assert self.trigger(core=True) == expected

    def job(self) -> dict[str, Any]:
        """The agent's saved job (state dir), {} when there is none."""
        path = self.rig.state / "job.json"
        return json.loads(path.read_text())["job"] if path.exists() else {}

    def wait_acknowledged(self, timeout: float = 10) -> None:
        """Until the agent's outbox is empty: every CALL it queued was answered (and that is
        on disk). Before a kill -9, so at-least-once delivery does not repeat the last one."""
        path = self.rig.state / "outbox.json"
        wait_until(
            lambda: path.exists() and not json.loads(path.read_text())["entries"],
            timeout,
            "the outbox to drain",
        )

    def statuses(self, request_id: int | None = None) -> list[str]:
        return [s for s, rid in self.csms.statuses() if request_id is None or rid == request_id]

    def wait_status(self, status: str, timeout: float = 30) -> list[tuple[str, int | None]]:
        def arrived() -> list[tuple[str, int | None]] | None:
            statuses = self.csms.statuses()
            return statuses if any(s == status for s, _ in statuses) else None

        return self.csms.wait_for(arrived, timeout, f"status {status}")  # type: ignore[no-any-return]

    def events(self) -> list[str]:
        return [m.payload["type"] for m in self.csms.messages("SecurityEventNotification")]

    def wait_event(self, event: str, timeout: float = 15) -> dict[str, Any]:
        """The first SecurityEventNotification of type `event` (its payload)."""

        def arrived() -> dict[str, Any] | None:
            for message in self.csms.messages("SecurityEventNotification"):
                if message.payload["type"] == event:
                    return message.payload
            return None

        return self.csms.wait_for(arrived, timeout, f"event {event}")  # type: ignore[no-any-return]

    def sequence(self) -> list[tuple[str, int | None]]:
        """(status, requestId) the CSMS received, triggered re-sends left out."""
        return [
            (m.payload["status"], m.payload.get("request_id"))
            for m in self.csms.messages("SignedFirmwareStatusNotification")
            if not any(m is t for t in self._triggered)
        ]

    def assert_coherent(self, request_id: int, expected: list[str]) -> None:
        """What the CSMS saw: exactly `expected` for `request_id`, nothing for any other
        request, one terminal status at most (L01.FR.10)."""
        statuses = self.sequence()
        assert statuses == [(s, request_id) for s in expected], statuses
        assert sum(s in TERMINAL for s, _ in statuses) <= 1


@pytest.fixture
def charger(rig: ChargerRig, csms: TestCsms, agents: list[AgentProcess]) -> Charger:
    return Charger(rig, csms, agents)
