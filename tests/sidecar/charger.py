"""What tests/sidecar (OCPP 1.6) and tests/sidecar2x (2.0.1, 2.1) share: the charger in sidecar
mode (the rig's agent between a test CSMS and the charger's own stack) and the status waits of
an update behind a stack. Each folder's conftest adds its stack and its CSMS."""

from __future__ import annotations

from typing import Any

from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, ChargerRig
from agent.demo.sidecar_run import free_port
from tests.e2e.conftest import GATED as _GATED
from tests.e2e.conftest import HAPPY as _HAPPY

# An update behind a stack, to Installed: straight through, or held while a transaction runs.
HAPPY = [*_HAPPY, "Installed"]
GATED = [*_GATED, "Installed"]


class SidecarCharger:
    """A charger in sidecar mode: the rig's agent, `[csms] mode = "sidecar"` plus `settings`
    (the OCPP version), listening for the stack on a port of its own."""

    def __init__(
        self, rig: ChargerRig, csms: TestCsms, agents: list[AgentProcess], **settings: Any
    ) -> None:
        self.rig, self.csms, self._agents = rig, csms, agents
        self._settings = {"mode": "sidecar", **settings}
        self.port = free_port()
        self.agent: AgentProcess | None = None

    @property
    def stack_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{self.rig.charge_point_id}"

    def start(self, **sections: Any) -> AgentProcess:
        sections.setdefault("csms", {}).update(self._settings)
        sections.setdefault("sidecar", {})["listen"] = f"127.0.0.1:{self.port}"
        self.agent = AgentProcess(self.rig.config(**sections)).start()
        self._agents.append(self.agent)
        return self.agent

    def restart(self) -> AgentProcess:
        """The agent again on the configuration it had (after a power cycle)."""
        self.agent = AgentProcess(self.rig.base / "agent.toml").start()
        self._agents.append(self.agent)
        return self.agent


def statuses(csms: TestCsms, request_id: int) -> list[str]:
    """The firmware statuses the CSMS received for `request_id`, in order."""
    return [s for s, rid in csms.statuses() if rid == request_id]


def wait_status(csms: TestCsms, request_id: int, status: str) -> None:
    csms.wait_for(lambda: status in statuses(csms, request_id), 60, f"status {status}")
