"""Sidecar mode (issue 13): the charger's stack talks through the agent to the real CSMS.

Every frame either side sent arrives at the other unchanged and in order, byte for byte."""

from __future__ import annotations

import json

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from tests.e2e.conftest import wait_until
from tests.sidecar.conftest import Sidecar


def csms_texts(csms: TestCsms, direction: str) -> list[str]:
    return [f.text for f in list(csms.frames) if f.direction == direction]


@pytest.mark.both_peers
def test_a_charging_session_passes_through_byte_for_byte(sidecar: Sidecar, csms: TestCsms) -> None:
    agent = sidecar.start()
    agent.wait_log("waiting for the charger's OCPP stack")
    stack = sidecar.stack()
    cp = sidecar.rig.charge_point_id

    assert stack.boot().status == "Accepted"
    stack.call(call.Heartbeat())
    stack.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    reply = csms.call(cp, call.RemoteStartTransaction(id_tag="TAG-9", connector_id=1))
    assert reply.status == "Accepted"
    assert stack.remote == [("start", {"id_tag": "TAG-9", "connector_id": 1})]
    transaction = stack.start_transaction("TAG-9")
    stack.meter_values(transaction, 1500)
    stack.meter_values(transaction, 2500)
    assert csms.call(cp, call.RemoteStopTransaction(transaction_id=transaction)).status == (
        "Accepted"
    )
    stack.stop_transaction(transaction, 3000)

    actions = [m.action for m in csms.messages()]
    assert actions == [
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "StartTransaction",
        "MeterValues",
        "MeterValues",
        "StopTransaction",
    ]
    # Both ends saw exactly the same frames, same bytes, same order: the stack's 7 CALLs and
    # 2 answers one way, the CSMS's 7 answers and 2 CALLs the other. The agent added nothing.
    # A CSMS peer reports the frames it sends over its own channel (the Node peer's stdout),
    # so the stack may hold the last answer before the record of it arrives: wait for both.
    csms.wait_for(lambda: len(csms_texts(csms, "in")) == 9, what="9 frames at the CSMS")
    csms.wait_for(lambda: len(csms_texts(csms, "out")) == 9, what="9 frames from the CSMS")
    assert csms_texts(csms, "in") == stack.texts("out")
    assert csms_texts(csms, "out") == stack.texts("in")
    assert len(stack.texts("in")) == 9
    agent.wait_log("transaction 1 stopped")
    status = sidecar.rig.state / "status.json"
    # The status file is published a little after each change: wait for the one that shows the
    # stack's boot (its BootNotification Accepted registers the agent).
    wait_until(
        lambda: (
            json.loads(status.read_text()).get("stack") == "connected"
            and json.loads(status.read_text()).get("registration") == "accepted"
        ),
        15,
        "status showing the stack connected and registered",
    )


def test_a_second_stack_is_refused_and_the_first_keeps_working(
    sidecar: Sidecar, csms: TestCsms
) -> None:
    agent = sidecar.start()
    first = sidecar.stack()
    from tests.sidecar.conftest import Stack

    second = Stack(sidecar.stack_url)
    try:
        try:
            second.connect(timeout=0)
        except AssertionError as exc:
            assert "409" in str(exc)
        else:
            raise AssertionError("a second stack was let in")
    finally:
        second.stop()
    agent.wait_log("a charging stack is already connected; one at a time")
    assert first.boot().status == "Accepted"
