"""OCPP-J 2.1's two new frames at the session, and the reason codes of 2.1's failed
notifications, without sockets: the session driven through its seams (a list as the transport),
the reason classifier fed the firmware core's own error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.firmware import errors
from agent.firmware.fetch_base import FetchSettings
from agent.firmware.writer import SlotWriter
from agent.ocpp import v16, v201
from agent.ocpp.dialect import V21, V201
from agent.ocpp.messages import CallResultError, FrameError, Send, unpack
from agent.ocpp.outbox import Outbox
from agent.ocpp.session import Session
from agent.service.v2x_adapter import failure_info
from tests.unit.conftest import FakeClock, id_factory

BOOT = v201.BootNotificationRequest(
    charging_station=v201.ChargingStation(model="AB-1", vendor_name="ExampleVendor"),
    reason=v201.BootReason.POWER_UP,
)


def test_the_2_1_frames_are_message_types_only_in_2_1():
    """Part 4 §4.1.3: 5 and 6 are 2.1's; to an earlier version they are unknown types (None,
    ignored). A malformed SEND is an error with nothing to answer it with."""
    result_error = '[5,"m1","FormatViolation","bad answer",{}]'
    send = '[6,"m2","NotifyPeriodicEventStream",{"id":1}]'
    assert unpack(result_error) is None and unpack(send) is None
    assert unpack(result_error, ocpp21=True) == CallResultError(
        "m1", "FormatViolation", "bad answer", {}
    )
    assert unpack(send, ocpp21=True) == Send("m2", "NotifyPeriodicEventStream", {"id": 1})
    for malformed in ('[6,"m3",7]', '[6,"m3","X",[]]', '[5,"m4","X"]'):
        with pytest.raises(FrameError) as raised:
            unpack(malformed, ocpp21=True)
        assert raised.value.answer is None


@pytest.mark.parametrize("dialect", [V21, V201], ids=["2.1", "2.0.1"])
def test_neither_frame_is_answered_nor_disturbs_the_call_in_flight(tmp_path: Path, dialect):
    """A SEND named like a CALL is not a CALL; a CALLRESULTERROR carrying the id of our
    outstanding BootNotification is not its answer: the CALLRESULT that follows still is."""
    sent: list[str] = []
    session = Session(
        Outbox(tmp_path / "outbox.json"),
        lambda: BOOT,
        dialect=dialect,
        monotonic=FakeClock(),
        wall_clock=FakeClock(1_714_564_800.0),
        new_id=id_factory(),
    )
    session.connected_with(sent.append)
    session.poll()
    boot = json.loads(sent[-1])
    assert boot[2] == "BootNotification" and session.outstanding
    session.receive(json.dumps([6, "s-1", "UpdateFirmware", {"requestId": 1}]))
    session.receive(json.dumps([6, "s-2", 3]))
    session.receive(json.dumps([5, boot[1], "FormatViolation", "", {}]))
    assert len(sent) == 1 and session.outstanding
    accepted = {"currentTime": "2024-05-01T12:00:00Z", "interval": 300, "status": "Accepted"}
    session.receive(json.dumps([3, boot[1], accepted]))
    assert session.accepted and not session.outstanding


def _message(raising, *args) -> str:
    with pytest.raises(errors.FirmwareError) as raised:
        raising(*args)
    return raised.value.message


def _code(status: v16.FirmwareStatus, reason: str | None) -> str:
    info = failure_info(status, reason)
    assert info is not None and info.additional_info  # what went wrong, in its own words
    return info.reason_code


def test_failure_reason_codes_come_from_the_cores_own_words(tmp_path: Path):
    """2.1's statusInfo.reasonCode: the standard code where one fits, read from the messages
    the firmware core really raises (so a change of wording shows here), else Unspecified."""
    failed = v16.FirmwareStatus.DOWNLOAD_FAILED
    refused = [
        _message(FetchSettings(allowed_schemes=("https",)).check_url, "http://h/f"),
        _message(FetchSettings().check_url, "gopher://h/f"),
        _message(FetchSettings(allowed_hosts=("a.example",)).check_url, "https://b.example/f"),
    ]
    assert [_code(failed, reason) for reason in refused] == ["InvalidURL"] * 3
    slot = tmp_path / "slot"
    slot.write_bytes(b"\0" * 16)
    with SlotWriter(slot) as writer:
        assert _code(failed, _message(writer.ensure_fits, 17)) == "OutOfStorage"
    assert _code(failed, "HTTP 404 Not Found") == "Unspecified"
    invalid = v16.FirmwareStatus.INVALID_SIGNATURE
    assert _code(invalid, "signature does not verify (rsa-pss)") == "InvalidValue"
    crashed = v16.FirmwareStatus.INSTALLATION_FAILED
    assert _code(crashed, "internal error: boom") == "InternalError"
    assert _code(crashed, None) == "Unspecified"
    assert failure_info(v16.FirmwareStatus.DOWNLOADING, "is not allowed") is None
