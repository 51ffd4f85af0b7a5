"""The router's ordering rules, with the real Session and Outbox and the two links as lists
(the transports themselves are covered by the process-level tests next to this one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.ocpp import v16
from agent.ocpp.outbox import Outbox
from agent.ocpp.session import Session
from agent.sidecar.router import UPLINK_LIMIT, Router

BOOT_CONF = {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300}


class Links:
    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.csms: list[str] = []
        self.stack: list[str] = []
        self.dropped = 0
        self.outbox = Outbox(tmp_path / "outbox.json")
        ids = iter(f"agent-{n}" for n in range(1000))
        self.session = Session(
            self.outbox,
            lambda: pytest.fail("no own boot"),
            new_id=lambda: next(ids),
            own_registration=False,
        )
        self.router = Router(
            self.session, self.csms.append, self.stack.append, self._drop, **options
        )
        self.router.csms_connected()
        self.router.stack_connected()

    def _drop(self) -> None:
        self.dropped += 1

    def boot(self) -> None:
        self.router.from_stack(
            '[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
        )
        self.router.from_csms(json.dumps([3, "b1", BOOT_CONF]))


def frames(texts: list[str]) -> list[list[Any]]:
    return [json.loads(t) for t in texts]


def test_the_agents_call_waits_for_the_stacks_and_answers_find_their_owner(tmp_path: Path) -> None:
    links = Links(tmp_path)
    links.boot()
    assert links.session.accepted  # learnt from the stack's BootNotification.conf
    assert frames(links.stack)[-1][0:2] == [3, "b1"]

    links.router.from_stack('[2,"agent-0","Heartbeat",{}]')  # same id the agent will use
    links.outbox.append(
        "SecurityEventNotification", {"type": "X", "timestamp": "2026-01-01T00:00:00Z"}
    )
    links.session.poll()
    # One CALL in flight: the agent's waits behind the stack's.
    assert [f[2] for f in frames(links.csms) if f[0] == 2] == ["BootNotification", "Heartbeat"]
    links.router.from_csms('[3,"agent-0",{"currentTime":"2026-01-01T00:00:00Z"}]')
    # The answer went to the stack (whose CALL was in flight), and the agent's CALL left.
    assert links.stack[-1] == '[3,"agent-0",{"currentTime":"2026-01-01T00:00:00Z"}]'
    assert frames(links.csms)[-1][2] == "SecurityEventNotification"
    agent_id = frames(links.csms)[-1][1]
    assert len(links.outbox) == 1
    links.router.from_csms(f'[3,"{agent_id}",{{}}]')
    assert len(links.outbox) == 0  # acknowledged: the answer reached the session
    assert all(f[1] != agent_id for f in frames(links.stack))


def test_csms_calls_go_to_the_stack_unless_they_are_the_agents(tmp_path: Path) -> None:
    links = Links(tmp_path)
    links.boot()
    remote = '[2,"c1","RemoteStartTransaction",{"idTag":"T"}]'
    links.router.from_csms(remote)
    assert links.stack[-1] == remote
    legacy = (
        '[2,"c2","UpdateFirmware",{"location":"http://x/f","retrieveDate":"2026-01-01T00:00:00Z"}]'
    )
    links.router.from_csms(legacy)
    assert links.stack[-1] == remote  # not forwarded
    assert frames(links.csms)[-1][:3] == [4, "c2", "NotSupported"]  # L01.FR.20
    trigger = '[2,"c3","TriggerMessage",{"requestedMessage":"MeterValues"}]'
    links.router.from_csms(trigger)
    assert links.stack[-1] == trigger

    # The stack leaves with c1 and c3 unanswered: the CSMS hears why, once each.
    links.router.stack_disconnected()
    answers = [f for f in frames(links.csms) if f[0] == 4 and f[1] in ("c1", "c3")]
    assert [(f[1], f[2]) for f in answers] == [("c1", "InternalError"), ("c3", "InternalError")]
    assert all("disconnected before answering" in f[3] for f in answers)
    links.router.from_csms('[2,"c4","Reset",{"type":"Soft"}]')
    assert frames(links.csms)[-1][:3] == [4, "c4", "InternalError"]
    assert "not connected" in frames(links.csms)[-1][3]


def test_legacy_update_firmware_can_be_forwarded(tmp_path: Path) -> None:
    links = Links(tmp_path, refuse_update_firmware=False)
    legacy = (
        '[2,"c2","UpdateFirmware",{"location":"http://x/f","retrieveDate":"2026-01-01T00:00:00Z"}]'
    )
    links.router.from_csms(legacy)
    assert links.stack == [legacy]


def test_transactions_close_the_gate_from_start_request_to_stop(tmp_path: Path) -> None:
    links = Links(tmp_path)
    links.boot()
    links.router.from_stack(
        '[2,"s1","StartTransaction",{"connectorId":1,"idTag":"T","meterStart":0,"timestamp":"2026-01-01T00:00:00Z"}]'
    )
    assert links.router.transactions_running()  # starting: already no install
    links.router.from_csms('[3,"s1",{"transactionId":42,"idTagInfo":{"status":"Accepted"}}]')
    assert links.router.transactions_running() == [42]
    links.router.from_stack(
        '[2,"s2","StopTransaction",{"transactionId":42,"meterStop":5,"timestamp":"2026-01-01T00:00:00Z"}]'
    )
    assert links.router.transactions_running() == []


def test_losing_the_csms_drops_the_stack(tmp_path: Path) -> None:
    links = Links(tmp_path)
    links.router.csms_disconnected()
    assert links.dropped == 1
    assert not links.session.connected
    assert v16.Action.BOOT_NOTIFICATION not in [f[2] for f in frames(links.csms) if f[0] == 2]


def test_the_uplink_is_bounded_on_both_sides(tmp_path: Path) -> None:
    """A stack that floods while a CALL is in flight is dropped; a CSMS that floods the
    agent with triggers meanwhile gets every answer at once (OCPP-J: answers need not wait
    for the CALL in flight), so none piles up in the uplink."""
    links = Links(tmp_path)
    links.boot()
    links.router.from_stack('[2,"h1","Heartbeat",{}]')  # in flight, never answered
    for n in range(UPLINK_LIMIT + 1):
        links.router.from_stack(f'[2,"s{n}","Heartbeat",{{}}]')
    assert links.dropped == 1
    for n in range(3 * UPLINK_LIMIT):
        trigger = {"requestedMessage": "FirmwareStatusNotification"}
        links.router.from_csms(json.dumps([2, f"t{n}", "TriggerMessage", trigger]))
    answered = [f[1] for f in map(json.loads, links.csms) if f[0] in (3, 4)]
    assert answered[-3 * UPLINK_LIMIT :] == [f"t{n}" for n in range(3 * UPLINK_LIMIT)]
    assert len(links.router._uplink) <= UPLINK_LIMIT + 1  # the stack's, the agent's one CALL


def test_after_an_agent_restart_the_stacks_answered_calls_stand_for_registration(
    tmp_path: Path,
) -> None:
    """The stack did not reboot with the agent, so no BootNotification comes: an answered
    CALL of the stack lets the outbox flow, but the trial boot's acceptance hook still
    waits for a real BootNotification.conf."""
    links = Links(tmp_path)
    hooks: list[str] = []
    links.session.on_accepted(lambda: hooks.append("accepted"))
    links.router.from_stack('[2,"h1","Heartbeat",{}]')
    assert not links.session.accepted
    links.router.from_csms('[3,"h1",{"currentTime":"2026-01-01T00:00:00Z"}]')
    assert links.session.accepted and hooks == []
    links.boot()
    assert hooks == ["accepted"]
