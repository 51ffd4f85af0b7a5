"""Who said what on the CSMS's one websocket in sidecar mode, for the demo's closing account.

The CSMS sees one charge point. Which of the two behind it spoke is read from the stack's own
record: the agent forwards the stack's frames byte for byte, so a frame the CSMS received that
the stack sent is the stack's, and any other is the agent's (and the same the other way).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

CALL, RESULT, ERROR = 2, 3, 4
ACTION_WIDTH = 33  # SignedFirmwareStatusNotification and a space


class WireFrame(Protocol):
    """A frame as the demo CSMS recorded it (`csms.Frame`)."""

    direction: str  # "in" from the charge point, "out" to it
    text: str
    at: float


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One CALL on the CSMS link and its answer (None when none came)."""

    at: float
    sender: str  # "CSMS", "agent" or "stack"
    recipient: str
    action: str
    payload: dict[str, Any]
    answer: list[Any] | None


def _parse(text: str) -> list[Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) and len(value) >= 3 else None


def exchanges(
    csms_frames: Sequence[WireFrame], stack_frames: Iterable[tuple[str, str]]
) -> list[Exchange]:
    """Every CALL the CSMS sent or received, in order, with whose it was and its answer."""
    stack_sent = {text for direction, text in stack_frames if direction == "out"}
    stack_got = {text for direction, text in stack_frames if direction == "in"}
    parsed = [(frame, _parse(frame.text)) for frame in csms_frames]
    found: list[Exchange] = []
    for index, (frame, message) in enumerate(parsed):
        if message is None or message[0] != CALL or len(message) < 4:
            continue
        if frame.direction == "in":
            sender = "stack" if frame.text in stack_sent else "agent"
            recipient = "CSMS"
        else:
            sender, recipient = "CSMS", "stack" if frame.text in stack_got else "agent"
        answer = next(
            (
                reply
                for later, reply in parsed[index + 1 :]
                if reply is not None
                and later.direction != frame.direction
                and reply[0] in (RESULT, ERROR)
                and reply[1] == message[1]
            ),
            None,
        )
        payload = message[3] if isinstance(message[3], dict) else {}
        found.append(Exchange(frame.at, sender, recipient, str(message[2]), payload, answer))
    return found


def _meter(payload: dict[str, Any]) -> str:
    try:
        return str(payload["meterValue"][0]["sampledValue"][0]["value"]) + " Wh"
    except (KeyError, IndexError, TypeError):
        return "?"


SUMMARIES: dict[str, Any] = {
    "BootNotification": lambda p: f"firmware {p.get('firmwareVersion')}",
    "StatusNotification": lambda p: f"connector {p.get('connectorId')} {p.get('status')}",
    "RemoteStartTransaction": lambda p: f"{p.get('idTag')}",
    "StartTransaction": lambda p: (
        f"connector {p.get('connectorId')}, {p.get('idTag')}, {p.get('meterStart')} Wh"
    ),
    "MeterValues": lambda p: f"transaction {p.get('transactionId')}, {_meter(p)}",
    "StopTransaction": lambda p: f"transaction {p.get('transactionId')}, {p.get('meterStop')} Wh",
    "SignedUpdateFirmware": lambda p: f"requestId {p.get('requestId')}",
    "SignedFirmwareStatusNotification": lambda p: f"{p.get('status')}",
    "SecurityEventNotification": lambda p: f"{p.get('type')}",
    "Heartbeat": lambda p: "",
}


def _answer(answer: list[Any] | None) -> str:
    if answer is None:
        return "(no answer)"
    if answer[0] == ERROR:
        return f"CALLERROR {answer[2] if len(answer) > 2 else '?'}"
    payload = answer[2] if len(answer) > 2 and isinstance(answer[2], dict) else {}
    if "transactionId" in payload:
        return f"transaction {payload['transactionId']}"
    if "status" in payload:
        return str(payload["status"])
    return ""


def render(found: Sequence[Exchange], marks: Sequence[tuple[float, str]] = ()) -> list[str]:
    """One line per exchange (seconds since the first), `marks` (time, text) in between."""
    if not found:
        return []
    start = found[0].at
    lines: list[tuple[float, str]] = [(at, f"           ---- {text} ----") for at, text in marks]
    for exchange in found:
        summary = SUMMARIES.get(exchange.action, lambda p: json.dumps(p)[:60])(exchange.payload)
        answer = _answer(exchange.answer)
        parties = f"{exchange.sender:<5} -> {exchange.recipient:<5}"
        line = f"   {exchange.at - start:6.1f}s  {parties}  {exchange.action:<{ACTION_WIDTH}}"
        line += summary + (f"  => {answer}" if answer else "")
        lines.append((exchange.at, line.rstrip()))
    return [text for _, text in sorted(lines, key=lambda entry: entry[0])]
