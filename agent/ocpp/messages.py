"""OCPP-J 1.6 RPC frames (§4): pure pack and unpack, no I/O.

    CALL        [2, "<UniqueId>", "<Action>", {<Payload>}]
    CALLRESULT  [3, "<UniqueId>", {<Payload>}]
    CALLERROR   [4, "<UniqueId>", "<errorCode>", "<errorDescription>", {<errorDetails>}]

OCPP-J 2.1 (part 4 §4.1.3) adds two, read only when asked for (`unpack(..., ocpp21=True)`;
to every earlier version they are unknown types, to be ignored):

    CALLRESULTERROR [5, "<UniqueId>", "<errorCode>", "<errorDescription>", {<errorDetails>}]
                    (the peer could not process one of our CALLRESULTs)
    SEND            [6, "<UniqueId>", "<Action>", {<Payload>}]  (never answered, §4.2.4)

`unpack` never raises anything but `FrameError`. A frame that is recognisably a CALL (type 2 and a
string id) but malformed carries the CALLERROR to answer it with; anything else that cannot be
read is logged and dropped, because a CALLERROR may only answer a CALL (§4.2.3).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from agent.ocpp.errors import FormationViolation, OcppError, ProtocolError

CALL, CALLRESULT, CALLERROR = 2, 3, 4
CALLRESULTERROR, SEND = 5, 6  # OCPP-J 2.1
MAX_ID_LENGTH = 36


def _dumps(frame: list[Any]) -> str:
    text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. echoed from a CALL id the peer escaped as \ud800) cannot be
        # sent as UTF-8 (§4.1.2); \u escapes keep the JSON, and the id, exactly the same.
        text = json.dumps(frame, separators=(",", ":"))
    return text


@dataclasses.dataclass(frozen=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]

    def to_json(self) -> str:
        return _dumps([CALL, self.unique_id, self.action, self.payload])


@dataclasses.dataclass(frozen=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]

    def to_json(self) -> str:
        return _dumps([CALLRESULT, self.unique_id, self.payload])


@dataclasses.dataclass(frozen=True)
class CallError:
    unique_id: str
    code: str
    description: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return _dumps([CALLERROR, self.unique_id, self.code, self.description, self.details])

    @classmethod
    def answering(cls, unique_id: str, error: OcppError) -> CallError:
        return cls(unique_id, error.code, error.description, error.details)


@dataclasses.dataclass(frozen=True)
class CallResultError:
    """2.1: the peer's complaint about a CALLRESULT we sent (same fields as a CALLERROR)."""

    unique_id: str
    code: str
    description: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Send:
    """2.1: an unconfirmed message; whatever it holds, it is never answered."""

    unique_id: str
    action: str
    payload: dict[str, Any]


Frame = Call | CallResult | CallError | CallResultError | Send


class FrameError(Exception):
    """An unusable frame. `answer` is the CALLERROR to send back, when the frame was a CALL."""

    def __init__(self, reason: str, answer: CallError | None = None) -> None:
        super().__init__(reason)
        self.answer = answer


def unpack(text: str | bytes, *, ocpp21: bool = False) -> Frame | None:
    """Parse one websocket text message. None means: an unknown message type, to be ignored.
    CALLRESULTERROR and SEND are message types only with `ocpp21`."""
    try:
        frame = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"not JSON: {exc}") from None
    except RecursionError:
        raise FrameError("not JSON: nested too deeply") from None
    if not isinstance(frame, list) or not frame:
        raise FrameError("not a JSON array")
    kind = frame[0]
    if type(kind) is not int:
        raise FrameError(f"message type {kind!r} is not an integer")
    known = (CALL, CALLRESULT, CALLERROR) + ((CALLRESULTERROR, SEND) if ocpp21 else ())
    if kind not in known:
        return None  # OCPP-J 1.6 §4.1.3: ignore the payload of an unknown message type
    if len(frame) < 2 or not isinstance(frame[1], str):
        raise FrameError("no string unique id")
    unique_id = frame[1]
    if kind == CALL:
        return _unpack_call(frame, unique_id)
    if kind == CALLRESULT:
        if len(frame) != 3 or not isinstance(frame[2], dict):
            raise FrameError(f"malformed CALLRESULT {unique_id!r}")
        return CallResult(unique_id, frame[2])
    if kind == SEND:  # never answered, not even when malformed (2.1 part 4 §4.2.4)
        if len(frame) != 4 or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
            raise FrameError(f"malformed SEND {unique_id!r}")
        return Send(unique_id, frame[2], frame[3])
    name = "CALLERROR" if kind == CALLERROR else "CALLRESULTERROR"
    if len(frame) != 5 or not all(isinstance(v, str) for v in frame[2:4]):
        raise FrameError(f"malformed {name} {unique_id!r}")
    details = frame[4] if isinstance(frame[4], dict) else {}
    if kind == CALLRESULTERROR:
        return CallResultError(unique_id, frame[2], frame[3], details)
    return CallError(unique_id, frame[2], frame[3], details)


def _unpack_call(frame: list[Any], unique_id: str) -> Call:
    def reject(error: OcppError) -> FrameError:
        return FrameError(
            f"malformed CALL {unique_id!r}: {error}", CallError.answering(unique_id, error)
        )

    if len(unique_id) > MAX_ID_LENGTH:
        raise reject(FormationViolation(f"unique id longer than {MAX_ID_LENGTH} characters"))
    if len(frame) != 4:
        raise reject(FormationViolation(f"a CALL has 4 elements, this one {len(frame)}"))
    action, payload = frame[2], frame[3]
    if not isinstance(action, str) or not action:
        raise reject(ProtocolError("action is not a string"))
    if not isinstance(payload, dict):
        raise reject(FormationViolation("payload is not a JSON object"))
    return Call(unique_id, action, payload)
