"""OCPP 2.1 direct mode: the 2.0.1 L01 rehearsal again, plus what 2.1 changed.

2.1's L01 requirements are 2.0.1 Ed3's word for word, so the 2.0.1 cases below run unchanged
against the `ocpp` library's v21 CSMS (which checks every frame against the 2.1 schemas). The
tests written here cover what differs: `statusInfo` on a failed FirmwareStatusNotification,
`location` up to 2000 characters, `retries` >= 0, and the CALLRESULTERROR and SEND frames.
"""

from __future__ import annotations

import json

import pytest

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.ocpp import v21, v201
from agent.ocpp.errors import PropertyConstraintViolation
from agent.ocpp.validate import from_wire, to_wire
from tests.e2e.conftest import HAPPY, IMAGE, publish
from tests.v21.conftest import Station
from tests.v201 import test_l01_certification as v201_cases

# A whole update through the reboot, as in tests/e2e: the Debian pass runs it (Makefile).
pytestmark = pytest.mark.slow

# The 2.0.1 cases, each run here against the 2.1 CSMS (fixtures from this folder).
test_TC_L_01_CS_secure_update_through_the_reboot = (
    v201_cases.test_TC_L_01_CS_secure_update_through_the_reboot
)
test_TC_L_05_CS_invalid_signing_certificate = v201_cases.test_TC_L_05_CS_invalid_signing_certificate
test_TC_L_10_CS_a_new_request_cancels_the_running_one = (
    v201_cases.test_TC_L_10_CS_a_new_request_cancels_the_running_one
)
test_TC_L_18_CS_no_certificate_or_signature_is_rejected_not_an_error = (
    v201_cases.test_TC_L_18_CS_no_certificate_or_signature_is_rejected_not_an_error
)
test_TC_F_17_CS_trigger_with_nothing_running_answers_idle = (
    v201_cases.test_TC_F_17_CS_trigger_with_nothing_running_answers_idle
)
test_TC_F_18_CS_trigger_during_an_update_answers_its_status = (
    v201_cases.test_TC_F_18_CS_trigger_during_an_update_answers_its_status
)


