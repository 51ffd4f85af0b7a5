"""Property-based fuzzing of the frame parser, payload validation and the session's routing.

Properties (issue 2, OCPP-J 1.6 §4): nothing a CSMS sends makes an exception escape
`Session.receive`; every CALL with a string id gets exactly one answer (a CALLRESULT or a CALLERROR
with a 1.6 code) carrying that id, and nothing else is ever answered (§4.2.3); everything sent is
UTF-8 JSON (§4.1.2); payload validation raises nothing but OcppError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.ocpp import v16
from agent.ocpp.errors import ERROR_CODES, NotSupported, OcppError
from agent.ocpp.messages import MAX_ID_LENGTH
from agent.ocpp.outbox import Outbox
from agent.ocpp.session import Registration, Session
from agent.ocpp.validate import from_wire, to_wire
from tests.unit.conftest import FakeClock, id_factory

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CSMS_TIME = "2024-05-01T12:00:00.000Z"

# --- strategies ---------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
unique_ids = st.text(max_size=MAX_ID_LENGTH + 4) | st.sampled_from(
    ["1", "x" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1), "\ud800", "a\udfffb"]
)
date_times = st.sampled_from(
    [
        CSMS_TIME,
        "2024-05-01T12:00:00Z",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01",
        "2024-13-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "",
        "T",
    ]
)

TEMPLATES: dict[str, dict[str, Any]] = {
    "SignedUpdateFirmware": {
        "requestId": 1,
        "retries": 2,
        "retryInterval": 30,
        "firmware": {
            "location": "https://fw.example.com/fw.bin",
            "retrieveDateTime": CSMS_TIME,
            "installDateTime": CSMS_TIME,
            "signingCertificate": "-----BEGIN CERTIFICATE-----",
            "signature": "c2ln",
        },
    },
    "ExtendedTriggerMessage": {"requestedMessage": "FirmwareStatusNotification", "connectorId": 0},
    "TriggerMessage": {"requestedMessage": "Heartbeat", "connectorId": 1},
    "UpdateFirmware": {"location": "https://fw.example.com/fw.bin", "retrieveDate": CSMS_TIME},
    "BootNotificationConf": {"status": "Accepted", "currentTime": CSMS_TIME, "interval": 60},
}


def near(value: Any, top: bool = False) -> st.SearchStrategy[Any]:
    """Values close to `value`: itself, a wrong type, an edge case, or (objects) a subset of its
    keys, each mutated, plus an occasional unknown key. `top`: always an object."""
    if isinstance(value, dict):
        kept = st.fixed_dictionaries({}, optional={k: near(v) for k, v in value.items()})
        extra = st.dictionaries(st.text(max_size=6), json_values, max_size=1)
        merged = st.builds(lambda a, b: {**b, **a}, kept, extra | st.just({}) | st.just({}))
        return merged if top else merged | json_values
    if isinstance(value, str):
        edge = st.sampled_from(["", "a" * 513, "b" * 801, "c" * 5501, "Accepted", "heartbeat"])
        return st.just(value) | edge | date_times | json_values
    if isinstance(value, int):
        return st.just(value) | st.integers() | st.sampled_from([10**400, -(10**30), 1.0, 2.5])
    return st.just(value) | json_values


actions = (
    st.sampled_from(["SignedUpdateFirmware", "ExtendedTriggerMessage", "TriggerMessage"])
    | st.sampled_from(
        [*TEMPLATES, "Reset", "BootNotification", "Heartbeat", "DataTransfer", "reset", ""]
    )
    | st.text(max_size=20)
)


@st.composite
def calls(draw: st.DrawFn) -> list[Any]:
    action = draw(actions)
    template = TEMPLATES.get(action)
    payload = draw(near(template, top=draw(st.booleans()))) if template else draw(json_values)
    return [2, draw(unique_ids), action, payload]


@st.composite
def typed_lists(draw: st.DrawFn) -> list[Any]:
    kind = draw(st.sampled_from([2, 3, 4, 5, 0, -1, "2", 2.0, True, None, [2]]))
    return [kind, *draw(st.lists(json_values | unique_ids, max_size=5))]


frames = calls() | typed_lists() | json_values | st.lists(json_values, max_size=6)


@st.composite
def messages(draw: st.DrawFn) -> str | bytes:
    """One websocket message: a JSON frame as text or UTF-8 bytes, or raw junk."""
    choice = draw(st.sampled_from(["call", "call", "call", "text", "bytes", "junk", "junk-bytes"]))
    if choice == "junk":
        return draw(st.text(max_size=40))
    if choice == "junk-bytes":
        return draw(st.binary(max_size=40))
    text = json.dumps(draw(calls() if choice == "call" else frames))
    return text.encode("utf-8") if choice == "bytes" else text


# --- the session under fuzz -----------------------------------------------------------------


@pytest.fixture(scope="module")
def outbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


class Handler:
    def __init__(self, request_type: type[Any], conf: Any, mode: str) -> None:
        self.request_type = request_type
        self.conf = conf
        self.mode = mode

    def __call__(self, request: Any) -> Any:
        assert isinstance(request, self.request_type)  # typed, validated (issue 2)
        if self.mode == "raise":
            raise RuntimeError("handler failed")
        if self.mode == "ocpp":
            raise NotSupported("not now")
        return self.conf


def make_session(outbox_dir: Path, registration: str, mode: str) -> tuple[Session, list[str]]:
    clock = FakeClock()
    session = Session(
        Outbox(outbox_dir / "outbox.json"),
        lambda: v16.BootNotificationReq(charge_point_vendor="V", charge_point_model="M"),
        monotonic=clock,
        new_id=id_factory("fuzz"),
    )
    trigger_conf = v16.TriggerMessageConf(v16.TriggerStatus.ACCEPTED)
    session.route(
        v16.Action.SIGNED_UPDATE_FIRMWARE,
        Handler(
            v16.SignedUpdateFirmwareReq,
            v16.SignedUpdateFirmwareConf(v16.UpdateFirmwareStatus.ACCEPTED),
            mode,
        ),
    )
    session.route(
        v16.Action.EXTENDED_TRIGGER_MESSAGE,
        Handler(v16.ExtendedTriggerMessageReq, trigger_conf, mode),
        lambda request, conf: session.send_live(v16.Action.HEARTBEAT, v16.HeartbeatReq()),
    )
    session.route(v16.Action.TRIGGER_MESSAGE, Handler(v16.TriggerMessageReq, trigger_conf, mode))
    sent: list[str] = []
    session.connected_with(sent.append)
    session.poll()  # BootNotification goes out as fuzz-1
    if registration != "unregistered":
        status = registration.capitalize()
        conf = {"status": status, "currentTime": CSMS_TIME, "interval": 60}
        session.receive(json.dumps([3, "fuzz-1", conf]))
        assert session.registration is Registration(registration)
    sent.clear()
    return session, sent


def expected_answers(message: str | bytes, registration: str) -> tuple[int, str | None]:
    """(number of answers, the id they carry) for one incoming message."""
    try:
        frame = json.loads(message)
    except ValueError:
        return 0, None
    is_call = (
        isinstance(frame, list)
        and len(frame) >= 2
        and type(frame[0]) is int
        and frame[0] == 2
        and isinstance(frame[1], str)
    )
    if not is_call or registration == "rejected":  # Rejected: answer nothing (OCPP 1.6 §4.2)
        return 0, None
    return 1, frame[1]


@FUZZ
@given(
    message=messages(),
    registration=st.sampled_from(["unregistered", "pending", "accepted", "rejected"]),
    mode=st.sampled_from(["ok", "ok", "raise", "ocpp"]),
)
def test_every_call_gets_exactly_one_answer_and_nothing_escapes(
    outbox_dir: Path, message: str | bytes, registration: str, mode: str
) -> None:
    session, sent = make_session(outbox_dir, registration, mode)
    session.receive(message)  # must not raise
    count, unique_id = expected_answers(message, registration)
    assert len(sent) == count, (message, sent)
    for text in sent:
        text.encode("utf-8")  # UTF-8 JSON (OCPP-J 1.6 §4.1.2)
        answer = json.loads(text)
        assert answer[1] == unique_id
        event("CALLRESULT" if answer[0] == 3 else f"CALLERROR {answer[2]}")
        if answer[0] == 3:
            assert len(answer) == 3 and isinstance(answer[2], dict)
        else:
            assert answer[0] == 4 and len(answer) == 5
            assert answer[2] in ERROR_CODES
            assert isinstance(answer[3], str) and isinstance(answer[4], dict)
            assert len(answer[3]) <= 255
            if len(unique_id or "") > MAX_ID_LENGTH:
                assert answer[2] == "FormationViolation"
    session.poll()  # and the session still works afterwards
    assert session.connected


@FUZZ
@given(message=messages(), count=st.integers(min_value=1, max_value=4))
def test_many_frames_in_a_row_each_get_their_answer(
    outbox_dir: Path, message: str | bytes, count: int
) -> None:
    session, sent = make_session(outbox_dir, "accepted", "ok")
    for _ in range(count):
        session.receive(message)
    assert len(sent) == count * expected_answers(message, "accepted")[0]


boot_confs = near(TEMPLATES["BootNotificationConf"]) | st.fixed_dictionaries(
    {
        "status": st.sampled_from(["Accepted", "Pending", "Rejected"]),
        "currentTime": st.just(CSMS_TIME) | date_times,
        "interval": st.integers()
        | st.sampled_from([10**400, 2**63, -(2**63) - 1, 0, -1, 1.0, 1e300]),
    },
    optional={"extra": json_values},
)


@FUZZ
@given(payload=boot_confs, answer_type=st.sampled_from([3, 4]))
def test_any_answer_to_the_boot_notification_leaves_a_working_session(
    outbox_dir: Path, payload: Any, answer_type: int
) -> None:
    """A CSMS's odd BootNotification.conf never escapes as an exception; the session either
    registers or retries the boot later."""
    session, sent = make_session(outbox_dir, "unregistered", "ok")
    frame = [3, "fuzz-1", payload] if answer_type == 3 else [4, "fuzz-1", "X", "", payload]
    session.receive(json.dumps(frame))
    idle = session.poll()
    assert 0 <= idle < float("inf")
    assert sent == [] or json.loads(sent[0])[2] == "BootNotification"


PAYLOAD_TYPES = sorted(
    {*v16.INCOMING_REQUESTS.values(), *v16.RESPONSES.values()}
    | {
        v16.BootNotificationReq,
        v16.SignedFirmwareStatusNotificationReq,
        v16.SecurityEventNotificationReq,
    },
    key=lambda cls: cls.__name__,
)


@FUZZ
@given(
    cls=st.sampled_from(PAYLOAD_TYPES),
    payload=near(TEMPLATES["SignedUpdateFirmware"])
    | near(TEMPLATES["BootNotificationConf"])
    | near(TEMPLATES["TriggerMessage"])
    | json_values,
)
def test_validation_raises_only_ocpp_errors_and_round_trips(cls: type[Any], payload: Any) -> None:
    try:
        obj = from_wire(cls, payload)
    except OcppError as exc:
        assert exc.code in ERROR_CODES
        return
    wire = to_wire(obj)
    json.dumps(wire)
    assert to_wire(from_wire(cls, wire)) == wire
