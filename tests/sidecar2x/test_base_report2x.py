"""Sidecar mode in 2.0.1 and 2.1: a GetBaseReport's NotifyReports list the agent's variables
too (B07, issue 14).

A real 2.x stack (the `ocpp` library's ChargePoint) behind the agent answers GetBaseReport and
sends its own two NotifyReports; the 2.x test CSMS in front checks every frame against the
schemas. The stack's last NotifyReport reaches the CSMS with tbc true, and the agent's follows
it with the seqNo after the stack's and tbc false. The stack answering NotSupported, or away:
the CSMS gets Accepted and the agent's report alone, from seqNo 0.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import after, on

from agent.demo.csms import Received
from agent.ocpp.dialect import V201
from agent.sidecar.router import REPORTS_PENDING
from tests.sidecar2x.conftest import Sidecar2x, SidecarCsms, Stack2x, _stack_side, library
from tests.sidecar2x.test_profile2x import raw, start
from tests.sidecar2x.test_split2x import Links
from tests.v201.test_security_profile_direct import KEY, Passwords

AGENTS = {
    ("SecurityCtrlr", "BasicAuthPassword"),
    ("SecurityCtrlr", "SecurityProfile"),
    ("SecurityCtrlr", "OrganizationName"),
    ("OCPPCommCtrlr", "NetworkConfigurationPriority"),
}
STACKS = [("AuthCtrlr", "Enabled"), ("OCPPCommCtrlr", "HeartbeatInterval")]


def _side(version: str, status: str) -> type[Any]:
    """The conftest's stack side, answering GetBaseReport with `status` and, when Accepted,
    reporting two variables in two NotifyReports (seqNo 0 and 1, the last tbc false)."""
    module = library(version)

    class Side(_stack_side(version)):  # type: ignore[misc,valid-type]
        @on("GetBaseReport")
        def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
            self.stack.handled.append(f"GetBaseReport {report_base}")
            return module.call_result.GetBaseReport(status=status)

        @after("GetBaseReport")
        def after_get_base_report(self, request_id: int, **_: Any) -> None:
            if status == "Accepted":  # not awaited here: its answers come through this loop
                self.stack.tasks.append(asyncio.ensure_future(self._report(request_id)))

        async def _report(self, request_id: int) -> None:
            for seq_no, (component, name) in enumerate(STACKS):
                data = {
                    "component": {"name": component},
                    "variable": {"name": name},
                    "variableAttribute": [{"type": "Actual", "value": "1"}],
                }
                await self.call(
                    module.call.NotifyReport(
                        request_id=request_id,
                        generated_at="2026-01-01T00:00:00Z",
                        seq_no=seq_no,
                        tbc=seq_no < len(STACKS) - 1,
                        report_data=[data],
                    )
                )

    return Side


def stack_of(sidecar: Sidecar2x, status: str = "Accepted") -> Stack2x:
    stack = Stack2x(sidecar.stack_url, sidecar.version)
    stack.side_class = _side(sidecar.version, status)
    stack.tasks = []  # type: ignore[attr-defined]
    sidecar.stacks.append(stack)
    stack.connect()
    assert stack.boot().status == "Accepted"
    return stack


def reports(csms: SidecarCsms, request_id: int, count: int) -> list[dict[str, Any]]:
    """The NotifyReports of `request_id` at the CSMS, once `count` have come, in order."""

    def of_request() -> list[Received]:
        return [m for m in csms.messages("NotifyReport") if m.payload["request_id"] == request_id]

    found = csms.wait_for(lambda: r if len(r := of_request()) >= count else None)
    return [m.payload for m in found]


def names(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(d["component"]["name"], d["variable"]["name"]) for d in report["report_data"]}


def assert_agents_report(report: dict[str, Any]) -> None:
    """The agent's variables, the write-only password without a value (B07.FR.xx, A01)."""
    assert names(report) == AGENTS
    for data in report["report_data"]:
        attribute = data["variable_attribute"][0]
        if data["variable"]["name"] == "BasicAuthPassword":
            assert "value" not in attribute
            assert attribute["mutability"] == "WriteOnly"
        else:
            assert "value" in attribute


