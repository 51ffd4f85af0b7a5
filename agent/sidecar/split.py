"""CSMS CALLs the agent and the charger's stack answer together, in sidecar mode.

1.6's GetConfiguration and 2.x's GetVariables/SetVariables may name the agent's keys or
variables (those of the connection it holds) next to the stack's. The agent answers its part,
the stack gets the rest as a CALL of its own, and its answer comes back completed (`Merge`),
in the request's order, before it goes to the CSMS.

2.x, the stack away (or gone before answering, or answering a CALLERROR): its entries are
answered `Rejected` with `attributeStatusInfo` `InternalError` and why (B05/B06 have no status
for a component that cannot be reached; Rejected is "valid but not done", the reason code says
it is the station's fault). The agent's entries are answered as they were done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agent.ocpp.devicemodel import DeviceModel
from agent.ocpp.dialect import Dialect
from agent.ocpp.errors import OcppError
from agent.ocpp.messages import Call, CallError, CallResult
from agent.ocpp.validate import from_wire, to_wire

StackAnswer = CallResult | CallError | str  # a str: why the stack cannot answer


@dataclasses.dataclass(frozen=True)
class Merge:
    """Completes the stack's answer (`merge`; None: the default handling) and runs `after`
    once the completed answer is on its way."""

    merge: Callable[[StackAnswer], str | None]
    after: Callable[[], None] = lambda: None


# action: (request entries key, answer entries key)
_VARIABLE_KEYS = {
    "GetVariables": ("getVariableData", "getVariableResult"),
    "SetVariables": ("setVariableData", "setVariableResult"),
}


def _ours(entry: Any, owned: frozenset[tuple[str, str]]) -> bool:
    """An entry naming one of the agent's variables (`owned`: case-folded names; 2.x names are
    case-insensitive), in any spelling and with or without an instance or EVSE: it never
    reaches the stack (a password in it would), and the agent answers what it does not hold
    (UnknownComponent/UnknownVariable: its variables are station-wide)."""
    if not isinstance(entry, dict):
        return False
    component, variable = entry.get("component"), entry.get("variable")
    if not isinstance(component, dict) or not isinstance(variable, dict):
        return False
    component_name, variable_name = component.get("name"), variable.get("name")
    if not isinstance(component_name, str) or not isinstance(variable_name, str):
        return False
    return (component_name.casefold(), variable_name.casefold()) in owned


@dataclasses.dataclass(frozen=True)
class Split:
    """Who answers a Get/SetVariables: `agent` (all of it), `stack` (all of it, `text`
    unchanged), or both (`text` the stack's part, `merge` to complete its answer)."""

    who: str
    text: str | None = None
    merge: Merge | None = None


def split_variables(call: Call, text: str, dialect: Dialect, device: DeviceModel) -> Split:
    request_key, result_key = _VARIABLE_KEYS[call.action]
    owned = device.names()
    entries = call.payload.get(request_key) if isinstance(call.payload, dict) else None
    mine = (
        [i for i, e in enumerate(entries) if _ours(e, owned)] if isinstance(entries, list) else []
    )
    if not mine:
        return Split("stack", text)
    assert isinstance(entries, list)
    try:  # the whole request must be valid: the agent answers a CALLERROR otherwise
        from_wire(dialect.incoming[call.action], dialect.clean(call.payload))
    except OcppError:
        return Split("agent")
    if len(mine) == len(entries):
        return Split("agent")
    ours_payload = {request_key: [entries[i] for i in mine]}
    request = from_wire(dialect.incoming[call.action], dialect.clean(ours_payload))
    getting = call.action == "GetVariables"
    response: Any = device.get_variables(request) if getting else device.set_variables(request)

    def after() -> None:
        if not getting:
            device.after_set_variables(request, response)

    ours = to_wire(response)[result_key]
    taken = set(mine)  # a large request: a list's `in` would make this quadratic
    theirs_idx = [i for i in range(len(entries)) if i not in taken]
    theirs = [entries[i] for i in theirs_idx]
    forward = {k: v for k, v in call.payload.items() if k != request_key}
    forward[request_key] = theirs

    def merge(answer: StackAnswer) -> str | None:
        results: list[Any] | None = None
        why = answer if isinstance(answer, str) else "the charging stack did not answer them"
        if isinstance(answer, CallResult):
            got = answer.payload.get(result_key)
            if isinstance(got, list) and len(got) == len(theirs):
                results = got
        if results is None:
            results = [_unreached(entry, why) for entry in theirs]
        merged: list[Any] = [None] * len(entries)
        for i, result in zip(mine, ours, strict=True):
            merged[i] = result
        for i, result in zip(theirs_idx, results, strict=True):
            merged[i] = result
        return CallResult(call.unique_id, {result_key: merged}).to_json()

    return Split("both", Call(call.unique_id, call.action, forward).to_json(), Merge(merge, after))


def _unreached(entry: dict[str, Any], why: str) -> dict[str, Any]:
    """The answer to one of the stack's entries when the stack cannot give it."""
    result: dict[str, Any] = {
        "attributeStatus": "Rejected",
        "component": entry["component"],
        "variable": entry["variable"],
        "attributeStatusInfo": {"reasonCode": "InternalError", "additionalInfo": why[:512]},
    }
    if "attributeType" in entry:
        result["attributeType"] = entry["attributeType"]
    return result
