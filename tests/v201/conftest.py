"""OCPP 2.0.1 fixtures: the e2e charger rig with `ocpp_version = "2.0.1"` and a 2.0.1 CSMS.

Every test here runs against two CSMS peers (`csms` is parametrised): the `ocpp` library's v201
side (Python) and ocpp-rpc in strict mode (Node, AJV), so two independent validators see every
frame the agent sends; neither may find a schema violation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ocpp.v201 import call

from agent.demo.rig import AgentProcess, ChargerRig, Firmware
from tests.e2e import conftest as e2e
from tests.peers.ocpp_rpc_csms import OcppRpcCsms
from tests.v201.csms201 import Csms201

V201 = {"ocpp_version": "2.0.1"}
# The e2e rig, firmware server and image, reused as they are (`rig` takes our `csms`).
fileserver, firmware, rig = e2e.fileserver, e2e.firmware, e2e.rig


# The Node peer checks the agent's frames, which do not depend on the Python libraries'
# versions: its runs (`node_peer`) are in the PyPI pass only, which balances the two passes.
@pytest.fixture(params=["ocpp", pytest.param("ocpp-rpc", marks=pytest.mark.node_peer)])
def csms(request: pytest.FixtureRequest) -> Iterator[Csms201 | OcppRpcCsms]:
    server = Csms201().start() if request.param == "ocpp" else OcppRpcCsms("2.0.1").start()
    yield server
    server.stop()
    assert server.schema_violations == [], f"{request.param} found frames that violate the schemas"


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    """The direct-mode tests' own CSMSs (`Csms2x` or a subclass), each checked at teardown:
    all stopped first, then none may have seen a frame that violates the schemas."""
    started: list[Any] = []
    yield started
    for server in started:
        server.stop()
    for server in started:
        assert server.schema_violations == [], "frames at the CSMS that violate the schemas"


class Station(e2e.Charger):
    """The e2e charger speaking 2.0.1: its status, event and job verbs read the 2.0.1 CSMS;
    starting, updating and triggering use the 2.0.1 messages."""

    csms: Csms201

    def start(self, env: dict[str, str] | None = None, **config: Any) -> AgentProcess:
        config["csms"] = {**V201, **config.get("csms", {})}
        return super().start(env, **config)

    def update(self, firmware: Firmware, request_id: int, **extra: Any) -> Any:  # type: ignore[override]
        """Send UpdateFirmware (checked by the library both ways); return the whole answer."""
        payload = self.rig.request(firmware, request_id, **extra)
        return self.csms.call(self.rig.charge_point_id, call.UpdateFirmware(**payload))

    def raw(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Send a CALL as is, past the library's own schema check; return the answer frame."""
        unique_id = f"raw-{time.monotonic_ns()}"
        self.csms.send_raw(self.rig.charge_point_id, json.dumps([2, unique_id, action, payload]))
        return self.csms.answer_to(unique_id)

    def trigger(self, requested: str = "FirmwareStatusNotification") -> Any:  # type: ignore[override]
        request = call.TriggerMessage(requested_message=requested)
        return self.csms.call(self.rig.charge_point_id, request)

    def boots(self) -> list[dict[str, Any]]:
        return [m.payload for m in self.csms.messages("BootNotification")]


@pytest.fixture
def station(rig: ChargerRig, csms: Csms201, agents: list[AgentProcess]) -> Station:
    return Station(rig, csms, agents)
