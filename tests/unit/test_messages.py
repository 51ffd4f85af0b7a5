"""OCPP-J 1.6 frames (§4): pack and unpack of CALL, CALLRESULT and CALLERROR, malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.ocpp.errors import ERROR_CODES, FormationViolation, OcppError
from agent.ocpp.messages import (
    MAX_ID_LENGTH,
    Call,
    CallError,
    CallResult,
    FrameError,
    unpack,
)

# --- well-formed frames ------------------------------------------------------------------------


def test_call_packs_to_the_4_element_array_and_back() -> None:
    """CALL = [2, "<UniqueId>", "<Action>", {<Payload>}] (OCPP-J 1.6 §4.2.1)."""
    call = Call("19223201", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    text = call.to_json()
    assert json.loads(text) == [
        2,
        "19223201",
        "BootNotification",
        {"chargePointVendor": "V", "chargePointModel": "M"},
    ]
    assert unpack(text) == call


def test_callresult_packs_to_the_3_element_array_and_back() -> None:
    """CALLRESULT = [3, "<UniqueId>", {<Payload>}] (OCPP-J 1.6 §4.2.2)."""
    result = CallResult("19223201", {"status": "Accepted"})
    assert json.loads(result.to_json()) == [3, "19223201", {"status": "Accepted"}]
    assert unpack(result.to_json()) == result


def test_callerror_packs_to_the_5_element_array_and_back() -> None:
    """CALLERROR = [4, id, errorCode, errorDescription, {errorDetails}] (OCPP-J 1.6 §4.2.3)."""
    error = CallError("162376037", "NotSupported", "SetDisplayMessage not implemented", {"a": 1})
    assert json.loads(error.to_json()) == [
        4,
        "162376037",
        "NotSupported",
        "SetDisplayMessage not implemented",
        {"a": 1},
    ]
    assert unpack(error.to_json()) == error


def test_empty_payloads_are_empty_objects_never_null() -> None:
    """`{}` for an empty payload; errorDescription "" and errorDetails {} when there are none."""
    assert Call("1", "Heartbeat", {}).to_json() == '[2,"1","Heartbeat",{}]'
    assert CallResult("1", {}).to_json() == '[3,"1",{}]'
    assert CallError("1", "GenericError").to_json() == '[4,"1","GenericError","",{}]'
    assert unpack('[3,"1",{}]') == CallResult("1", {})


def test_frames_are_utf8_json_with_non_ascii_text_kept_as_is() -> None:
    """UTF-8 JSON (OCPP-J 1.6 §4.1.2): non-ASCII characters survive both directions."""
    payload = {"techInfo": "Größe überschritten — 充电桩 ⚡"}
    text = Call("ü-1", "SecurityEventNotification", payload).to_json()
    assert "Größe" in text  # not \\u-escaped
    raw = text.encode("utf-8")
    assert unpack(raw) == Call("ü-1", "SecurityEventNotification", payload)


def test_callerror_answering_an_ocpp_error_copies_code_description_details() -> None:
    error = FormationViolation("bad", {"field": "x"})
    assert CallError.answering("abc", error) == CallError(
        "abc", "FormationViolation", "bad", {"field": "x"}
    )


def test_error_description_is_capped_at_255_characters() -> None:
    assert len(CallError.answering("a", OcppError("x" * 1000)).description) == 255


def test_error_codes_use_the_exact_1_6_spellings() -> None:
    """OCPP-J 1.6 Table 7; `FormationViolation`/`OccurenceConstraintViolation` (errata §5.1/5.2)."""
    assert set(ERROR_CODES) == {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
    assert all(cls.code == code for code, cls in ERROR_CODES.items())


def test_a_36_character_id_is_accepted() -> None:
    """Message ids are strings of at most 36 characters (OCPP-J 1.6 §4.1.4)."""
    unique_id = "x" * MAX_ID_LENGTH
    assert unpack(f'[2,"{unique_id}","Heartbeat",{{}}]') == Call(unique_id, "Heartbeat", {})


# --- unknown message types ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ['[5,"1",{}]', "[0]", '[99,"x","y","z",{},1]', "[-2,1]"])
def test_an_unknown_message_type_is_ignored(text: str) -> None:
    """OCPP-J 1.6 §4.1.3: the receiver SHALL ignore the payload of an unknown type number."""
    assert unpack(text) is None


# --- frames that cannot be answered (not recognisably a CALL) ----------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not-json"),
        pytest.param('[2,"1","Heartbeat",{}', id="truncated"),
        pytest.param(b'[2,"1","X",{"a":"\xff"}]', id="not-utf8"),
        pytest.param('{"2":"1"}', id="object"),
        pytest.param('"[2]"', id="string"),
        pytest.param("null", id="null"),
        pytest.param("[]", id="empty-list"),
        pytest.param('["2","1","Heartbeat",{}]', id="type-as-string"),
        pytest.param('[2.0,"1","Heartbeat",{}]', id="type-as-float"),
        pytest.param('[true,"1","Heartbeat",{}]', id="type-as-bool"),
        pytest.param('[null,"1","Heartbeat",{}]', id="type-null"),
        pytest.param("[2]", id="call-without-id"),
        pytest.param('[2,1,"Heartbeat",{}]', id="call-integer-id"),
        pytest.param('[2,null,"Heartbeat",{}]', id="call-null-id"),
        pytest.param('[2,["1"],"Heartbeat",{}]', id="call-list-id"),
    ],
)
def test_unusable_frames_raise_frame_error_without_an_answer(text: str | bytes) -> None:
    """A CALLERROR may only answer a CALL with a readable id (OCPP-J 1.6 §4.2.3)."""
    with pytest.raises(FrameError) as caught:
        unpack(text)
    assert caught.value.answer is None


def test_deeply_nested_json_is_a_frame_error_not_a_crash() -> None:
    """A hostile frame (recursion bomb) must not raise RecursionError out of the parser."""
    with pytest.raises(FrameError):
        unpack("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FrameError) as caught:
        unpack('[2,"deep","X",' + '{"a":' * 50_000 + "{}" + "}" * 50_000 + "]")
    assert caught.value.answer is None or caught.value.answer.unique_id == "deep"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('[3,"1"]', id="callresult-short"),
        pytest.param('[3,"1",{},{}]', id="callresult-long"),
        pytest.param('[3,"1",[]]', id="callresult-list-payload"),
        pytest.param('[3,"1",null]', id="callresult-null-payload"),
        pytest.param('[4,"1","GenericError",""]', id="callerror-short"),
        pytest.param('[4,"1","GenericError","",{},1]', id="callerror-long"),
        pytest.param('[4,"1",5,"",{}]', id="callerror-code-not-string"),
        pytest.param('[4,"1","GenericError",null,{}]', id="callerror-description-null"),
    ],
)
def test_malformed_answers_are_never_answered(text: str) -> None:
    """Only a CALL is answered with a CALLERROR (OCPP-J 1.6 §4.2.3), never a broken answer."""
    with pytest.raises(FrameError) as caught:
        unpack(text)
    assert caught.value.answer is None


def test_callerror_details_that_are_not_an_object_become_empty() -> None:
    assert unpack('[4,"1","GenericError","x",null]') == CallError("1", "GenericError", "x", {})


# --- malformed CALLs: answered with a CALLERROR carrying the CALL's id -------------------------


def _answer(text: str) -> CallError:
    with pytest.raises(FrameError) as caught:
        unpack(text)
    answer = caught.value.answer
    assert answer is not None
    return answer


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param('[2,"id-1","Heartbeat"]', "FormationViolation", id="call-3-elements"),
        pytest.param('[2,"id-1"]', "FormationViolation", id="call-2-elements"),
        pytest.param('[2,"id-1","Heartbeat",{},{}]', "FormationViolation", id="call-5-elements"),
        pytest.param('[2,"id-1","Heartbeat",[]]', "FormationViolation", id="payload-list"),
        pytest.param('[2,"id-1","Heartbeat",null]', "FormationViolation", id="payload-null"),
        pytest.param('[2,"id-1","Heartbeat","{}"]', "FormationViolation", id="payload-string"),
        pytest.param('[2,"id-1",7,{}]', "ProtocolError", id="action-integer"),
        pytest.param('[2,"id-1","",{}]', "ProtocolError", id="action-empty"),
    ],
)
def test_a_malformed_call_is_answered_with_its_id_and_a_1_6_code(text: str, code: str) -> None:
    """A CALL that is not a proper message gets a CALLERROR with the same id (§4.2.3)."""
    answer = _answer(text)
    assert answer.unique_id == "id-1"
    assert answer.code == code
    frame = json.loads(answer.to_json())
    assert frame[0] == 4 and frame[1] == "id-1" and frame[2] == code
    assert isinstance(frame[3], str) and frame[4] == {}


def test_an_id_longer_than_36_characters_is_a_formation_violation() -> None:
    """OCPP-J 1.6 §4.1.4: the id is at most 36 characters."""
    unique_id = "y" * (MAX_ID_LENGTH + 1)
    answer = _answer(f'[2,"{unique_id}","Heartbeat",{{}}]')
    assert (answer.unique_id, answer.code) == (unique_id, "FormationViolation")


def test_an_answer_to_an_id_with_a_lone_surrogate_is_still_utf8() -> None:
    """JSON may escape a lone surrogate (\\ud800); the answer must still encode as UTF-8 (§4.1.2)
    and carry the same id, or sending it would fail and drop the connection."""
    answer = _answer('[2,"a\\ud800","Heartbeat",[]]')
    text = answer.to_json()
    text.encode("utf-8")
    assert json.loads(text)[1] == "a\ud800"
    call = Call("\udfff", "X", {"k": "\ud800"})
    round_trip: Any = unpack(call.to_json().encode("utf-8"))
    assert round_trip == call
