"""Sidecar mode in 2.0.1 and 2.1 when a link goes away: the stack away, the stack leaving in the
middle of a CSMS CALL, the CSMS away and back (the 1.6 cases of `tests/sidecar`, in 2.x). A real
2.x stack (the `ocpp` library's ChargePoint; for the mid-call case a bare websocket that reads
the CALL and leaves) behind the agent, the 2.x test CSMS in front."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.sync.client import ClientConnection, connect

from agent.demo.waiting import deadline
from tests.e2e.conftest import wait_until
from tests.sidecar2x.conftest import Sidecar2x, SidecarCsms

START = {"idToken": {"idToken": "TAG-1", "type": "ISO14443"}, "remoteStartId": 1}


def raw(csms: SidecarCsms, cp: str, action: str, payload: dict[str, Any]) -> list[Any]:
    unique_id = f"raw-{time.monotonic_ns()}"
    csms.send_raw(cp, json.dumps([2, unique_id, action, payload]))
    return csms.answer_to(unique_id, timeout=20)


def forwarded_once_linked(bare: ClientConnection, csms: SidecarCsms, cp: str) -> tuple[str, Any]:
    """Send RequestStartTransaction until the agent forwards it to `bare`: right after the
    handshake the agent's loop may not have taken the new link yet, and then answers "not
    connected" (correctly); that answer is the cue to send again."""
    give_up = time.monotonic() + deadline(60)
    while time.monotonic() < give_up:
        unique_id = f"rs-{time.monotonic_ns()}"
        csms.send_raw(cp, json.dumps([2, unique_id, "RequestStartTransaction", START]))
        while csms.answer_index(unique_id) is None:
            try:
                return unique_id, json.loads(bare.recv(timeout=0.2))
            except TimeoutError:
                continue
    raise AssertionError("the agent never forwarded a CALL to the new stack link")


def stack_gone(sidecar: Sidecar2x) -> None:
    """The agent started, a stack booted through it and left; the agent saw it go."""
    agent = sidecar.start()
    stack = sidecar.stack()
    assert stack.boot().status == "Accepted"
    stack.stop()
    agent.wait_log("the charging stack disconnected")


def test_the_2_0_1_stack_away_gets_internal_error_and_the_agents_work_goes_on(
    sidecar201: Sidecar2x,
) -> None:
    """The stack away: a CSMS CALL meant for it is answered CALLERROR InternalError saying
    why; the agent's own (TriggerMessage FirmwareStatusNotification) is answered and its
    notification sent. The stack back: its traffic flows again."""
    sidecar, csms = sidecar201, sidecar201.csms
    cp = sidecar.rig.charge_point_id
    stack_gone(sidecar)

    answer = raw(csms, cp, "RequestStartTransaction", START)
    assert answer[:3] == [4, answer[1], "InternalError"]
    assert "charging stack is not connected" in answer[3]
    trigger = raw(csms, cp, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    assert trigger[2] == {"status": "Accepted"}
    assert csms.wait_message("FirmwareStatusNotification")[-1].payload == {"status": "Idle"}

    stack = sidecar.stack()
    stack.heartbeat()
    assert csms.messages("Heartbeat")


def test_the_2_1_stack_leaving_mid_call_is_answered_for_and_the_csms_away_and_back(
    sidecar21: Sidecar2x,
) -> None:
    """A stack that read a CSMS CALL and left without answering: the CSMS gets CALLERROR
    InternalError "disconnected before answering" (never silence). The CSMS away: the stack's
    link drops too (as it would without the agent) and comes back once the agent reconnected;
    every frame it sends then arrives unchanged and in order."""
    sidecar, csms = sidecar21, sidecar21.csms
    cp = sidecar.rig.charge_point_id
    stack_gone(sidecar)

    with connect(sidecar.stack_url, subprotocols=["ocpp2.1"]) as bare:  # type: ignore[list-item]
        unique_id, received = forwarded_once_linked(bare, csms, cp)
        assert received[:3] == [2, unique_id, "RequestStartTransaction"]
    answer = csms.answer_to(unique_id, timeout=20)
    assert answer[:3] == [4, unique_id, "InternalError"]
    assert "disconnected before answering" in answer[3]

    stack = sidecar.stack()
    connections = csms.connections
    csms.disconnect(cp)
    wait_until(lambda: not stack.connected, 30, "the stack's link to drop with the CSMS's")
    stack = sidecar.stack()  # retries while the agent answers 503
    assert csms.connections == connections + 1
    stack.heartbeat()
    stack.transaction_event("Started", "tx-1", 100)
    sent = stack.texts("out")
    arrived = [f.text for f in csms.frames if f.direction == "in"]
    assert arrived[-len(sent) :] == sent
