"""OCPP 2.0.1 direct mode, rehearsing the certification cases for L01 (and F06's trigger).

Each test is named after its OCTT case (part 6); the requirement ids are L01.FR.* of 2.0.1
Ed3 (the same text 1.6's Security Extension copied). The CSMS is the `ocpp` library's v201
side: every CALL the agent sends and every answer it gives is checked against the official
2.0.1 schemas. The agent is a real process on the e2e rig (file slots, real PKI, HTTP server).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.pki import issue, rsa_key
from agent.demo.rig import AgentProcess, ChargerRig, Firmware
from agent.demo.waiting import deadline
from agent.slots import filemodel
from tests.e2e.conftest import GATED, HAPPY, IMAGE, iso, publish, wait_until, wall
from tests.e2e.test_l01_guards import image_check
from tests.e2e.test_l01_power_loss import GATE_POLL
from tests.v201.conftest import Station

# A whole update through the reboot, as in tests/e2e: the Debian pass runs it (Makefile).
pytestmark = pytest.mark.slow

VERIFIED = HAPPY[:3]  # Downloading, Downloaded, SignatureVerified


# --- helpers: the charger's side of the rig, and what the CSMS saw ---------------------------


def finish_on_the_new_slot(station: Station, rig: ChargerRig, agent: AgentProcess) -> None:
    """The reboot the agent asked for: slot B boots as version 2.0, the trial is judged, and
    the CSMS hears Installed and FirmwareUpdated (RebootBeforeFirmwareActivation, part 6)."""
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    station.restart()
    station.wait_status("Installed")
    station.wait_event("FirmwareUpdated")
    boot = station.boots()[-1]
    assert boot["reason"] == "FirmwareUpdate"
    assert boot["charging_station"]["firmware_version"] == "2.0"


def sessions_gate(sessions: Path) -> dict[str, object]:
    """The integrator's install gate (`[firmware] install_gate`, asked through
    `CommandCharger.may_install`) for a charger whose running sessions are files in
    `sessions`: open when there is none (L01.FR.06: never cut a charging session)."""
    sessions.mkdir(exist_ok=True)
    script = '[ -z "$(ls -A "$1")" ]'
    return {
        "install_gate": ["sh", "-c", script, "sessions-gate", str(sessions)],
        "gate_poll_interval": GATE_POLL,
    }


def gate_asked_closed_again(agent: AgentProcess) -> None:
    """Until the gate was asked (and found closed) twice more: whatever the test changed
    before this call was seen by at least one whole poll."""
    closed = agent.log.count("install gate closed")
    wait_until(lambda: agent.log.count("install gate closed") >= closed + 2, 60, "two polls")


def arrivals(station: Station, request_id: int) -> dict[str, float]:
    """Status -> wall-clock time its FirmwareStatusNotification reached the CSMS."""
    return {
        m.payload["status"]: wall(m.at)
        for m in station.csms.messages("FirmwareStatusNotification")
        if m.payload.get("request_id") == request_id
    }


def collapsed(statuses: list[str]) -> list[str]:
    """Repeats of one status in a row folded into one (a refused CALL is sent again)."""
    return [s for i, s in enumerate(statuses) if statuses[i - 1 : i] != [s]]


def availability_reports(station: Station, state: str) -> list[float]:
    """When each StatusNotification (connectorStatus) or NotifyEvent (AvailabilityState) CALL
    that reports `state` reached the CSMS (either peer: read from what the CSMS took)."""
    return [
        m.at
        for action in ("StatusNotification", "NotifyEvent")
        for m in station.csms.messages(action)
        if _reports_availability(action, m.payload, state)
    ]


def _reports_availability(action: str, payload: dict[str, Any], state: str) -> bool:
    if action == "StatusNotification":
        return bool(payload.get("connector_status") == state)
    return any(
        event.get("variable", {}).get("name") == "AvailabilityState"
        and event.get("actual_value") == state
        for event in payload.get("event_data", [])
    )


def refuse_install_rebooting(station: Station) -> dict[str, bool]:
    """From now on the CSMS refuses InstallRebooting until the returned switch is turned off."""
    refusing = {"on": True}
    station.csms.answer_filter = lambda action, payload: (
        not (refusing["on"] and payload.get("status") == "InstallRebooting")
    )
    return refusing


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


def test_TC_L_02_CS_install_scheduled(station: Station, rig: ChargerRig, firmware: Firmware):
    """L01.FR.16/.17: an installDateTime in the future → Downloading, Downloaded,
    SignatureVerified, InstallScheduled; nothing installed before that time (no Installing,
    no trial armed, no reboot); then Installing, the reboot, Installed and FirmwareUpdated.
    The agent decides just before SignatureVerified goes out: only a machine so slow that it
    arrived after installDateTime may go straight on (the time is past, L01.FR.17)."""
    agent = station.start()
    install = int(time.time()) + 5
    assert station.update(firmware, 2, install=iso(install)).status == "Accepted"
    rig.wait_reboot_request(agent)
    arrived = arrivals(station, 2)
    assert arrived["Installing"] >= install
    if arrived["SignatureVerified"] < install or "InstallScheduled" in arrived:
        expected = [*VERIFIED, "InstallScheduled", *HAPPY[3:]]
    else:
        expected = HAPPY
    assert station.statuses(2) == expected
    finish_on_the_new_slot(station, rig, agent)
    assert station.statuses(2) == [*expected, "Installed"]


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


def test_TC_L_08_CS_installation_failed_falls_back_to_the_old_firmware(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.12, §6.8: a validly signed image that does not work: Installing, the reboot into
    it, its health check fails → InstallationFailed (not Installed, no FirmwareUpdated); the
    trial is abandoned and the charger reboots back into the old firmware, as the case's note
    recommends."""
    healthy = ["test", "-e", str(rig.base / "healthy")]  # never created: the new image is sick
    agent = station.start(health={"commands": [healthy]})
    assert station.update(firmware, 8).status == "Accepted"
    rig.wait_reboot_request(agent)
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    agent = station.restart()
    station.wait_status("InstallationFailed")
    rig.wait_reboot_request(agent)  # back to the old slot
    assert rig.power_cycle(agent) == "A"
    station.restart()
    station.csms.wait_message("BootNotification", count=3)
    assert station.boots()[-1]["charging_station"]["firmware_version"] == "1.0"
    station.wait_acknowledged()
    assert station.statuses(8) == [*HAPPY, "InstallationFailed"]
    assert "FirmwareUpdated" not in station.events()
    env = filemodel.load_env(rig.env)
    assert env["primary"] == "A" and "B" in env["bad"] and env["trial"] is None