@pytest.mark.parametrize("fixture", ["sidecar201", "sidecar21"])
def test_B07_full_inventory_is_the_stacks_report_then_the_agents(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """GetBaseReport FullInventory: the stack answers Accepted and reports (seqNo 0 tbc true,
    seqNo 1 tbc false); the CSMS gets the stack's two, the last rewritten to tbc true, then the
    agent's (seqNo 2, tbc false): seqNo contiguous, exactly one tbc false, the last."""
    sidecar: Sidecar2x = request.getfixturevalue(fixture)
    csms, cp = sidecar.csms, sidecar.rig.charge_point_id
    start(sidecar, Passwords(KEY))
    stack = stack_of(sidecar)
    answer = raw(csms, cp, "GetBaseReport", {"requestId": 41, "reportBase": "FullInventory"})
    assert answer == [3, answer[1], {"status": "Accepted"}]
    got = reports(csms, 41, 3)
    assert stack.handled == ["GetBaseReport FullInventory"]
    assert [r["seq_no"] for r in got] == [0, 1, 2]
    assert [r.get("tbc", False) for r in got] == [True, True, False]
    assert [names(r) for r in got[:2]] == [{STACKS[0]}, {STACKS[1]}]
    assert_agents_report(got[2])


def test_B07_stack_not_supported_is_accepted_with_the_agents_report_alone(
    sidecar201: Sidecar2x,
) -> None:
    """The stack answers ConfigurationInventory NotSupported: the CSMS gets Accepted and the
    agent's writable variables alone, seqNo 0, tbc false. Rejected stays Rejected, no report."""
    sidecar, csms = sidecar201, sidecar201.csms
    cp = sidecar.rig.charge_point_id
    start(sidecar, Passwords(KEY))
    stack = stack_of(sidecar, "NotSupported")
    answer = raw(
        csms, cp, "GetBaseReport", {"requestId": 42, "reportBase": "ConfigurationInventory"}
    )
    assert answer[2] == {"status": "Accepted"}
    [report] = reports(csms, 42, 1)
    assert stack.handled == ["GetBaseReport ConfigurationInventory"]
    assert (report["seq_no"], report.get("tbc", False)) == (0, False)
    assert names(report) <= AGENTS and ("SecurityCtrlr", "BasicAuthPassword") in names(report)
    assert ("SecurityCtrlr", "SecurityProfile") not in names(report)  # read-only

    stack.stop()
    rejecting = stack_of(sidecar, "Rejected")
    answer = raw(csms, cp, "GetBaseReport", {"requestId": 43, "reportBase": "FullInventory"})
    assert answer[2] == {"status": "Rejected"}
    assert rejecting.handled == ["GetBaseReport FullInventory"]
    # The agent's next CALL after the answer: a report it queued would have come before it.
    trigger = {"requestedMessage": "FirmwareStatusNotification"}
    assert raw(csms, cp, "TriggerMessage", trigger)[2] == {"status": "Accepted"}
    csms.wait_message("FirmwareStatusNotification")
    assert [m.payload["request_id"] for m in csms.messages("NotifyReport")] == [42]


def test_B07_stack_away_the_agent_answers_and_reports_alone(sidecar201: Sidecar2x) -> None:
    """The stack registered (B02: no CALL before that) and left: GetBaseReport FullInventory
    is answered Accepted by the agent and its variables reported alone (seqNo 0, tbc false)
    rather than an InternalError (whether the router saw the stack leave before the request
    or while it was on its way there)."""
    sidecar, csms = sidecar201, sidecar201.csms
    cp = sidecar.rig.charge_point_id
    start(sidecar, Passwords(KEY))
    stack_of(sidecar).stop()
    answer = raw(csms, cp, "GetBaseReport", {"requestId": 44, "reportBase": "FullInventory"})
    assert answer[2] == {"status": "Accepted"}
    [report] = reports(csms, 44, 1)
    assert (report["seq_no"], report.get("tbc", False)) == (0, False)
    assert_agents_report(report)


def _stack_report(links: Links, unique_id: str, request_id: int) -> str:
    """The stack's last NotifyReport of `request_id`, as it sends it; the CSMS answers it."""
    payload = {"requestId": request_id, "generatedAt": "2026-01-01T00:00:00Z", "seqNo": 0}
    text = json.dumps([2, unique_id, "NotifyReport", payload])
    links.router.from_stack(text)
    links.router.from_csms(json.dumps([3, unique_id, {}]))
    return text


def test_B07_the_router_remembers_a_few_reports_and_none_past_the_stack(tmp_path: Path) -> None:
    """At most REPORTS_PENDING accepted reports are remembered (the oldest forgotten), one is
    forgotten once its last NotifyReport passed, and all when the stack leaves: a NotifyReport
    the agent does not complete passes byte for byte, tbc as the stack sent it."""
    links = Links(tmp_path, V201)
    for request_id in range(REPORTS_PENDING + 1):
        unique_id = f"b{request_id}"
        links.from_csms(
            unique_id, "GetBaseReport", {"requestId": request_id, "reportBase": "FullInventory"}
        )
        links.router.from_stack(json.dumps([3, unique_id, {"status": "Accepted"}]))
    forgotten = _stack_report(links, "n0", 0)
    assert forgotten in links.csms
    _stack_report(links, "n1", REPORTS_PENDING)
    rewritten = json.loads(links.csms[-1])
    assert (rewritten[1], rewritten[3]["tbc"]) == ("n1", True)
    again = _stack_report(links, "n2", REPORTS_PENDING)  # its last already passed
    assert again == links.csms[-1]
    links.router.stack_disconnected()
    links.router.stack_connected()
    assert _stack_report(links, "n3", 1) == links.csms[-1]
