"""Sidecar mode in 2.0.1 and 2.1: the connection's password and profile are the agent's.

A real 2.x stack (the conftest's `ocpp` ChargePoint, answering SetVariables and Reset too) behind
the agent, the 2.x test CSMS in front checking HTTP Basic auth. A GetVariables/SetVariables
naming the agent's variables and the stack's is split: the agent answers its entries, the stack
gets only its own, and the CSMS one answer in the request's order (B05/B06). The password never
reaches the stack (A01); SetNetworkProfile is the agent's (B09); the stack's accepted Reset moves
the agent to the priority's first profile (B10).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agent.demo.rig import AgentProcess
from agent.sidecar.router import STACK_AWAY, STACK_LEFT
from tests.e2e.conftest import wait_until
from tests.sidecar2x.conftest import (
    Sidecar2x,
    SidecarCsms,
    Stack2x,
)
from tests.v201.test_security_profile_direct import (
    KEY,
    KEY_HEX,
    NEW_PASSWORD,
    PASSWORD,
    PRIORITY,
    PROFILE,
    Passwords,
    network_profile,
    variable,
)

HEARTBEAT = ("OCPPCommCtrlr", "HeartbeatInterval")  # the stack's in sidecar mode
AUTH_ENABLED = ("AuthCtrlr", "Enabled")


def stack_of(sidecar: Sidecar2x) -> Stack2x:
    stack = Stack2x(sidecar.stack_url, sidecar.version)
    sidecar.stacks.append(stack)
    stack.connect()
    assert stack.boot().status == "Accepted"
    return stack


def start(sidecar: Sidecar2x, passwords: Passwords) -> AgentProcess:
    sidecar.csms.auth = passwords
    return sidecar.start(csms={"security_profile": 1, "authorization_key": KEY_HEX})


def raw(csms: SidecarCsms, cp: str, action: str, payload: dict[str, Any]) -> list[Any]:
    unique_id = f"raw-{time.monotonic_ns()}"
    csms.send_raw(cp, json.dumps([2, unique_id, action, payload]))
    return csms.answer_to(unique_id, timeout=20)


def stack_calls(stack: Stack2x, action: str) -> list[dict[str, Any]]:
    """The payloads of the CALLs `action` the stack received."""
    frames = [json.loads(text) for text in stack.texts("in")]
    return [f[3] for f in frames if f[0] == 2 and f[2] == action]


def test_A01_B05_a_mixed_set_variables_is_split_and_the_stack_never_sees_the_password(
    sidecar201: Sidecar2x,
) -> None:
    """B05 + A01: SetVariables of [HeartbeatInterval (the stack's), BasicAuthPassword,
    AuthCtrlr.Enabled (the stack's), NetworkConfigurationPriority (invalid)]: the stack gets a
    SetVariables of its two entries only; the CSMS gets four results in its order (the
    stack's two, Accepted for the password, Rejected InvalidValue for the priority); the agent
    reconnects with the new password (the stack's link with it) and logs it nowhere."""
    sidecar, csms = sidecar201, sidecar201.csms
    cp = sidecar.rig.charge_point_id
    passwords = Passwords(KEY)
    agent = start(sidecar, passwords)
    stack = stack_of(sidecar)
    passwords.accepted.add(NEW_PASSWORD.encode())
    connections = csms.connections

    entries = [
        variable(*HEARTBEAT, "60"),
        variable(*PASSWORD, NEW_PASSWORD),
        variable(*AUTH_ENABLED, "true"),
        variable(*PRIORITY, "7"),
    ]
    answer = raw(csms, cp, "SetVariables", {"setVariableData": entries})
    assert answer[0] == 3, answer
    results = answer[2]["setVariableResult"]
    assert [(r["component"]["name"], r["variable"]["name"]) for r in results] == [
        HEARTBEAT,
        PASSWORD,
        AUTH_ENABLED,
        PRIORITY,
    ]
    assert [r["attributeStatus"] for r in results] == ["Accepted"] * 3 + ["Rejected"]
    assert results[3]["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
    assert stack_calls(stack, "SetVariables") == [
        {"setVariableData": [variable(*HEARTBEAT, "60"), variable(*AUTH_ENABLED, "true")]}
    ]

    passwords.accepted = {NEW_PASSWORD.encode()}
    csms.wait_for(lambda: csms.connections > connections and csms.connected(cp), 30, "reconnect")
    assert passwords.seen[-1] == NEW_PASSWORD.encode()
    wait_until(lambda: not stack.connected, 30, "the stack's link to drop with the CSMS's")
    stack = stack_of(sidecar)
    assert not any(NEW_PASSWORD in text for s in sidecar.stacks for text in s.texts("in"))
    assert NEW_PASSWORD not in agent.log


def test_B06_a_mixed_get_variables_is_merged_in_order_also_with_the_stack_away(
    sidecar21: Sidecar2x,
) -> None:
    """B06 (2.1): GetVariables of [SecurityProfile, HeartbeatInterval, BasicAuthPassword]:
    the agent answers the profile in use and Rejected for the WriteOnly password, the stack its
    one entry. With the stack away its entry is Rejected with InternalError and why (there is
    no status for a component that cannot be reached), the agent's are answered as before;
    B09: SetNetworkProfile is answered by the agent, the stack there or not, and never
    forwarded."""
    sidecar, csms = sidecar21, sidecar21.csms
    cp = sidecar.rig.charge_point_id
    start(sidecar, Passwords(KEY))
    stack = stack_of(sidecar)
    payload = {"getVariableData": [variable(*PROFILE), variable(*HEARTBEAT), variable(*PASSWORD)]}

    answer = raw(csms, cp, "GetVariables", payload)
    results = answer[2]["getVariableResult"]
    assert [(r["attributeStatus"], r.get("attributeValue")) for r in results] == [
        ("Accepted", "1"),
        ("Accepted", "stack's"),
        ("Rejected", None),
    ]
    assert stack_calls(stack, "GetVariables") == [{"getVariableData": [variable(*HEARTBEAT)]}]
    data = network_profile("ws://127.0.0.1:1/ocpp", 1, "2.1")
    answer = raw(csms, cp, "SetNetworkProfile", {"configurationSlot": 1, "connectionData": data})
    assert answer[2] == {"status": "Accepted"}

    stack.stop()
    answer = raw(csms, cp, "GetVariables", payload)
    results = answer[2]["getVariableResult"]
    assert [r["attributeStatus"] for r in results] == ["Accepted", "Rejected", "Rejected"]
    assert results[0]["attributeValue"] == "1"
    info = results[1]["attributeStatusInfo"]
    assert info["reasonCode"] == "InternalError"
    assert info["additionalInfo"] in (STACK_AWAY, STACK_LEFT)
    data = network_profile("ws://127.0.0.1:2/ocpp", 1, "2.1")
    answer = raw(csms, cp, "SetNetworkProfile", {"configurationSlot": 2, "connectionData": data})
    assert answer[2] == {"status": "Accepted"}
    assert stack_calls(stack, "SetNetworkProfile") == []


@pytest.fixture
def second_csms() -> Any:
    server = SidecarCsms("2.0.1").start()
    yield server
    server.stop()
    assert server.schema_violations == []


def test_B10_the_stacks_accepted_reset_moves_the_agent_to_the_new_csms(
    sidecar201: Sidecar2x, second_csms: SidecarCsms
) -> None:
    """B09/B10 behind the agent: SetNetworkProfile (the agent's) and the priority (the agent's
    variable) name another CSMS; Reset is the stack's and reaches it; once the stack accepted
    it, the agent connects to the new CSMS, drops the stack's link with the old one, and the
    stack registers at the new CSMS through the agent; the change is reported there."""
    sidecar, old, new = sidecar201, sidecar201.csms, second_csms
    cp = sidecar.rig.charge_point_id
    start(sidecar, Passwords(KEY))
    stack = stack_of(sidecar)
    data = network_profile(new.url, 1)
    answer = raw(old, cp, "SetNetworkProfile", {"configurationSlot": 1, "connectionData": data})
    assert answer[2] == {"status": "Accepted"}
    priority = {"setVariableData": [variable(*PRIORITY, "1,0")]}
    assert (
        raw(old, cp, "SetVariables", priority)[2]["setVariableResult"][0]["attributeStatus"]
        == "Accepted"
    )

    answer = raw(old, cp, "Reset", {"type": "OnIdle"})
    assert answer[2] == {"status": "Accepted"}
    assert "Reset OnIdle" in stack.handled
    new.wait_for(lambda: new.connected(cp), 30, "the agent at the new CSMS")
    wait_until(lambda: not stack.connected, 30, "the stack's link to drop")
    stack_of(sidecar)
    assert [m.charge_point_id for m in new.messages("BootNotification")] == [cp]
    event = new.wait_message("SecurityEventNotification")[0].payload
    assert event["tech_info"] == "network profile 1: SecurityProfile 1 -> 1"
    assert not any(
        stack_calls(s, action) for s in sidecar.stacks for action in ("SetNetworkProfile",)
    )
    assert stack_calls(stack, "SetVariables") == []  # the priority was the agent's alone