def test_TC_L_08_CS_install_verification_failed(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """TC_L_08_CS with "a firmware file that causes an InstallVerificationFailed": here the
    integrator's image check refuses the validly signed image (it is not meant for this
    charger). The case's tool validations: SignatureVerified, then Installing (step 12: the
    station did not reboot before installing), then InstallVerificationFailed or
    InstallationFailed (step 16); nothing armed, no reboot, the old firmware keeps running."""
    check = image_check(rig, 'echo "image is for AB-Charger-2" >&2; exit 3')
    agent = station.start(firmware={"image_check": check})
    assert station.update(firmware, 9).status == "Accepted"
    failed = {"InstallVerificationFailed", "InstallationFailed"}
    station.csms.wait_for(lambda: failed & set(station.statuses(9)), what="the failure")
    agent.wait_log("update 9 finished")
    statuses = station.statuses(9)
    assert not rig.reboot_marker.exists()
    env = filemodel.load_env(rig.env)
    assert env["trial"] is None and env["primary"] == "A"
    assert statuses[:-1] == [*VERIFIED, "Installing"], statuses
    assert statuses[-1] in failed


def test_TC_L_10_CS_a_new_request_cancels_the_running_one(
    station: Station, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.26/.27: a request while downloading → AcceptedCanceled; later statuses carry
    the new requestId and the new update completes."""
    old = publish(rig, fileserver, "/fw/old.bin", IMAGE[::-1])
    fileserver.faults.stall_after = len(IMAGE) // 2
    agent = station.start()
    assert station.update(old, 10).status == "Accepted"
    assert fileserver.stalled.wait(deadline(20))
    fileserver.faults.stall_after = None
    assert station.update(firmware, 11).status == "AcceptedCanceled"
    rig.wait_reboot_request(agent)
    fileserver.release.set()
    assert station.statuses(11) == HAPPY
    assert station.statuses(10)[0] == "Downloading"
    assert set(station.statuses(10)) <= {"Downloading", "DownloadFailed"}
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE


def test_TC_L_11_CS_rejected_when_the_running_update_cannot_be_cancelled(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.27: "unable to cancel" → Rejected. The agent can cancel until the trial is armed
    (while downloading it answers AcceptedCanceled: TC_L_10_CS, whose prerequisite excludes
    this case's); once InstallRebooting is sent and the reboot issued, and during the trial
    boot of the new slot, it cannot. A request then is Rejected (with statusInfo), reports
    nothing under its requestId, and the running update goes on: Installed and
    FirmwareUpdated, every status with the first requestId."""
    held = rig.base / "health-held"
    held.touch()
    wait_while_held = 'while [ -e "$1" ]; do sleep 0.1; done'
    health = ["sh", "-c", wait_while_held, "held-health", str(held)]
    agent = station.start(health={"commands": [health]})
    assert station.update(firmware, 110).status == "Accepted"
    rig.wait_reboot_request(agent)
    reply = station.update(firmware, 111)  # installing: the trial is armed, the reboot issued
    assert reply.status == "Rejected" and reply.status_info["reason_code"]
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    agent = station.restart()
    agent.wait_log("the CSMS accepted the trial boot")  # the trial's health check is held
    assert station.update(firmware, 112).status == "Rejected"  # rebooted, not yet judged
    held.unlink()
    station.wait_status("Installed")
    station.wait_event("FirmwareUpdated")
    station.wait_acknowledged()
    assert station.csms.statuses() == [(s, 110) for s in [*HAPPY, "Installed"]]
    assert filemodel.load_env(rig.env)["primary"] == "B"


def test_TC_L_14_CS_install_waits_for_transactions_new_sessions_allowed(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.06/.33/.34 with AllowNewSessionsPendingFirmwareUpdate true (step 11: a second
    session may start while the update waits): the download and verification go on during the
    session, then InstallScheduled (the case accepts it, or Installing); no Installing, no
    trial, no reboot while either session runs, also after the first one ended; once the
    last one ends: Installing, the reboot, Installed and FirmwareUpdated. In direct mode the
    sessions are the charger's, told through its install gate command."""
    sessions = rig.base / "sessions"
    gate = sessions_gate(sessions)
    (sessions / "evse-1").touch()  # EnergyTransferStarted on EVSE 1
    agent = station.start(firmware=gate)
    assert station.update(firmware, 14).status == "Accepted"
    station.wait_status("InstallScheduled")
    (sessions / "evse-2").touch()  # step 11: a second session starts
    (sessions / "evse-1").unlink()  # step 12: the first one ends
    gate_asked_closed_again(agent)
    assert station.statuses(14) == GATED[:4]
    assert not rig.reboot_marker.exists() and filemodel.load_env(rig.env)["trial"] is None
    (sessions / "evse-2").unlink()  # step 13: the last one ends
    rig.wait_reboot_request(agent)
    assert station.statuses(14) == GATED
    finish_on_the_new_slot(station, rig, agent)
    assert station.statuses(14) == [*GATED, "Installed"]


def test_TC_L_15_CS_install_waits_for_transactions_no_new_sessions(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """As TC_L_14_CS with AllowNewSessionsPendingFirmwareUpdate false (configuration state:
    set by the CSMS, SetVariables): InstallScheduled, then (step 11, L01.FR.33/.34) the
    station reports its Available connectors Unavailable (StatusNotification or NotifyEvent
    AvailabilityState) and runs the integrator's session block; the install starts once the
    session ends; Installed and FirmwareUpdated, and the connectors Available again. The
    firmware statuses are checked first, the variable and the availability reports last."""
    setting = {
        "component": {"name": "ChargingStation"},
        "variable": {"name": "AllowNewSessionsPendingFirmwareUpdate"},
        "attributeValue": "false",
    }
    sessions = rig.base / "sessions"
    gate = sessions_gate(sessions)
    (sessions / "evse-1").touch()  # EnergyTransferStarted
    blocks = rig.base / "session-block.log"  # the charger's side: what it was told
    block = ["sh", "-c", 'echo "$1" >> "$0"', str(blocks)]
    agent = station.start(firmware=gate, station={"session_block": block})
    station.csms.wait_message("BootNotification")
    configured = station.raw("SetVariables", {"setVariableData": [setting]})
    assert station.update(firmware, 15).status == "Accepted"
    station.wait_status("InstallScheduled")
    gate_asked_closed_again(agent)
    assert station.statuses(15) == GATED[:4] and not rig.reboot_marker.exists()
    (sessions / "evse-1").unlink()  # step 13: the session ends
    rig.wait_reboot_request(agent)
    finish_on_the_new_slot(station, rig, agent)
    assert station.statuses(15) == [*GATED, "Installed"]
    gaps = []
    result = configured[2]["setVariableResult"][0] if configured[0] == 3 else {}
    if result.get("attributeStatus") != "Accepted":
        gaps.append(f"SetVariables AllowNewSessionsPendingFirmwareUpdate=false: {configured}")
    unavailable = availability_reports(station, "Unavailable")
    if not unavailable:
        gaps.append("step 11: no connector reported Unavailable while the install waited")
    elif not [at for at in availability_reports(station, "Available") if at > unavailable[-1]]:
        gaps.append("no connector reported Available again after the update")
    told = blocks.read_text().split() if blocks.exists() else []
    if told[:2] != ["block", "allow"]:
        gaps.append(f"the charger's session block was told {told}, not block then allow")
    assert not gaps, gaps


def test_TC_L_16_CS_update_with_an_ongoing_transaction(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """A charger able to update while a transaction runs (its charging survives the reboot of
    the unit the agent runs on): its install gate says so although a session is running, and
    the update goes straight through: Downloading, Downloaded, SignatureVerified, Installing
    (no InstallScheduled), the reboot, Installed and FirmwareUpdated."""
    sessions = rig.base / "sessions"
    sessions.mkdir()
    (sessions / "evse-1").touch()  # EnergyTransferStarted, for the whole update
    agent = station.start(firmware={"install_gate": ["true"]})  # this charger's answer
    assert station.update(firmware, 16).status == "Accepted"
    rig.wait_reboot_request(agent)
    assert station.statuses(16) == HAPPY
    finish_on_the_new_slot(station, rig, agent)
    assert station.statuses(16) == [*HAPPY, "Installed"]
    assert (sessions / "evse-1").exists()


def test_L01_FR_15_the_reboot_waits_until_the_csms_has_install_rebooting(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.15 (RebootBeforeFirmwareActivation): InstallRebooting is sent *before* the
    reboot and the reboot waits for the CSMS's answer: while the CSMS refuses it (CALLERROR,
    sent again by the outbox) nothing reboots; once it is taken, the reboot follows."""
    refusing = refuse_install_rebooting(station)
    agent = station.start(csms={"call_timeout": 600})  # no give-up deadline in this test
    assert station.update(firmware, 13).status == "Accepted"
    station.csms.wait_for(
        lambda: station.statuses(13).count("InstallRebooting") >= 2, 60, "refused twice"
    )
    assert not rig.reboot_marker.exists()
    refusing["on"] = False
    rig.wait_reboot_request(agent)
    assert collapsed(station.statuses(13)) == HAPPY
    finish_on_the_new_slot(station, rig, agent)
    assert collapsed(station.statuses(13)) == [*HAPPY, "Installed"]


def test_L01_FR_15_an_unanswered_install_rebooting_is_delivered_after_the_reboot(
    station: Station, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.15, the known EVerest failure (a status sent just before the reboot is lost):
    when the CSMS does not take InstallRebooting within 2 x call_timeout the agent reboots
    anyway, and the status stays queued on disk: after the reboot it reaches the CSMS first,
    then Installed; the CSMS never sees Installed without InstallRebooting before it."""
    refusing = refuse_install_rebooting(station)
    agent = station.start(csms={"call_timeout": 2})
    assert station.update(firmware, 130).status == "Accepted"
    rig.wait_reboot_request(agent)
    agent.wait_log("rebooting anyway")
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"  # refused until the power went
    refusing["on"] = False
    refused = len(station.statuses(130))
    station.restart()
    station.wait_status("Installed")
    station.wait_event("FirmwareUpdated")
    assert collapsed(station.statuses(130)) == [*HAPPY, "Installed"]
    # Taken after the reboot, and before Installed:
    assert collapsed(station.statuses(130)[refused:]) == ["InstallRebooting", "Installed"]


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
    assert fileserver.stalled.wait(deadline(20))
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
