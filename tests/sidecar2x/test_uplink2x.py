"""The router's uplink in 2.x: an answer to the CSMS never waits behind a CALL, so that what it
triggers (a reconnect with a new password, the network priority) comes after the CSMS has it
(review #3, B05/B10; OCPP-J §4.1.1). The real Session, Outbox, ConnectionSettings and
Profile2x; the links as lists, the reconnect dropping the CSMS link at once as the transport
does."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from agent.durable import StateWriteError
from agent.ocpp.dialect import V201
from agent.sidecar.router import DOWNLINK_LIMIT, STACK_LEFT
from tests.sidecar2x.test_split2x import HEARTBEAT, Links, mixed_set
from tests.v201.test_security_profile_direct import (
    NEW_PASSWORD,
    PASSWORD,
    PRIORITY,
    network_profile,
    variable,
)

NEW_URL = "ws://127.0.0.1:10/ocpp"
STACK_CALL = json.dumps([2, "st-1", "Heartbeat", {}])


class DroppingLinks(Links):
    """Links whose reconnect drops the CSMS link (what the router has queued is lost), noting
    the answers the CSMS had by then."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, V201)
        self.answered_at_reconnect: list[set[str]] = []

    def _reconnect(self) -> None:
        super()._reconnect()
        sent = [json.loads(t) for t in self.csms]
        self.answered_at_reconnect.append({f[1] for f in sent if f[0] in (3, 4)})
        self.router.csms_disconnected()

    def stack_call_in_flight(self) -> None:
        """The stack's CALL out and unanswered, its next one waiting behind it."""
        self.router.from_stack(STACK_CALL)
        self.router.from_stack(json.dumps([2, "st-2", "Heartbeat", {}]))
        calls = [f[1] for f in map(json.loads, self.csms) if f[0] == 2]
        assert calls == ["st-1"]


def test_B05_a_split_set_variables_is_answered_before_the_new_password_reconnects(
    tmp_path: Path,
) -> None:
    """The stack's CALL in flight, another queued; a SetVariables naming the password and the
    stack's variable: the merged answer reaches the CSMS before the agent reconnects with the
    new password (else the CSMS keeps the old one and the agent is locked out)."""
    links = DroppingLinks(tmp_path)
    links.stack_call_in_flight()
    links.from_csms("s1", "SetVariables", mixed_set())
    assert links.forwarded()[-1][1] == "s1"
    links.router.from_stack(json.dumps([3, "s1", {"setVariableResult": [_accepted(*HEARTBEAT)]}]))
    assert links.reconnects == 1
    assert links.answered_at_reconnect == [{"s1"}]
    results = links.answer("s1")[2]["setVariableResult"]
    assert [r["attributeStatus"] for r in results] == ["Accepted", "Accepted"]


def test_B05_the_agents_own_set_variables_is_answered_before_it_reconnects(
    tmp_path: Path,
) -> None:
    """Only the password named: the agent's session answers, through the same uplink."""
    links = DroppingLinks(tmp_path)
    links.stack_call_in_flight()
    links.from_csms("s2", "SetVariables", {"setVariableData": [variable(*PASSWORD, NEW_PASSWORD)]})
    assert links.reconnects == 1
    assert links.answered_at_reconnect == [{"s2"}]
    assert links.answer("s2")[2]["setVariableResult"][0]["attributeStatus"] == "Accepted"


def test_B10_the_stacks_accepted_reset_reaches_the_csms_before_the_priority_applies(
    tmp_path: Path,
) -> None:
    links = DroppingLinks(tmp_path)
    data = network_profile("ws://127.0.0.1:10/ocpp", 1)
    links.from_csms("n1", "SetNetworkProfile", {"configurationSlot": 1, "connectionData": data})
    links.from_csms("p1", "SetVariables", {"setVariableData": [variable(*PRIORITY, "1")]})
    links.stack_call_in_flight()
    links.from_csms("r1", "Reset", {"type": "Immediate"})
    links.router.from_stack('[3,"r1",{"status":"Accepted"}]')
    assert links.reconnects == 1
    assert "r1" in links.answered_at_reconnect[0]


def test_an_answer_going_ahead_keeps_the_calls_in_order_one_in_flight(tmp_path: Path) -> None:
    """Only answers go ahead: the stack's second CALL still waits for the first's answer."""
    links = DroppingLinks(tmp_path)
    links.stack_call_in_flight()
    links.from_csms("g1", "GetVariables", {"getVariableData": [variable(*HEARTBEAT)]})
    links.router.from_stack(json.dumps([3, "g1", {"getVariableResult": []}]))
    assert [json.loads(t)[1] for t in links.csms] == ["st-1", "g1"]
    links.router.from_csms('[3,"st-1",{"currentTime":"2026-01-01T00:00:00Z"}]')
    assert [json.loads(t)[1] for t in links.csms] == ["st-1", "g1", "st-2"]


