"""The OCPP-J 1.6 session rules, driven through `Session`'s seams: a list as the transport's send,
an injected monotonic clock and id factory. No sockets, no threads, no sleeps.

Sources: OCPP 1.6 §4.2 (registration), OCPP-J 1.6 §4.1.1 (one outstanding CALL), §4.2.3
(CALLERROR), §5.4 (no BootNotification on reconnect), Table 7 (error codes); L01.FR.20.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from agent.ocpp import v16
from agent.ocpp.errors import SecurityError
from agent.ocpp.outbox import Outbox
from agent.ocpp.session import Registration, Session
from tests.unit.conftest import FakeClock, id_factory

BOOT = v16.BootNotificationReq(charge_point_vendor="ExampleVendor", charge_point_model="AB-1")
WALL_START = 1_714_564_800.0  # 2024-05-01T12:00:00Z
CSMS_TIME = "2024-05-01T12:00:00.000Z"
STATUS = v16.Action.SIGNED_FIRMWARE_STATUS_NOTIFICATION.value
EVENT = v16.Action.SECURITY_EVENT_NOTIFICATION.value

Frame = list[Any]


class Harness:
    def __init__(self, tmp_path: Path, *, call_timeout: float = 30.0, heartbeat: int = 300):
        self.clock = FakeClock(1000.0)
        self.wall = FakeClock(WALL_START)
        self.path = tmp_path / "outbox.json"
        self.outbox = Outbox(self.path)
        self.sent: list[str] = []
        self._seen = 0
        self.call_timeout = call_timeout
        self.heartbeat = heartbeat
        self.session = self.new_session()

    def new_session(self) -> Session:
        """A new daemon start: fresh session state over the same persisted outbox."""
        self.outbox = Outbox(self.path)
        self.session = Session(
            self.outbox,
            lambda: BOOT,
            call_timeout=self.call_timeout,
            heartbeat_interval=self.heartbeat,
            monotonic=self.clock,
            wall_clock=self.wall,
            new_id=id_factory(),
        )
        return self.session

    # transport side
    def connect(self) -> None:
        self.session.connected_with(self.sent.append)

    def poll(self) -> float:
        return self.session.poll()

    def take(self) -> list[Frame]:
        """Frames sent since the last take()."""
        frames = [json.loads(text) for text in self.sent[self._seen :]]
        self._seen = len(self.sent)
        return frames

    def take_one(self) -> Frame:
        frames = self.take()
        assert len(frames) == 1, frames
        return frames[0]

    # CSMS side
    def result(self, unique_id: str, payload: dict[str, Any] | None = None) -> None:
        self.session.receive(json.dumps([3, unique_id, payload if payload is not None else {}]))

    def error(self, unique_id: str, code: str = "InternalError") -> None:
        self.session.receive(json.dumps([4, unique_id, code, "", {}]))

    def call(self, unique_id: str, action: str, payload: Any) -> None:
        self.session.receive(json.dumps([2, unique_id, action, payload]))

    def boot(self, status: str = "Accepted", interval: int = 3600, time: str = CSMS_TIME) -> None:
        """Connect, expect BootNotification as the next frame, answer it."""
        if not self.session.connected:
            self.connect()
        self.poll()
        frame = self.take_one()
        assert frame[:3] == [2, frame[1], "BootNotification"]
        self.result(frame[1], {"status": status, "currentTime": time, "interval": interval})


def conf_status(frame: Frame) -> str:
    assert frame[0] == 3, frame
    return str(frame[2]["status"])


def queue(h: Harness, count: int) -> list[str]:
    """Put `count` status notifications in the outbox; their ids."""
    return [
        h.outbox.append(STATUS, {"status": "Downloading", "requestId": n}) for n in range(count)
    ]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


# --- BootNotification -----------------------------------------------------------------------


def test_boot_notification_is_the_first_message_even_with_work_queued(h: Harness) -> None:
    """Until BootNotification is Accepted/Pending nothing else is sent, not even cached
    messages (OCPP 1.6 §4.2, reference §3.5)."""
    queue(h, 2)
    h.session.send_live(v16.Action.HEARTBEAT, v16.HeartbeatReq())
    h.connect()
    h.poll()
    first = h.take()
    assert first == [
        [
            2,
            first[0][1],
            "BootNotification",
            {"chargePointVendor": "ExampleVendor", "chargePointModel": "AB-1"},
        ]
    ]
    h.clock.advance(10)
    h.poll()
    assert h.take() == []  # only one outstanding CALL, and still not registered


def test_boot_notification_is_not_repeated_after_a_reconnect_once_accepted(h: Harness) -> None:
    """OCPP-J 1.6 §5.4: no BootNotification after a mere reconnect."""
    h.boot(interval=60)
    assert h.session.registration is Registration.ACCEPTED
    h.session.disconnected()
    h.clock.advance(5)
    h.connect()
    h.poll()
    assert h.take() == []
    h.clock.advance(55)
    h.poll()
    assert [f[2] for f in h.take()] == ["Heartbeat"]


def test_boot_notification_is_sent_once_per_daemon_start(h: Harness) -> None:
    """A restart always sends BootNotification (OCPP 1.6 §4.2), exactly once."""
    h.boot()
    h.new_session()
    h.connect()
    h.poll()
    first = h.take_one()
    assert first[2] == "BootNotification"
    h.result(first[1], {"status": "Accepted", "currentTime": CSMS_TIME, "interval": 3600})
    h.session.disconnected()
    h.connect()
    h.poll()
    assert h.take() == []


def test_a_boot_lost_with_the_connection_is_sent_again_on_reconnect(h: Harness) -> None:
    h.connect()
    h.poll()
    assert h.take_one()[2] == "BootNotification"
    h.session.disconnected()
    h.connect()
    h.poll()
    assert h.take_one()[2] == "BootNotification"


def test_an_unanswered_boot_is_retried_with_back_off(h: Harness) -> None:
    h.connect()
    h.poll()
    first = h.take_one()
    h.clock.advance(30)  # call_timeout
    assert h.poll() == pytest.approx(5.0)
    assert h.take() == []
    h.clock.advance(5)
    h.poll()
    again = h.take_one()
    assert again[2] == "BootNotification" and again[1] != first[1]  # a new CALL, a new id
    h.error(again[1])
    h.clock.advance(9.9)
    h.poll()
    assert h.take() == []
    h.clock.advance(0.1)
    h.poll()
    assert h.take_one()[2] == "BootNotification"


def test_nothing_but_boot_while_unregistered_and_no_busy_loop(h: Harness) -> None:
    """A triggered message queued before registration must wait, and `poll` must not report
    work due now that it cannot do (the daemon would spin at 100% CPU until the next boot)."""
    h.connect()
    h.poll()
    h.error(h.take_one()[1])  # boot refused with a CALLERROR: retried in 5 s
    h.session.send_live(v16.Action.HEARTBEAT, v16.HeartbeatReq())
    idle = h.poll()
    assert h.take() == []
    assert idle == pytest.approx(5.0)
    h.clock.advance(5)
    h.poll()
    assert h.take_one()[2] == "BootNotification"


@pytest.mark.parametrize("status", ["Accepted", "Pending", "Rejected"])
def test_an_absurd_interval_does_not_crash_the_session(h: Harness, status: str) -> None:
    """`interval: 10**400` is invalid JSON-schema-wise for any real CSMS; it must be treated as
    an invalid conf (the boot is retried), not raise OverflowError out of `receive`."""
    h.connect()
    h.poll()
    boot = h.take_one()
    h.result(boot[1], {"status": status, "currentTime": CSMS_TIME, "interval": 10**400})
    assert h.session.registration is Registration.UNREGISTERED
    assert h.poll() == pytest.approx(5.0)


def test_on_accepted_hooks_run_on_each_acceptance(h: Harness) -> None:
    accepted: list[Registration] = []
    h.session.on_accepted(lambda: accepted.append(h.session.registration))
    h.boot(status="Pending", interval=10)
    assert accepted == []
    h.clock.advance(10)
    h.boot()
    assert accepted == [Registration.ACCEPTED]


# --- Pending and Rejected -------------------------------------------------------------------


def test_while_pending_only_triggered_messages_are_sent(h: Harness) -> None:
    """Pending: requests only when triggered; no heartbeat, no queued notifications; the boot
    is repeated after `interval` (OCPP 1.6 §4.2, reference §3.5)."""
    queue(h, 1)
    h.boot(status="Pending", interval=30)
    assert h.session.registration is Registration.PENDING
    h.clock.advance(29)
    h.poll()
    assert h.take() == []  # neither the outbox nor a heartbeat
    h.session.send_live(v16.Action.HEARTBEAT, v16.HeartbeatReq())  # as a trigger does
    h.poll()
    triggered = h.take_one()
    assert triggered[2] == "Heartbeat"
    h.result(triggered[1], {"currentTime": CSMS_TIME})
    h.clock.advance(1)
    h.poll()
    assert h.take_one()[2] == "BootNotification"


def test_pending_then_accepted_releases_the_outbox(h: Harness) -> None:
    ids = queue(h, 1)
    h.boot(status="Pending", interval=30)
    h.clock.advance(30)
    h.boot(status="Accepted")
    h.poll()
    assert h.take() == [[2, ids[0], STATUS, {"status": "Downloading", "requestId": 0}]]


def test_incoming_calls_are_answered_while_pending(h: Harness) -> None:
    h.session.route(
        v16.Action.TRIGGER_MESSAGE, lambda req: v16.TriggerMessageConf(v16.TriggerStatus.ACCEPTED)
    )
    h.boot(status="Pending", interval=30)
    h.call("t1", "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert h.take() == [[3, "t1", {"status": "Accepted"}]]


def test_while_rejected_nothing_is_sent_or_answered_until_the_interval(h: Harness) -> None:
    """Rejected: the CP sends and answers nothing until `interval` passed, then boots again
    (OCPP 1.6 §4.2, reference §3.5)."""
    handled: list[Any] = []
    h.session.route(
        v16.Action.TRIGGER_MESSAGE,
        lambda req: handled.append(req) or v16.TriggerMessageConf(v16.TriggerStatus.ACCEPTED),
    )
    queue(h, 1)
    h.boot(status="Rejected", interval=120)
    assert h.session.registration is Registration.REJECTED
    h.session.send_live(v16.Action.HEARTBEAT, v16.HeartbeatReq())
    idle = h.poll()
    assert 119 <= idle <= 120
    h.call("t1", "TriggerMessage", {"requestedMessage": "Heartbeat"})
    h.call("t2", "NoSuchAction", {})
    h.call("t3", "TriggerMessage", "not an object")
    h.clock.advance(119.9)
    h.poll()
    assert h.take() == []
    assert handled == []
    h.clock.advance(0.1)
    h.poll()
    assert h.take_one()[2] == "BootNotification"
    h.call("t4", "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert h.take() == [[3, "t4", {"status": "Accepted"}]]


def test_rejected_then_accepted(h: Harness) -> None:
    ids = queue(h, 1)
    h.boot(status="Rejected", interval=60)
    h.clock.advance(60)
    h.boot(status="Accepted")
    h.poll()
    assert h.take_one()[1] == ids[0]


# --- Heartbeat and clock offset -------------------------------------------------------------


def test_heartbeat_follows_the_interval_from_the_csms(h: Harness) -> None:
    """Heartbeat at the interval the BootNotification.conf gave (OCPP 1.6 §4.6)."""
    h.boot(interval=60)
    assert h.session.heartbeat_interval == 60
    assert h.poll() == pytest.approx(60)
    h.clock.advance(59.9)
    h.poll()
    assert h.take() == []
    h.clock.advance(0.1)
    h.poll()
    beat = h.take_one()
    assert beat == [2, beat[1], "Heartbeat", {}]
    h.result(beat[1], {"currentTime": CSMS_TIME})
    h.clock.advance(59)
    h.poll()
    assert h.take() == []
    h.clock.advance(1)
    h.poll()
    assert h.take_one()[2] == "Heartbeat"


def test_an_interval_of_zero_keeps_the_configured_heartbeat(h: Harness) -> None:
    h.boot(interval=0)
    assert h.session.heartbeat_interval == 300
    h.clock.advance(300)
    h.poll()
    assert h.take_one()[2] == "Heartbeat"


def test_the_offset_to_the_csms_clock_is_recorded(h: Harness) -> None:
    """Keep CSMS currentTime minus local time (BootNotification.conf, Heartbeat.conf)."""
    assert h.session.csms_now() is None
    h.boot(interval=60, time="2024-05-01T13:00:00.000Z")  # the CSMS is one hour ahead
    assert h.session.csms_offset == pytest.approx(3600)
    h.wall.advance(10)
    assert h.session.csms_now() == datetime.datetime(2024, 5, 1, 13, 0, 10, tzinfo=datetime.UTC)
    h.clock.advance(60)
    h.poll()
    beat = h.take_one()
    h.result(beat[1], {"currentTime": "2024-05-01T12:00:05.000Z"})  # now 5 s behind
    assert h.session.csms_offset == pytest.approx(-5)


# --- one outstanding CALL, answers ----------------------------------------------------------


def test_at_most_one_outstanding_call_while_incoming_calls_are_answered(tmp_path: Path) -> None:
    """OCPP-J 1.6 §4.1.1: no new CALL before the previous one was answered or timed out;
    incoming CALLs cross it and are answered meanwhile."""
    h = Harness(tmp_path, call_timeout=1000)
    h.session.route(
        v16.Action.TRIGGER_MESSAGE, lambda req: v16.TriggerMessageConf(v16.TriggerStatus.REJECTED)
    )
    ids = queue(h, 2)
    h.boot(interval=60)
    h.poll()
    assert [f[1] for f in h.take()] == [ids[0]]
    h.clock.advance(120)  # two heartbeats due, the live queue has one more
    h.session.send_live(v16.Action.HEARTBEAT, v16.HeartbeatReq())
    h.poll()
    assert h.take() == []
    h.call("csms-1", "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert h.take() == [[3, "csms-1", {"status": "Rejected"}]]
    h.result(ids[0])
    h.poll()
    assert len(h.take()) == 1  # exactly one new CALL


def test_a_callresult_for_an_unknown_id_is_ignored(h: Harness) -> None:
    """Logged and ignored; the outstanding CALL stays outstanding (issue 2, §4.1.1)."""
    ids = queue(h, 2)
    h.boot()
    h.poll()
    assert h.take_one()[1] == ids[0]
    h.result("no-such-id")
    h.error("no-such-id-either")
    h.poll()
    assert h.take() == []
    assert len(h.outbox) == 2
    h.result(ids[0])
    h.poll()
    assert h.take_one()[1] == ids[1]


def test_an_invalid_boot_conf_is_retried(h: Harness) -> None:
    h.connect()
    h.poll()
    boot = h.take_one()
    h.result(boot[1], {"status": "Accepted"})  # no currentTime, no interval
    assert h.session.registration is Registration.UNREGISTERED
    h.clock.advance(5)
    h.poll()
    assert h.take_one()[2] == "BootNotification"


# --- durable outbox delivery ----------------------------------------------------------------


def test_outbox_entries_go_out_in_order_and_leave_only_on_callresult(h: Harness) -> None:
    """At least once, in order; removed only when the CALLRESULT arrived (issue 2)."""
    ids = queue(h, 3)
    h.boot()
    sent = []
    for expected in ids:
        h.poll()
        frame = h.take_one()
        assert frame[:3] == [2, expected, STATUS]
        sent.append(frame[3]["requestId"])
        assert Outbox(h.path).entries()[0].unique_id == expected  # still on disk
        h.result(expected)
    assert sent == [0, 1, 2]
    assert len(h.outbox) == 0 and len(Outbox(h.path)) == 0


def test_a_timed_out_entry_is_retried_with_back_off_not_dropped(h: Harness) -> None:
    """A timeout is retried with back-off (5 s, doubling), with the same message id (OCPP-J
    errata 2025-04 §3.1 allows reuse), and the next entry does not overtake it."""
    ids = queue(h, 2)
    h.boot()
    h.poll()
    assert h.take_one()[1] == ids[0]
    for backoff in (5.0, 10.0, 20.0):
        h.clock.advance(30)  # the call timeout
        assert h.poll() == pytest.approx(backoff)
        assert h.take() == []
        h.clock.advance(backoff - 0.1)
        h.poll()
        assert h.take() == []
        h.clock.advance(0.1)
        h.poll()
        assert h.take_one()[1] == ids[0]
        assert len(Outbox(h.path)) == 2
    h.result(ids[0])
    h.poll()
    assert h.take_one()[1] == ids[1]


def test_a_callerror_is_retried_and_a_success_resets_the_back_off(h: Harness) -> None:
    ids = queue(h, 2)
    h.boot()
    h.poll()
    h.take()
    h.error(ids[0], "InternalError")
    h.poll()
    assert h.take() == []
    assert len(h.outbox) == 2
    h.clock.advance(5)
    h.poll()
    assert h.take_one()[1] == ids[0]
    h.error(ids[0], "GenericError")
    h.clock.advance(10)
    h.poll()
    assert h.take_one()[1] == ids[0]
    h.result(ids[0])
    h.poll()
    assert h.take_one()[1] == ids[1]
    h.error(ids[1])
    h.clock.advance(5)  # back to the first step, not 20 s
    h.poll()
    assert h.take_one()[1] == ids[1]


def test_failed_boots_do_not_slow_down_the_first_outbox_retry(h: Harness) -> None:
    """The back-off that delayed the BootNotification starts over once Accepted."""
    ids = queue(h, 1)
    h.connect()
    for wait in (5, 10, 20):
        h.poll()
        h.error(h.take_one()[1])
        h.clock.advance(wait)
    h.boot()
    h.poll()
    h.error(h.take_one()[1])
    h.clock.advance(5)
    h.poll()
    assert h.take_one()[1] == ids[0]


def test_an_invalid_callresult_for_an_entry_keeps_it_queued(h: Harness) -> None:
    """SecurityEventNotification.conf is `{}`; anything else is not a delivery receipt."""
    unique_id = h.outbox.append(EVENT, {"type": "FirmwareUpdated", "timestamp": CSMS_TIME})
    h.boot()
    h.poll()
    h.take()
    h.result(unique_id, {"status": "Accepted"})
    assert len(h.outbox) == 1
    h.clock.advance(5)
    h.poll()
    assert h.take_one()[1] == unique_id


def test_an_entry_in_flight_survives_a_disconnect_and_is_resent(h: Harness) -> None:
    ids = queue(h, 2)
    h.boot()
    h.poll()
    h.take()
    h.session.disconnected()
    assert len(Outbox(h.path)) == 2
    h.connect()
    h.poll()
    assert h.take_one()[1] == ids[0]  # no BootNotification, same entry first


def test_an_entry_appended_while_connected_is_sent_on_the_next_poll(h: Harness) -> None:
    h.boot()
    h.poll()
    h.take()
    unique_id = h.outbox.append(STATUS, {"status": "Downloaded", "requestId": 9})
    h.poll()
    assert h.take() == [[2, unique_id, STATUS, {"status": "Downloaded", "requestId": 9}]]


def test_a_failing_send_marks_the_session_disconnected(h: Harness) -> None:
    def broken(text: str) -> None:
        raise ConnectionError("gone")

    queue(h, 1)
    h.session.connected_with(broken)
    h.poll()
    assert not h.session.connected
    assert len(h.outbox) == 1


# --- incoming CALLs -------------------------------------------------------------------------


class Recorder:
    """A handler that records its typed requests and answers with `conf`."""

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        if isinstance(self.conf, BaseException):
            raise self.conf
        return self.conf


SIGNED_UPDATE = {
    "requestId": 7,
    "firmware": {
        "location": "https://fw.example.com/fw.bin",
        "retrieveDateTime": CSMS_TIME,
        "signingCertificate": "-----BEGIN CERTIFICATE-----",
        "signature": "c2ln",
    },
}


@pytest.fixture
def firmware_handler(h: Harness) -> Recorder:
    handler = Recorder(v16.SignedUpdateFirmwareConf(v16.UpdateFirmwareStatus.ACCEPTED))
    h.session.route(v16.Action.SIGNED_UPDATE_FIRMWARE, handler)
    h.boot()
    return handler


def test_signed_update_firmware_reaches_its_handler_as_a_typed_request(
    h: Harness, firmware_handler: Recorder
) -> None:
    h.call("u1", "SignedUpdateFirmware", SIGNED_UPDATE)
    assert h.take() == [[3, "u1", {"status": "Accepted"}]]
    (request,) = firmware_handler.requests
    assert isinstance(request, v16.SignedUpdateFirmwareReq)
    assert request.request_id == 7 and request.firmware.signature == "c2ln"


def test_legacy_update_firmware_is_not_supported_and_starts_nothing(
    h: Harness, firmware_handler: Recorder
) -> None:
    """L01.FR.20: a CP supporting signed updates answers UpdateFirmware with CALLERROR
    NotSupported, and no update starts."""
    legacy = {"location": "https://fw.example.com/fw.bin", "retrieveDate": CSMS_TIME}
    h.call("u1", "UpdateFirmware", legacy)
    frame = h.take_one()
    assert frame[:3] == [4, "u1", "NotSupported"]
    assert frame[4] == {}
    assert firmware_handler.requests == []
    assert len(h.outbox) == 0
    h.call("u2", "UpdateFirmware", {"garbage": True})  # not even validated
    assert h.take_one()[:3] == [4, "u2", "NotSupported"]


@pytest.mark.parametrize(
    ("action", "code"),
    [
        ("FooBar", "NotImplemented"),
        ("reset", "NotImplemented"),  # actions are case-sensitive (OCPP-J 1.6 §4.2.1)
        ("/Reset", "NotImplemented"),
        ("Reset", "NotSupported"),
        ("GetConfiguration", "NotSupported"),
        ("BootNotification", "NotSupported"),  # a CP → CSMS action
        ("ExtendedTriggerMessage", "NotSupported"),  # known, but not routed here
    ],
)
def test_unknown_and_unsupported_actions(h: Harness, action: str, code: str) -> None:
    """NotImplemented: action not known; NotSupported: recognised but not supported
    (OCPP-J 1.6 Table 7)."""
    h.boot()
    h.call("x1", action, {})
    frame = h.take_one()
    assert frame[:3] == [4, "x1", code]
    assert isinstance(frame[3], str) and frame[4] == {}


def test_an_invalid_payload_is_answered_before_any_handler_runs(
    h: Harness, firmware_handler: Recorder
) -> None:
    payload = json.loads(json.dumps(SIGNED_UPDATE))
    del payload["firmware"]["signature"]
    h.call("u1", "SignedUpdateFirmware", payload)
    assert h.take_one()[:3] == [4, "u1", "OccurenceConstraintViolation"]
    h.call("u2", "SignedUpdateFirmware", {**SIGNED_UPDATE, "requestId": "7"})
    assert h.take_one()[:3] == [4, "u2", "TypeConstraintViolation"]
    assert firmware_handler.requests == []


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (RuntimeError("boom"), "InternalError"),
        (KeyError("x"), "InternalError"),
        (SecurityError("certificate chain"), "SecurityError"),
        ({"status": "Accepted"}, "InternalError"),  # a handler bug: a dict, not a dataclass
    ],
)
def test_handler_failures_become_callerrors(h: Harness, outcome: Any, code: str) -> None:
    after: list[Any] = []
    h.session.route(
        v16.Action.SIGNED_UPDATE_FIRMWARE, Recorder(outcome), lambda req, conf: after.append(conf)
    )
    h.boot()
    h.call("u1", "SignedUpdateFirmware", SIGNED_UPDATE)
    assert h.take_one()[:3] == [4, "u1", code]
    assert after == []  # no conf went out, so no follow-up either
    h.call("u2", "FooBar", {})  # still serving
    assert h.take_one()[:3] == [4, "u2", "NotImplemented"]


def test_the_after_hook_runs_once_the_conf_was_sent(h: Harness) -> None:
    """Trigger rule: the .conf goes out before the triggered message (OCPP 1.6 §5.17, L01.FR.28
    via ExtendedTriggerMessage)."""
    seen_at_hook: list[list[str]] = []

    def after(request: Any, conf: Any) -> None:
        seen_at_hook.append(list(h.sent))
        h.session.send_live(
            v16.Action.SIGNED_FIRMWARE_STATUS_NOTIFICATION,
            v16.SignedFirmwareStatusNotificationReq(status=v16.FirmwareStatus.IDLE),
        )

    h.session.route(
        v16.Action.EXTENDED_TRIGGER_MESSAGE,
        Recorder(v16.TriggerMessageConf(v16.TriggerStatus.ACCEPTED)),
        after,
    )
    h.boot()
    h.call("e1", "ExtendedTriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    assert json.loads(seen_at_hook[0][-1]) == [3, "e1", {"status": "Accepted"}]
    h.poll()
    assert [f[0] for f in h.take()] == [3, 2]
    assert json.loads(h.sent[-1])[2:] == [STATUS, {"status": "Idle"}]


def test_a_failing_after_hook_does_not_escape(h: Harness) -> None:
    def after(request: Any, conf: Any) -> None:
        raise RuntimeError("after failed")

    h.session.route(
        v16.Action.TRIGGER_MESSAGE,
        Recorder(v16.TriggerMessageConf(v16.TriggerStatus.ACCEPTED)),
        after,
    )
    h.boot()
    h.call("t1", "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert h.take() == [[3, "t1", {"status": "Accepted"}]]


def test_a_malformed_call_is_answered_and_the_session_carries_on(h: Harness) -> None:
    """A malformed frame never crashes the agent nor drops the connection (issue 2)."""
    ids = queue(h, 1)
    h.boot()
    h.poll()
    h.take()
    for text in ("not json", "[]", '[3,"1"]', '[2,"m1","Heartbeat",[]]', '[7,"x",{}]'):
        h.session.receive(text)
    assert h.take() == [[4, "m1", "FormationViolation", "payload is not a JSON object", {}]]
    assert h.session.connected
    h.result(ids[0])
    assert len(h.outbox) == 0
