"""The router in 2.0.1 and 2.1: which frames are the agent's, what it learns from the stack's
TransactionEvents and BootNotification, and 2.1's extra frames passing through. The real Session
and Outbox, the two links as lists (the process-level tests run the transports)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.ocpp.dialect import V21, V201, Dialect
from agent.ocpp.outbox import Outbox
from agent.ocpp.session import Session
from agent.sidecar.router import Router

BOOT_CONF = {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300}
BOOT_REQ = {
    "chargingStation": {"model": "S-1", "vendorName": "StackVendor"},
    "reason": "PowerUp",
}
UPDATE = {
    "requestId": 7,
    "firmware": {
        "location": "https://fw.example/f.bin",
        "retrieveDateTime": "2026-01-01T00:00:00Z",
    },
}


class Links:
    """A 2.x router between two lists, the session speaking the same version."""

    def __init__(self, tmp_path: Path, dialect: Dialect) -> None:
        self.csms: list[str] = []
        self.stack: list[str] = []
        self.outbox = Outbox(tmp_path / "outbox.json")
        ids = iter(f"agent-{n}" for n in range(1000))
        self.session = Session(
            self.outbox,
            lambda: pytest.fail("no own boot in sidecar mode"),
            dialect=dialect,
            new_id=lambda: next(ids),
            own_registration=False,
        )
        self.router = Router(
            self.session, self.csms.append, self.stack.append, lambda: None, dialect=dialect
        )
        self.router.csms_connected()
        self.router.stack_connected()

    def boot(self) -> None:
        self.router.from_stack(json.dumps([2, "b1", "BootNotification", BOOT_REQ]))
        self.router.from_csms(json.dumps([3, "b1", BOOT_CONF]))


def frames(texts: list[str]) -> list[list[Any]]:
    return [json.loads(t) for t in texts]


def event(unique_id: str, kind: str, transaction: str, seq: int) -> str:
    payload = {
        "eventType": kind,
        "timestamp": "2026-01-01T00:00:00Z",
        "triggerReason": "Authorized",
        "seqNo": seq,
        "transactionInfo": {"transactionId": transaction},
    }
    return json.dumps([2, unique_id, "TransactionEvent", payload])


@pytest.mark.parametrize("dialect", [V201, V21], ids=["2.0.1", "2.1"])
def test_the_stacks_boot_registers_and_its_transaction_events_close_the_gate(
    tmp_path: Path, dialect: Dialect
) -> None:
    """L01.FR.33: the install gate is closed from TransactionEvent Started to Ended, learnt
    from the stack's own messages, forwarded unchanged."""
    links = Links(tmp_path, dialect)
    hooks: list[str] = []
    links.session.on_accepted(lambda: hooks.append("accepted"))
    links.boot()
    assert links.session.accepted and hooks == ["accepted"]  # the trial boot's signal

    started = event("t1", "Started", "tx-a", 0)
    links.router.from_stack(started)
    assert links.csms[-1] == started
    assert links.router.transactions_running() == ["tx-a"]
    links.router.from_csms('[3,"t1",{}]')
    assert links.stack[-1] == '[3,"t1",{}]'
    links.router.from_stack(event("t2", "Updated", "tx-a", 1))
    links.router.from_csms('[3,"t2",{}]')
    assert links.router.transactions_running() == ["tx-a"]
    ended = event("t3", "Ended", "tx-a", 2)
    links.router.from_stack(ended)
    assert links.csms[-1] == ended
    assert links.router.transactions_running() == []


def test_an_updated_event_for_a_transaction_never_seen_starting_closes_the_gate(
    tmp_path: Path,
) -> None:
    """The agent restarted while the stack charged: the next TransactionEvent says so."""
    links = Links(tmp_path, V201)
    links.router.from_stack(event("t9", "Updated", "tx-old", 5))
    assert links.router.transactions_running() == ["tx-old"]


@pytest.mark.parametrize("dialect", [V201, V21], ids=["2.0.1", "2.1"])
def test_update_firmware_and_its_trigger_are_the_agents_the_rest_the_stacks(
    tmp_path: Path, dialect: Dialect
) -> None:
    """UpdateFirmware and TriggerMessage(FirmwareStatusNotification) never reach the stack;
    other triggers and the device model (GetVariables, SetVariables) are the stack's."""
    links = Links(tmp_path, dialect)
    links.boot()
    handled: list[str] = []
    payloads = dialect.payloads
    assert payloads is not None

    def on_update(request: Any) -> Any:
        handled.append("update")
        return payloads.update_firmware_response(status="Accepted")

    def on_trigger(request: Any) -> Any:
        handled.append(request.requested_message.value)
        return payloads.trigger_message_response(status="Accepted")

    links.session.route("UpdateFirmware", on_update)
    links.session.route("TriggerMessage", on_trigger)
    before = list(links.stack)
    links.router.from_csms(json.dumps([2, "u1", "UpdateFirmware", UPDATE]))
    trigger = {"requestedMessage": "FirmwareStatusNotification"}
    links.router.from_csms(json.dumps([2, "u2", "TriggerMessage", trigger]))
    assert links.stack == before
    assert handled == ["update", "FirmwareStatusNotification"]
    assert [f[:2] for f in frames(links.csms)[-2:]] == [[3, "u1"], [3, "u2"]]

    forwarded = [
        json.dumps([2, "g1", "GetVariables", {"getVariableData": []}]),
        json.dumps([2, "g2", "TriggerMessage", {"requestedMessage": "MeterValues"}]),
        json.dumps([2, "g3", "TriggerMessage", {"requestedMessage": "BootNotification"}]),
    ]
    for text in forwarded:
        links.router.from_csms(text)
    assert links.stack[-3:] == forwarded


def test_2_1_send_and_callresulterror_pass_through_both_ways(tmp_path: Path) -> None:
    """2.1 part 4: SEND (6) and CALLRESULTERROR (5) are never answered; the router forwards
    them as they are, and a CALLRESULTERROR about an answer of the agent's stays with it."""
    links = Links(tmp_path, V21)
    links.boot()
    up_send = (
        '[6,"s1","NotifyPeriodicEventStream",'
        '{"id":1,"pending":0,"basetime":"2026-01-01T00:00:00Z","data":[]}]'
    )
    links.router.from_stack(up_send)
    assert links.csms[-1] == up_send
    down_error = '[5,"c9","FormatViolation","bad answer",{}]'
    links.router.from_csms(down_error)
    assert links.stack[-1] == down_error
    down_send = '[6,"s2","Something",{}]'
    links.router.from_csms(down_send)
    assert links.stack[-1] == down_send

    trigger = {"requestedMessage": "FirmwareStatusNotification"}
    links.router.from_csms(json.dumps([2, "u2", "TriggerMessage", trigger]))  # the agent's
    before = list(links.stack)
    links.router.from_csms('[5,"u2","FormatViolation","about the agent",{}]')
    assert links.stack == before


def test_2_0_1_has_no_frame_types_5_and_6(tmp_path: Path) -> None:
    """To 2.0.1 a message type 5 or 6 is unknown (OCPP-J §4.1.3: ignored), never forwarded."""
    links = Links(tmp_path, V201)
    links.boot()
    before = list(links.stack)
    links.router.from_csms('[6,"s2","Something",{}]')
    assert links.stack == before
