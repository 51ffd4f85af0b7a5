"""A handler's deferred answer (`Deferred`): the session answers other CALLs meanwhile, sends
the late CALLRESULT then runs the after-hook, and never decides (nor answers) a CALL whose
connection is gone. What the firmware check needs to ask online without holding the loop
(L01.FR.23: the answer still comes after the certificate check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.ocpp import v16
from agent.ocpp.session import Deferred
from tests.unit.test_session import Harness

TRIGGER = v16.Action.TRIGGER_MESSAGE.value


def call(h: Harness, unique_id: str, payload: dict[str, Any]) -> None:
    h.session.receive(json.dumps([2, unique_id, TRIGGER, payload]))


def routed(h: Harness) -> tuple[list[Deferred], list[tuple[Any, Any]]]:
    """TriggerMessage(Heartbeat) answered at once, any other requested message deferred."""
    pending: list[Deferred] = []
    after: list[tuple[Any, Any]] = []

    def handler(request: Any) -> Any:
        if request.requested_message.value == "Heartbeat":
            return v16.TriggerMessageConf(status=v16.TriggerStatus.ACCEPTED)
        pending.append(Deferred())
        return pending[-1]

    h.session.route(TRIGGER, handler, lambda request, conf: after.append((request, conf)))
    return pending, after


def accepted() -> v16.TriggerMessageConf:
    return v16.TriggerMessageConf(status=v16.TriggerStatus.ACCEPTED)


def test_a_deferred_answer_goes_out_later_and_other_calls_are_answered_meanwhile(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    pending, after = routed(h)
    h.connect()
    h.take()
    call(h, "late", {"requestedMessage": "BootNotification"})
    assert h.take() == [] and after == []  # nothing yet
    call(h, "now", {"requestedMessage": "Heartbeat"})
    assert h.take() == [[3, "now", {"status": "Accepted"}]]

    pending[0].answer(accepted)
    assert h.take() == [[3, "late", {"status": "Accepted"}]]
    assert [conf.status for _, conf in after] == ["Accepted", "Accepted"]
    assert after[1][0].requested_message.value == "BootNotification"


def test_a_deferred_answer_is_never_produced_once_its_connection_is_gone(tmp_path: Path) -> None:
    """The decision waits for the answer: a CALL whose answer cannot be sent decides nothing."""
    h = Harness(tmp_path)
    pending, after = routed(h)
    h.connect()
    h.take()
    call(h, "late", {"requestedMessage": "BootNotification"})
    h.session.disconnected()
    h.connect()  # a new connection: the CSMS's CALL on the old one is not answered on it
    h.take()
    produced: list[bool] = []

    def produce() -> v16.TriggerMessageConf:
        produced.append(True)
        return accepted()

    pending[0].answer(produce)
    assert produced == [] and after == [] and h.take() == []


def test_a_deferred_answer_can_be_converted_and_a_failure_is_a_callerror(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    pending, after = routed(h)
    h.connect()
    h.take()
    call(h, "one", {"requestedMessage": "BootNotification"})
    call(h, "two", {"requestedMessage": "BootNotification"})
    pending[0].then(lambda conf: v16.TriggerMessageConf(status=v16.TriggerStatus.REJECTED))
    pending[0].answer(accepted)
    assert h.take() == [[3, "one", {"status": "Rejected"}]]

    def broken() -> Any:
        raise RuntimeError("a bug")

    pending[1].answer(broken)
    frame = h.take_one()
    assert frame[:3] == [4, "two", "InternalError"]
    assert len(after) == 1  # no after-hook for a CALLERROR
