"""Sidecar mode: a signed update next to a charging session, and links that come and go."""

from __future__ import annotations

import json

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import Firmware
from tests.e2e.conftest import IMAGE, wait_until
from tests.sidecar.charger import GATED, statuses, wait_status
from tests.sidecar.conftest import Sidecar


@pytest.mark.both_peers
def test_an_update_during_a_transaction_waits_for_stop_then_the_stacks_boot_confirms_it(
    sidecar: Sidecar, csms: TestCsms
) -> None:
    """L01.FR.06/.33: no install while the stack's transaction runs, learned from its own
    StartTransaction/StopTransaction with no gate command; L01.FR.34: InstallScheduled
    meanwhile; after the reboot the stack's BootNotification (forwarded as is) is the CSMS
    acceptance the trial boot waits for, and Installed follows (L01.FR.01)."""
    rig = sidecar.rig
    with FirmwareHttpServer() as server:
        server.put("/fw/2.0.bin", IMAGE)
        firmware = Firmware(server.url("/fw/2.0.bin"), IMAGE, rig.sign(IMAGE))
        agent = sidecar.start(firmware={"gate_poll_interval": 0.2})
        stack = sidecar.stack()
        assert stack.boot().status == "Accepted"
        transaction = stack.start_transaction()
        stack.meter_values(transaction, 1200)

        payload = rig.request(firmware, 7)
        reply = csms.call(rig.charge_point_id, call.SignedUpdateFirmware(**payload))
        assert reply.status == "Accepted"
        wait_status(csms, 7, "InstallScheduled")
        agent.wait_log(f"install gate closed: transaction(s) [{transaction}] running")
        stack.meter_values(transaction, 1800)  # charging goes on; nothing installs
        assert "Installing" not in statuses(csms, 7)
        assert not rig.reboot_marker.exists()

        stack.stop_transaction(transaction, 2000)
        rig.wait_reboot_request(agent)
        assert statuses(csms, 7) == GATED[:-1]

    stack.stop()  # the charger powers off: its stack goes too
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    sidecar.restart()
    stack = sidecar.stack()
    boots_before = len(csms.messages("BootNotification"))
    assert stack.boot().status == "Accepted"
    wait_status(csms, 7, "Installed")
    assert statuses(csms, 7) == GATED
    # The agent never registered on its own: every BootNotification was the stack's.
    boots = csms.messages("BootNotification")
    assert len(boots) == boots_before + 1
    assert {b.payload["charge_point_vendor"] for b in boots} == {"StackVendor"}


@pytest.mark.both_peers
def test_the_stack_away_and_back_and_the_csms_away_and_back(
    sidecar: Sidecar, csms: TestCsms
) -> None:
    cp = sidecar.rig.charge_point_id
    agent = sidecar.start()
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"

    # The stack away: CSMS CALLs meant for it get CALLERROR InternalError saying why;
    # firmware work and reporting go on.
    stack.close()
    agent.wait_log("the charging stack disconnected")
    frame = [2, "rs-1", "RemoteStartTransaction", {"idTag": "TAG-1"}]
    csms.send_raw(cp, json.dumps(frame))
    answer = csms.answer_to("rs-1")
    assert answer[:3] == [4, "rs-1", "InternalError"]
    assert "charging stack is not connected" in answer[3]
    reply = csms.call(
        cp, call.ExtendedTriggerMessage(requested_message="FirmwareStatusNotification")
    )
    assert reply.status == "Accepted"
    csms.wait_message("SignedFirmwareStatusNotification")
    assert csms.messages("SignedFirmwareStatusNotification")[-1].payload == {"status": "Idle"}

    # The stack back: traffic flows again, nothing of it lost.
    stack = sidecar.stack()
    stack.call(call.Heartbeat())
    assert csms.call(cp, call.RemoteStartTransaction(id_tag="TAG-2")).status == "Accepted"

    # The CSMS away: the stack sees its own link drop (as it would without the agent) and
    # comes back once the agent has reconnected.
    connections = csms.connections
    csms.disconnect(cp)
    wait_until(lambda: not stack.connected, 15, "the stack's link to drop")
    stack = sidecar.stack()  # retries while the agent answers 503
    assert csms.connections == connections + 1
    transaction = stack.start_transaction("TAG-2")
    stack.stop_transaction(transaction, 500)
    assert [m.action for m in csms.messages()][-2:] == ["StartTransaction", "StopTransaction"]
    # Every frame the last stack sent arrived, unchanged and in order.
    sent = stack.texts("out")
    arrived = [f.text for f in csms.frames if f.direction == "in"]
    assert arrived[-len(sent) :] == sent


def test_the_agents_reports_survive_the_csms_going_away(sidecar: Sidecar, csms: TestCsms) -> None:
    """A04.FR.02 / L01.FR.01: what the agent reports while the CSMS refuses it or is away
    stays in its outbox and arrives, in order, once the CSMS is back and answering."""
    rig = sidecar.rig
    with FirmwareHttpServer() as server:
        server.put("/fw/2.0.bin", IMAGE)
        bad = Firmware(server.url("/fw/2.0.bin"), IMAGE, rig.sign(IMAGE + b"other"))
        agent = sidecar.start()
        stack = sidecar.stack()
        assert stack.boot().status == "Accepted"
        csms.answer_filter = lambda action, payload: False  # refuse every report for now
        payload = rig.request(bad, 9)
        reply = csms.call(rig.charge_point_id, call.SignedUpdateFirmware(**payload))
        assert reply.status == "Accepted"
        agent.wait_log("InvalidSignature")
        csms.disconnect(rig.charge_point_id)
        wait_until(lambda: not stack.connected, 15, "the stack's link to drop")
        csms.answer_filter = lambda action, payload: True
        stack = sidecar.stack()
        wait_status(csms, 9, "InvalidSignature")
    # Every attempt is recorded, refused ones too: each status was tried until it got
    # through, and none was skipped or reordered across the drop.
    tried = statuses(csms, 9)
    assert list(dict.fromkeys(tried)) == ["Downloading", "Downloaded", "InvalidSignature"], tried
    assert tried[-1] == "InvalidSignature"
    assert len(tried) > 3  # some were refused and sent again
    csms.wait_for(
        lambda: any(
            m.payload["type"] == "InvalidFirmwareSignature"
            for m in csms.messages("SecurityEventNotification")
        ),
        60,
        "the InvalidFirmwareSignature event",
    )
