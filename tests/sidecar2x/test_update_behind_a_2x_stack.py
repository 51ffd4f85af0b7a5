"""Sidecar mode in OCPP 2.0.1 and 2.1: a real 2.x stack behind the agent, the 2.x CSMS in
front. The stack's traffic crosses unchanged; the firmware update is the agent's."""

from __future__ import annotations

import json

import pytest
import websockets

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import Firmware
from tests.e2e.conftest import IMAGE
from tests.sidecar.charger import GATED, HAPPY, statuses, wait_status
from tests.sidecar2x.conftest import Sidecar2x, SidecarCsms, Stack2x, library

# A whole update through the reboot, as in tests/e2e: the Debian pass runs it (Makefile).
pytestmark = pytest.mark.slow


def assert_unchanged(stack: Stack2x, csms: SidecarCsms) -> None:
    """Every frame of this stack's conversation crossed the agent byte for byte and in
    order, both ways (the agent's own frames, with their own ids, interleave at the CSMS)."""
    sent, received = stack.texts("out"), stack.texts("in")
    ids = {json.loads(t)[1] for t in sent + received}
    mine = [f for f in csms.frames if json.loads(f.text)[1] in ids]
    assert [f.text for f in mine if f.direction == "in"] == sent
    assert [f.text for f in mine if f.direction == "out"] == received


def update(sidecar: Sidecar2x, firmware: Firmware, request_id: int) -> str:
    request = library(sidecar.version).call.UpdateFirmware(
        **sidecar.rig.request(firmware, request_id)
    )
    reply = sidecar.csms.call(sidecar.rig.charge_point_id, request)
    return str(reply.status)


def reboot_into_b(sidecar: Sidecar2x, stack: Stack2x) -> Stack2x:
    """The charger powers off (its stack with it) and boots the new slot; the stack comes
    back and registers as it always does."""
    assert sidecar.agent is not None
    stack.stop()
    sidecar.rig.versions["B"] = "2.0"
    assert sidecar.rig.power_cycle(sidecar.agent) == "B"
    sidecar.restart()
    return sidecar.stack()


def test_l01_fr_33_update_during_a_2_0_1_transaction_waits_for_ended_then_the_stacks_boot(
    sidecar201: Sidecar2x,
) -> None:
    """2.0.1 behind the agent: boot, heartbeat and a transaction pass through byte for byte.
    L01.FR.33/.34: the update waits for TransactionEvent Ended, reporting InstallScheduled
    meanwhile, learnt from the stack's own messages with no gate command; TC_F_17-19 style:
    TriggerMessage(FirmwareStatusNotification) is answered by the agent, not the stack; the
    device model (GetVariables) and other triggers are the stack's. After the reboot the
    stack's BootNotification, forwarded as is, is the acceptance the trial boot waits for, and
    Installed follows (L01.FR.01)."""
    sidecar, csms, rig = sidecar201, sidecar201.csms, sidecar201.rig
    cp = rig.charge_point_id
    call = library("2.0.1").call
    with FirmwareHttpServer() as server:
        server.put("/fw/2.0.bin", IMAGE)
        firmware = Firmware(server.url("/fw/2.0.bin"), IMAGE, rig.sign(IMAGE))
        agent = sidecar.start(firmware={"gate_poll_interval": 0.2})

        # A stack speaking another version is refused at the handshake.
        with pytest.raises(websockets.InvalidStatus) as refused:
            sidecar.stack(offer="ocpp1.6")
        assert refused.value.response.status_code == 400
        agent.wait_log("did not offer subprotocol ocpp2.0.1")

        stack = sidecar.stack()
        assert stack.boot().status == "Accepted"
        stack.heartbeat()
        stack.transaction_event("Started", "TX-1", 1200)
        stack.transaction_event("Updated", "TX-1", 1500)

        assert update(sidecar, firmware, 7) == "Accepted"
        wait_status(csms, 7, "InstallScheduled")
        agent.wait_log("install gate closed: transaction(s) ['TX-1'] running")
        reply = csms.call(cp, call.TriggerMessage(requested_message="FirmwareStatusNotification"))
        assert reply.status == "Accepted"
        csms.wait_for(lambda: statuses(csms, 7).count("InstallScheduled") == 2, 15, "trigger")
        wanted = [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
        ]
        answer = csms.call(cp, call.GetVariables(get_variable_data=wanted))
        assert answer.get_variable_result[0]["attribute_value"] == "stack's"
        assert (
            csms.call(cp, call.TriggerMessage(requested_message="Heartbeat")).status == "Accepted"
        )
        assert stack.handled == ["GetVariables", "TriggerMessage Heartbeat"]

        stack.transaction_event("Updated", "TX-1", 1800)  # charging goes on; nothing installs
        assert "Installing" not in statuses(csms, 7)
        assert not rig.reboot_marker.exists()
        stack.transaction_event("Ended", "TX-1", 2000)
        rig.wait_reboot_request(agent)
        assert statuses(csms, 7) == [*GATED[:4], "InstallScheduled", *GATED[4:-1]]
        assert_unchanged(stack, csms)

    boots_before = len(csms.messages("BootNotification"))
    stack = reboot_into_b(sidecar, stack)
    assert stack.boot("FirmwareUpdate").status == "Accepted"
    wait_status(csms, 7, "Installed")
    assert_unchanged(stack, csms)
    # The agent never registered on its own: every BootNotification was the stack's.
    boots = csms.messages("BootNotification")
    assert len(boots) == boots_before + 1
    assert {b.payload["charging_station"]["vendor_name"] for b in boots} == {"StackVendor"}
    assert [m.payload["event_type"] for m in csms.messages("TransactionEvent")] == [
        "Started",
        "Updated",
        "Updated",
        "Ended",
    ]


def test_the_same_update_behind_a_2_1_stack(sidecar21: Sidecar2x) -> None:
    """2.1: the stack's boot passes through, the agent runs the update, the stack's boot after
    the reboot confirms it and Installed follows; every frame schema-checked as 2.1."""
    sidecar, csms, rig = sidecar21, sidecar21.csms, sidecar21.rig
    with FirmwareHttpServer() as server:
        server.put("/fw/2.0.bin", IMAGE)
        firmware = Firmware(server.url("/fw/2.0.bin"), IMAGE, rig.sign(IMAGE))
        agent = sidecar.start()
        stack = sidecar.stack()
        assert stack.boot().status == "Accepted"
        assert update(sidecar, firmware, 21) == "Accepted"
        rig.wait_reboot_request(agent)
        assert_unchanged(stack, csms)

    stack = reboot_into_b(sidecar, stack)
    assert stack.boot("FirmwareUpdate").status == "Accepted"
    wait_status(csms, 21, "Installed")
    assert statuses(csms, 21) == HAPPY
    assert_unchanged(stack, csms)
