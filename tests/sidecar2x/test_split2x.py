"""The router's split of a 2.x Get/SetVariables between the agent and the stack, at its edges:
the stack leaving before it answers, answering a CALLERROR or the wrong number of results, a
malformed request naming the agent's variables, and Reset applying the network priority only
when the stack accepted it. The real Session, Outbox, ConnectionSettings and Profile2x; the two
links as lists (`test_profile2x` runs the processes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import CsmsConfig
from agent.firmware.reporting import Reporter
from agent.ocpp.dialect import V21, V201, Dialect
from agent.ocpp.outbox import Outbox
from agent.ocpp.session import Session
from agent.security.credentials import ConnectionSettings
from agent.security.profile2x import NetworkProfiles, Profile2x
from agent.service.v2x_adapter import firmware_status_call
from agent.sidecar.mode import Sidecar
from agent.sidecar.router import STACK_AWAY, STACK_LEFT, Router
from tests.v201.test_security_profile_direct import (
    KEY,
    NEW_PASSWORD,
    PASSWORD,
    PRIORITY,
    network_profile,
    variable,
)

HEARTBEAT = ("OCPPCommCtrlr", "HeartbeatInterval")
URL = "ws://127.0.0.1:9/ocpp"


class Links:
    """A 2.x router with the agent's connection variables, between two lists."""

    def __init__(self, tmp_path: Path, dialect: Dialect) -> None:
        assert dialect.payloads is not None
        self.csms: list[str] = []
        self.stack: list[str] = []
        self.reconnects = 0
        self.outbox = Outbox(tmp_path / "outbox.json")
        config = CsmsConfig(
            url=URL, charge_point_id="CP-1", security_profile=1, authorization_key=KEY
        )
        self.settings = ConnectionSettings(
            config, tmp_path, csms_roots=lambda: None, client_certificate=lambda: None
        )
        self.session = Session(self.outbox, lambda: None, dialect=dialect, own_registration=False)
        self.network = Profile2x(
            self.settings,
            NetworkProfiles(tmp_path),
            Reporter(self.outbox, firmware_status_call(dialect.payloads)),
            charge_point_id="CP-1",
            ocpp_version=dialect.version,
            reconnect=self._reconnect,
            payloads=dialect.payloads,
        )
        self.network.register(self.session, reset=False)
        self.router = Router(
            self.session,
            self.csms.append,
            self.stack.append,
            lambda: None,
            dialect=dialect,
            device=Sidecar._device(self.session, self.network),
            on_reset=self.network.apply_priority,
        )
        self.router.csms_connected()
        self.router.stack_connected()

    def _reconnect(self) -> None:
        self.reconnects += 1

    def from_csms(self, unique_id: str, action: str, payload: dict[str, Any]) -> None:
        self.router.from_csms(json.dumps([2, unique_id, action, payload]))

    def answer(self, unique_id: str) -> list[Any]:
        [frame] = [f for f in map(json.loads, self.csms) if f[0] in (3, 4) and f[1] == unique_id]
        return list(frame)

    def forwarded(self) -> list[list[Any]]:
        return [json.loads(t) for t in self.stack]


def mixed_set() -> dict[str, Any]:
    return {
        "setVariableData": [variable(*HEARTBEAT, "60"), variable(*PASSWORD, NEW_PASSWORD)],
        "customData": {"vendorId": "example"},
    }


@pytest.mark.parametrize("dialect", [V201, V21], ids=["2.0.1", "2.1"])
def test_B05_the_stack_leaving_before_it_answers_rejects_only_its_entries(
    tmp_path: Path, dialect: Dialect
) -> None:
    """The agent's entry was done (the password saved, the reconnect once the answer is out);
    the stack's is Rejected InternalError "disconnected before answering". The stack's part
    keeps the request's other fields (customData) and never holds the password."""
    links = Links(tmp_path, dialect)
    links.from_csms("s1", "SetVariables", mixed_set())
    [forwarded] = links.forwarded()
    assert forwarded == [
        2,
        "s1",
        "SetVariables",
        {"customData": {"vendorId": "example"}, "setVariableData": [variable(*HEARTBEAT, "60")]},
    ]
    assert NEW_PASSWORD not in "".join(links.stack)
    assert links.reconnects == 0  # not before the answer is out
    links.router.stack_disconnected()
    results = links.answer("s1")[2]["setVariableResult"]
    assert [r["attributeStatus"] for r in results] == ["Rejected", "Accepted"]
    assert results[0]["attributeStatusInfo"] == {
        "reasonCode": "InternalError",
        "additionalInfo": STACK_LEFT,
    }
    assert links.reconnects == 1
    assert (tmp_path / "authorization_key").read_text() == NEW_PASSWORD.encode().hex()


def test_B05_a_callerror_or_a_miscounted_answer_from_the_stack_rejects_its_entries(
    tmp_path: Path,
) -> None:
    links = Links(tmp_path, V201)
    links.from_csms("s1", "SetVariables", mixed_set())
    links.router.from_stack('[4,"s1","InternalError","busy",{}]')
    assert [r["attributeStatus"] for r in links.answer("s1")[2]["setVariableResult"]] == [
        "Rejected",
        "Accepted",
    ]
    payload = {"getVariableData": [variable(*HEARTBEAT), variable(*PRIORITY)]}
    links.from_csms("g1", "GetVariables", payload)
    links.router.from_stack('[3,"g1",{"getVariableResult":[]}]')
    results = links.answer("g1")[2]["getVariableResult"]
    assert [(r["attributeStatus"], r.get("attributeValue")) for r in results] == [
        ("Rejected", None),
        ("Accepted", "0"),
    ]


