"""OCPP 2.0.1 direct mode, rehearsing the certification cases for L01 (and F06's trigger).

Each test is named after its OCTT case (part 6); the requirement ids are L01.FR.* of 2.0.1
Ed3 (the same text 1.6's Security Extension copied). The CSMS is the `ocpp` library's v201
side: every CALL the agent sends and every answer it gives is checked against the official
2.0.1 schemas. The agent is a real process on the e2e rig (file slots, real PKI, HTTP server).
"""

from __future__ import annotations

import time

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.pki import issue, rsa_key
from agent.demo.rig import ChargerRig, Firmware
from agent.slots import filemodel
from tests.e2e.conftest import HAPPY, IMAGE, iso, publish, wait_until
from tests.v201.conftest import Station


def test_TC_L_01_CS_secure_update_through_the_reboot(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.01/.10/.15: every status with the requestId; after the update reboot the
    BootNotification says reason FirmwareUpdate and the new version; then Installed and the
    FirmwareUpdated security event."""
    agent = station.start()
    station.csms.wait_message("BootNotification")
    assert station.boots()[0]["reason"] == "PowerUp"
    reply = station.update(firmware, 42)
    assert reply.status == "Accepted" and reply.status_info is None
    rig.wait_reboot_request(agent)
    assert station.csms.statuses() == [(s, 42) for s in HAPPY]
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE

    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    station.restart()
    station.wait_status("Installed")
    assert station.csms.statuses() == [(s, 42) for s in [*HAPPY, "Installed"]]
    station.wait_event("FirmwareUpdated")
    boot = station.boots()[-1]
    assert boot["reason"] == "FirmwareUpdate"
    assert boot["charging_station"]["firmware_version"] == "2.0"
    assert boot["charging_station"]["vendor_name"] == "ExampleVendor"
    wait_until(lambda: filemodel.load_env(rig.env)["primary"] == "B", 30, "the commit")


def test_TC_L_03_CS_download_scheduled(
    station: Station, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.13: a future retrieveDateTime → DownloadScheduled, nothing fetched before it.
    (A machine so slow that the answer comes after the time may skip the schedule.)"""
    agent = station.start()
    retrieve = int(time.time()) + 3
    assert station.update(firmware, 3, retrieve=iso(retrieve)).status == "Accepted"
    answered = time.time()
    rig.wait_reboot_request(agent)
    assert fileserver.requests[0].at >= retrieve
    expected = HAPPY
    if answered < retrieve or "DownloadScheduled" in station.statuses():
        expected = ["DownloadScheduled", *HAPPY]
    assert station.csms.statuses() == [(s, 3) for s in expected]


def test_TC_L_05_CS_invalid_signing_certificate(station: Station, firmware: Firmware):
    """L01.FR.02/.23: a certificate not from the manufacturer's root → InvalidCertificate
    with statusInfo, the InvalidFirmwareSigningCertificate event, and no update starts."""
    station.start()
    stranger = issue("Somebody Else", rsa_key(2048, 200), ca=True)
    reply = station.update(firmware, 5, certificate=stranger.pem)
    assert reply.status == "InvalidCertificate"
    assert reply.status_info["reason_code"] == "InvalidCertificate"
    station.wait_event("InvalidFirmwareSigningCertificate")
    assert station.statuses() == [] and station.job() == {}


def test_TC_L_06_CS_invalid_signature(station: Station, rig: ChargerRig, firmware: Firmware):
    """L01.FR.03/.04: a signature that does not match → InvalidSignature (with requestId) and
    the InvalidFirmwareSignature event, in any order (errata 6.2.83); nothing installed."""
    station.start()
    signature = rig.sign(b"another image")
    assert station.update(firmware, 6, signature=signature).status == "Accepted"
    station.wait_status("InvalidSignature")
    station.wait_event("InvalidFirmwareSignature")
    assert station.statuses(6) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert not rig.reboot_marker.exists()


def test_TC_L_07_CS_download_failed(station: Station, fileserver: FirmwareHttpServer, rig):
    """L01.FR.07/.21: a location that cannot be fetched → DownloadFailed with its requestId."""
    station.start()
    missing = Firmware(fileserver.url("/fw/missing.bin"), b"", rig.sign(b"x"))
    assert station.update(missing, 7, retries=0).status == "Accepted"
    station.wait_status("DownloadFailed")
    assert station.statuses(7)[-1] == "DownloadFailed"
    assert "Installed" not in station.statuses()


def test_TC_L_10_CS_a_new_request_cancels_the_running_one(
    station: Station, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.26/.27: a request while downloading → AcceptedCanceled; later statuses carry
    the new requestId and the new update completes."""
    old = publish(rig, fileserver, "/fw/old.bin", IMAGE[::-1])
    fileserver.faults.stall_after = len(IMAGE) // 2
    agent = station.start()
    assert station.update(old, 10).status == "Accepted"
    assert fileserver.stalled.wait(20)
    fileserver.faults.stall_after = None
    assert station.update(firmware, 11).status == "AcceptedCanceled"
    rig.wait_reboot_request(agent)
    fileserver.release.set()
    assert station.statuses(11) == HAPPY
    assert station.statuses(10)[0] == "Downloading"
    assert set(station.statuses(10)) <= {"Downloading", "DownloadFailed"}
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE


def test_TC_L_18_CS_no_certificate_or_signature_is_rejected_not_an_error(
    station: Station, firmware: Firmware
):
    """TC_L_18_CS: signingCertificate and signature are optional in the 2.0.1 schema; a secure
    update without them is answered Rejected (with statusInfo), never a CALLERROR, and
    nothing starts."""
    station.start()
    station.csms.wait_message("BootNotification")
    for absent in (["signingCertificate"], ["signature"], ["signingCertificate", "signature"]):
        payload = station.rig.request(firmware, 18)
        for key in absent:
            del payload["firmware"][key]
        answer = station.raw("UpdateFirmware", {"requestId": 18, "firmware": payload["firmware"]})
        assert answer[0] == 3, answer  # a CALLRESULT
        assert answer[2]["status"] == "Rejected"
        assert answer[2]["statusInfo"]["reasonCode"] == "MissingParam"
        assert absent[0] in answer[2]["statusInfo"]["additionalInfo"]
    assert station.statuses() == [] and station.job() == {}


def test_TC_F_17_CS_trigger_with_nothing_running_answers_idle(station: Station):
    """F06.FR.04, L01.FR.28: Accepted, then FirmwareStatusNotification Idle without
    requestId (the only status that may omit it)."""
    station.start()
    assert station.trigger().status == "Accepted"
    sent = station.csms.wait_message("FirmwareStatusNotification")
    assert sent[-1].payload == {"status": "Idle"}


def test_TC_F_18_CS_trigger_during_an_update_answers_its_status(
    station: Station, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.29: while downloading, the trigger re-sends the current status with its
    requestId."""
    fileserver.faults.stall_after = len(IMAGE) // 2
    station.start()
    assert station.update(firmware, 19).status == "Accepted"
    assert fileserver.stalled.wait(20)
    station.wait_status("Downloading")
    assert station.trigger().status == "Accepted"
    sent = station.csms.wait_message("FirmwareStatusNotification", count=2)
    assert sent[-1].payload == {"status": "Downloading", "request_id": 19}
    fileserver.release.set()


def test_TC_F_19_CS_trigger_after_installed_answers_idle(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.28: once Installed, the trigger answers Idle again; after a failure it answers
    the failure with its requestId."""
    agent = station.start()
    assert station.update(firmware, 20).status == "Accepted"
    rig.wait_reboot_request(agent)
    rig.power_cycle(agent)
    station.restart()
    station.wait_status("Installed")
    count = len(station.csms.messages("FirmwareStatusNotification"))
    assert station.trigger().status == "Accepted"
    sent = station.csms.wait_message("FirmwareStatusNotification", count=count + 1)
    assert sent[-1].payload == {"status": "Idle"}