def test_TC_L_06_CS_invalid_signature_says_why_in_status_info(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.03/.04 in 2.1: InvalidSignature with its requestId and, new in 2.1, a statusInfo
    saying why (standard reasonCode InvalidValue, the verifier's words in additionalInfo);
    the InvalidFirmwareSignature event too; nothing armed."""
    station.start()
    assert station.update(firmware, 6, signature=rig.sign(b"another image")).status == "Accepted"
    station.wait_status("InvalidSignature")
    station.wait_event("InvalidFirmwareSignature")
    assert station.statuses(6) == ["Downloading", "Downloaded", "InvalidSignature"]
    notifications = station.csms.messages("FirmwareStatusNotification")
    failed = notifications[-1].payload
    assert failed["status_info"]["reason_code"] == "InvalidValue"
    assert "does not verify" in failed["status_info"]["additional_info"]
    assert all("status_info" not in m.payload for m in notifications[:-1])
    assert not rig.reboot_marker.exists()


def test_TC_L_07_CS_download_failed_says_why_in_status_info(station: Station, rig: ChargerRig):
    """L01.FR.07 in 2.1: a location the agent refuses to fetch (a host outside allowed_hosts)
    → one DownloadFailed with statusInfo reasonCode InvalidURL and the cause (not the list)."""
    station.start()
    refused = Firmware("http://firmware.example.invalid/fw.bin", b"", rig.sign(b"x"))
    assert station.update(refused, 7).status == "Accepted"
    station.wait_status("DownloadFailed")
    failed = station.csms.messages("FirmwareStatusNotification")[-1].payload
    assert failed["request_id"] == 7
    assert failed["status_info"]["reason_code"] == "InvalidURL"
    assert "host is not allowed" in failed["status_info"]["additional_info"]


def test_TC_L_01_CS_a_2000_character_location_is_accepted(
    station: Station, rig: ChargerRig, fileserver: FirmwareHttpServer
):
    """2.1 allows `location` up to 2000 characters (2.0.1: 512): the request is Accepted and
    the image at that URL is downloaded and verified into the slot."""
    path = "/fw/"
    path += "a" * (2000 - len(fileserver.url(path)))
    firmware = publish(rig, fileserver, path, IMAGE)
    assert len(firmware.url) == 2000
    agent = station.start()
    assert station.update(firmware, 2000).status == "Accepted"
    rig.wait_reboot_request(agent)
    assert station.statuses(2000) == HAPPY
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE


def test_negative_retries_are_a_callerror_zero_means_one_attempt(
    station: Station, fileserver: FirmwareHttpServer, rig: ChargerRig
):
    """2.1's `retries` has minimum 0 ("0 = no retries"): -1 is answered with CALLERROR
    PropertyConstraintViolation and starts nothing; 0 gives one attempt and one DownloadFailed."""
    station.start()
    station.csms.wait_message("BootNotification")
    missing = Firmware(fileserver.url("/fw/missing.bin"), b"", rig.sign(b"x"))
    payload = station.rig.request(missing, 70)["firmware"]
    answer = station.raw("UpdateFirmware", {"requestId": 70, "firmware": payload, "retries": -1})
    assert answer[0] == 4 and answer[2] == "PropertyConstraintViolation", answer
    assert station.job() == {}
    assert station.update(missing, 71, retries=0).status == "Accepted"
    station.wait_status("DownloadFailed")
    assert station.statuses(71) == ["Downloading", "DownloadFailed"]
    assert len(fileserver.requests) == 1


def test_callresulterror_and_send_frames_are_tolerated(station: Station):
    """OCPP-J 2.1 §4.2.3/§4.2.4: a CALLRESULTERROR about one of our answers is logged and
    changes nothing; a SEND (well-formed or not) is never answered; the connection stays up
    and the next CALLs are served, one with a trigger name new in 2.1."""
    agent = station.start()
    station.csms.wait_message("BootNotification")
    charge_point = station.rig.charge_point_id
    answer = station.raw("TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert answer[0] == 3
    station.csms.wait_message("Heartbeat")
    complaint = [5, answer[1], "FormatViolation", "cannot read that answer", {}]
    station.csms.send_raw(charge_point, json.dumps(complaint))
    stream = {"id": 1, "pending": 0, "data": [{"t": "2025-01-01T00:00:00Z", "v": "230.4"}]}
    station.csms.send_raw(
        charge_point, json.dumps([6, "send-1", "NotifyPeriodicEventStream", stream])
    )
    station.csms.send_raw(charge_point, json.dumps([6, "send-2", 42]))
    station.csms.send_raw(charge_point, json.dumps([6, "send-3", "UpdateFirmware", {}]))
    # Frames are handled in order: once this CALL is answered, any answer to those was sent.
    answer = station.raw("TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    assert answer[2] == {"status": "Accepted"}
    assert station.csms.wait_message("FirmwareStatusNotification")[-1].payload == {"status": "Idle"}
    answered = {f.parsed[1] for f in station.csms.frames if f.direction == "in"}
    assert answered.isdisjoint({"send-1", "send-2", "send-3"})
    agent.wait_log("could not process our answer")
    # 2.1's new trigger names are understood (not a CALLERROR) and not implemented.
    custom = {"requestedMessage": "CustomTrigger", "customTrigger": "vendorThing"}
    assert station.raw("TriggerMessage", custom)[2] == {"status": "NotImplemented"}
    assert station.csms.connections == 1
    assert station.job() == {}


def test_payload_types_follow_the_2_1_schema():
    """The 2.1 limits against 2.0.1's: location 2000 (512), additionalInfo 1024 (512) with our
    own words trimmed to fit, retries >= 0 (no minimum), statusInfo on the notification (none)."""
    firmware = {
        "location": "https://h/" + "x" * 1990,
        "retrieveDateTime": "2020-01-01T00:00:00Z",
    }
    request = from_wire(v21.UpdateFirmwareRequest, {"requestId": 1, "firmware": firmware})
    assert len(request.firmware.location) == 2000
    with pytest.raises(PropertyConstraintViolation, match="location"):
        from_wire(v201.UpdateFirmwareRequest, {"requestId": 1, "firmware": firmware})
    firmware["location"] = "https://h/f"
    with pytest.raises(PropertyConstraintViolation, match="retries"):
        from_wire(v21.UpdateFirmwareRequest, {"requestId": 1, "firmware": firmware, "retries": -1})
    older = from_wire(
        v201.UpdateFirmwareRequest, {"requestId": 1, "firmware": firmware, "retries": -1}
    )
    assert older.retries == -1
    assert len(to_wire(v21.StatusInfo.of("x", "y" * 3000))["additionalInfo"]) == 1024
    assert len(to_wire(v201.StatusInfo.of("x", "y" * 3000))["additionalInfo"]) == 512
    why = v201.StatusInfo("Unspecified", "z" * 3000)
    failed = v201.FirmwareStatus.INSTALLATION_FAILED
    notification = to_wire(v21.FirmwareStatusNotificationRequest.of(failed, 9, why))
    assert notification["statusInfo"] == {"reasonCode": "Unspecified", "additionalInfo": "z" * 1024}
    assert to_wire(v201.FirmwareStatusNotificationRequest.of(failed, 9, why)) == {
        "status": "InstallationFailed",
        "requestId": 9,
    }