def _accepted(component: str, name: str) -> dict[str, Any]:
    return {
        "attributeStatus": "Accepted",
        "component": {"name": component},
        "variable": {"name": name},
    }


def test_a_failing_after_action_is_logged_and_the_answer_stands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review #4: applying the priority raises (a security event that cannot be written):
    the stack's answer is the CSMS's all the same and the router's caller (the daemon's
    loop) never sees the exception."""
    links = DroppingLinks(tmp_path)

    def failing() -> None:
        raise StateWriteError(28, "cannot write outbox.json: No space left on device")

    links.router._on_reset = failing
    links.from_csms("r1", "Reset", {"type": "Immediate"})
    with caplog.at_level(logging.ERROR, logger="agent.sidecar.router"):
        links.router.from_stack('[3,"r1",{"status":"Accepted"}]')
    assert links.answer("r1") == [3, "r1", {"status": "Accepted"}]
    [record] = [r for r in caplog.records if "Reset failed" in r.getMessage()]
    assert record.exc_info is not None and isinstance(record.exc_info[1], StateWriteError)


def test_B05_a_split_set_variables_reaching_a_flooded_stack_is_still_answered(
    tmp_path: Path,
) -> None:
    """Review #6: the stack leaves DOWNLINK_LIMIT CALLs unanswered; a SetVariables naming the
    password and the stack's variable arrives. The agent's part was applied (the password
    saved), so the CSMS gets the answer (the stack's part refused) and only then the
    reconnect; the stack is dropped."""
    links = DroppingLinks(tmp_path)
    dropped: list[int] = []
    links.router._drop_stack = lambda: dropped.append(1)
    for n in range(DOWNLINK_LIMIT):
        links.from_csms(f"g{n}", "GetVariables", {"getVariableData": [variable(*HEARTBEAT)]})
    links.from_csms("s1", "SetVariables", mixed_set())
    assert dropped and links.forwarded()[-1][1] != "s1"
    results = links.answer("s1")[2]["setVariableResult"]
    assert [r["attributeStatus"] for r in results] == ["Rejected", "Accepted"]
    assert results[0]["attributeStatusInfo"]["additionalInfo"] == STACK_LEFT
    assert links.answered_at_reconnect == [{"s1"}]


def test_a_call_reaching_a_flooded_stack_is_answered_internal_error(tmp_path: Path) -> None:
    links = DroppingLinks(tmp_path)
    links.router._drop_stack = lambda: None
    for n in range(DOWNLINK_LIMIT + 1):
        links.from_csms(f"g{n}", "GetVariables", {"getVariableData": [variable(*HEARTBEAT)]})
    assert links.answer(f"g{DOWNLINK_LIMIT}")[:3] == [4, f"g{DOWNLINK_LIMIT}", "InternalError"]


def _priority_to_slot_1(links: DroppingLinks) -> None:
    data = network_profile(NEW_URL, 1)
    links.from_csms("n1", "SetNetworkProfile", {"configurationSlot": 1, "connectionData": data})
    links.from_csms("p1", "SetVariables", {"setVariableData": [variable(*PRIORITY, "1")]})


def test_B10_a_reset_the_stack_schedules_applies_the_priority_when_the_stack_goes_down(
    tmp_path: Path,
) -> None:
    """Review S3: `Scheduled` (a transaction runs) changes nothing yet; the stack's link
    dropping on its own (its reset) then switches the agent's connection."""
    links = DroppingLinks(tmp_path)
    _priority_to_slot_1(links)
    links.from_csms("r1", "Reset", {"type": "OnIdle"})
    links.router.from_stack('[3,"r1",{"status":"Scheduled"}]')
    assert links.answer("r1") == [3, "r1", {"status": "Scheduled"}]
    assert links.reconnects == 0
    links.router.stack_disconnected()
    assert links.reconnects == 1 and links.settings.url == NEW_URL


def test_B10_a_scheduled_reset_ignores_the_stack_drop_the_csms_link_causes(
    tmp_path: Path,
) -> None:
    """The CSMS's link dropping takes the stack's with it: not the stack's reset. The
    schedule stands until the stack goes down while the CSMS's link is up."""
    links = DroppingLinks(tmp_path)
    _priority_to_slot_1(links)
    links.from_csms("r1", "Reset", {"type": "OnIdle"})
    links.router.from_stack('[3,"r1",{"status":"Scheduled"}]')
    links.router.csms_disconnected()
    links.router.stack_disconnected()
    assert links.reconnects == 0
    links.router.csms_connected()
    links.router.stack_connected()
    links.router.stack_disconnected()
    assert links.reconnects == 1 and links.settings.url == NEW_URL