def test_B05_a_malformed_request_naming_the_password_is_the_agents_callerror(
    tmp_path: Path,
) -> None:
    """The stack never sees a request holding the agent's variables unless split; one that
    breaks the schema is answered by the agent (CALLERROR), nothing is changed or forwarded."""
    links = Links(tmp_path, V201)
    bad = {"setVariableData": [variable(*HEARTBEAT, "60"), variable(*PASSWORD, NEW_PASSWORD)]}
    bad["setVariableData"][0]["attributeType"] = "Sometimes"
    links.from_csms("s1", "SetVariables", bad)
    assert links.stack == []
    assert links.answer("s1")[:3] == [4, "s1", "PropertyConstraintViolation"]
    assert not (tmp_path / "authorization_key").exists()


def test_B05_with_the_stack_away_the_agent_answers_its_part_at_once(tmp_path: Path) -> None:
    links = Links(tmp_path, V201)
    links.router.stack_disconnected()
    links.from_csms("s1", "SetVariables", mixed_set())
    results = links.answer("s1")[2]["setVariableResult"]
    assert [r["attributeStatus"] for r in results] == ["Rejected", "Accepted"]
    assert results[0]["attributeStatusInfo"]["additionalInfo"] == STACK_AWAY
    assert links.reconnects == 1
    links.from_csms("h1", "Heartbeat", {})  # not the agent's at all: CALLERROR as before
    assert links.answer("h1")[:3] == [4, "h1", "InternalError"]


def test_B10_only_the_stacks_accepted_reset_applies_the_priority(tmp_path: Path) -> None:
    """SetNetworkProfile is the agent's (never forwarded); Reset is forwarded; a Rejected one
    changes nothing, an Accepted one switches the connection (saved, reported, reconnected);
    slot 0 first again leads back to agent.toml's connection."""
    links = Links(tmp_path, V201)
    data = network_profile("ws://127.0.0.1:10/ocpp", 1)
    links.from_csms("n1", "SetNetworkProfile", {"configurationSlot": 1, "connectionData": data})
    assert links.answer("n1")[2] == {"status": "Accepted"} and links.stack == []
    links.from_csms("p1", "SetVariables", {"setVariableData": [variable(*PRIORITY, "1")]})
    assert links.answer("p1")[2]["setVariableResult"][0]["attributeStatus"] == "Accepted"

    links.from_csms("r1", "Reset", {"type": "Immediate"})
    assert links.forwarded()[-1][2] == "Reset"
    links.router.from_stack('[3,"r1",{"status":"Rejected"}]')
    assert links.reconnects == 0 and links.settings.url == URL
    links.from_csms("r2", "Reset", {"type": "Immediate"})
    links.router.from_stack('[3,"r2",{"status":"Accepted"}]')
    assert links.answer("r2") == [3, "r2", {"status": "Accepted"}]
    assert links.reconnects == 1 and links.settings.url == "ws://127.0.0.1:10/ocpp"
    [event] = [e for e in links.outbox.entries() if e.action == "SecurityEventNotification"]
    assert event.payload["techInfo"] == "network profile 1: SecurityProfile 1 -> 1"

    links.settings.connected()  # the new CSMS took the connection: it is final
    links.router.csms_connected()
    links.router.stack_connected()
    links.from_csms("p2", "SetVariables", {"setVariableData": [variable(*PRIORITY, "0,1")]})
    links.from_csms("r3", "Reset", {"type": "OnIdle"})
    links.router.from_stack('[3,"r3",{"status":"Accepted"}]')
    assert links.reconnects == 2 and links.settings.url == URL  # slot 0: agent.toml's again


@pytest.mark.parametrize("dialect", [V201, V21], ids=["2.0.1", "2.1"])
def test_B05_the_agents_variables_in_any_spelling_or_with_an_evse_never_reach_the_stack(
    tmp_path: Path, dialect: Dialect
) -> None:
    """Component and variable names are case-insensitive in 2.x: `securityctrlr` /
    `BASICAUTHPASSWORD` is the agent's password (set, and the reconnect follows), and the
    stack's part never holds it. The agent's name with an EVSE is not forwarded either: the
    agent answers it (its variables are station-wide: UnknownComponent)."""
    links = Links(tmp_path, dialect)
    lower = variable("securityctrlr", "BASICAUTHPASSWORD", NEW_PASSWORD)
    with_evse = variable(*PASSWORD, NEW_PASSWORD + "x")
    with_evse["component"]["evse"] = {"id": 1}
    entries = [variable(*HEARTBEAT, "60"), lower, with_evse]
    links.from_csms("s9", "SetVariables", {"setVariableData": entries})
    [forwarded] = links.forwarded()
    assert forwarded[3] == {"setVariableData": [variable(*HEARTBEAT, "60")]}
    assert NEW_PASSWORD not in "".join(links.stack)
    stack_answer = {
        "setVariableResult": [
            {"attributeStatus": "Accepted", **{k: forwarded[3]["setVariableData"][0][k]
                                               for k in ("component", "variable")}}
        ]
    }  # fmt: skip
    links.router.from_stack(json.dumps([3, "s9", stack_answer]))
    results = links.answer("s9")[2]["setVariableResult"]
    assert [r["attributeStatus"] for r in results] == ["Accepted", "Accepted", "UnknownComponent"]
    assert results[1]["component"] == {"name": "securityctrlr"}  # the request's spelling
    assert links.settings.current().authorization_key == NEW_PASSWORD.encode()
    assert links.reconnects == 1
