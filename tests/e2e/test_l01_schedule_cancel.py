"""L01 end to end: schedules, cancelling a running update, and triggers in each state.

L01.FR.13/.16: a future retrieveDateTime → DownloadScheduled and nothing fetched before it; a
future installDateTime → InstallScheduled after SignatureVerified and no Installing before it.
L01.FR.26/.27 (CP-REQ-7): a new request while an update is scheduled, downloading, scheduled to
install or waiting at the install gate cancels it (transfer closed within a second, timers
dropped) and answers AcceptedCanceled; the new job reports under its own requestId. A new
request with a bad certificate leaves the running one alone; once the reboot was issued the
answer is Rejected. L01.FR.28/.29: triggers re-send the last status with its requestId.
"""

from __future__ import annotations

import time

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.demo.waiting import deadline
from agent.slots import filemodel
from tests.e2e.conftest import GATED, HAPPY, IMAGE, Charger, iso, publish, wall
from tests.e2e.test_l01_certificates import CASES
from tests.e2e.test_l01_power_loss import FAR, gate

OLD_IMAGE = IMAGE[::-1]  # the update that gets cancelled
VERIFIED = ["Downloading", "Downloaded", "SignatureVerified"]


def old_firmware(rig: ChargerRig, fileserver: FirmwareHttpServer) -> Firmware:
    return publish(rig, fileserver, "/fw/old.bin", OLD_IMAGE)


def requests_for(fileserver: FirmwareHttpServer, path: str) -> list:
    return [r for r in fileserver.requests if r.path == path]


def test_nothing_ever_ran_triggers_answer_idle(charger: Charger):
    """L01.FR.28, CP-TRG-5: Idle without requestId, for ExtendedTriggerMessage and the core
    TriggerMessage alike."""
    charger.start()
    charger.assert_triggers("Idle", None)


def test_a_future_retrieve_date_time_schedules_the_download(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.13: DownloadScheduled first; not a byte fetched before retrieveDateTime, then
    the update runs. The agent decides before it answers; a machine so slow that the answer
    comes after the time may skip the schedule (the time is past), and only then is the
    sequence without DownloadScheduled accepted. Nothing here needs the agent to be quick."""
    agent = charger.start()
    retrieve = int(time.time()) + 3
    assert charger.update(firmware, 41, retrieve=iso(retrieve)) == "Accepted"
    answered = time.time()
    rig.wait_reboot_request(agent)
    assert fileserver.requests[0].at >= retrieve
    if answered < retrieve or "DownloadScheduled" in charger.statuses():
        charger.assert_coherent(41, ["DownloadScheduled", *HAPPY])
    else:
        charger.assert_coherent(41, HAPPY)


def test_a_future_install_date_time_schedules_the_install(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.16/.17: InstallScheduled after SignatureVerified; Installing not before
    installDateTime, then the install goes on by itself. (How soon is not a functional
    property a loaded machine can be held to; the triggers while it waits are checked in
    test_cancel_a_scheduled_install, whose time is far away.) The agent decides after the
    read-back, just before SignatureVerified reaches the CSMS: if that arrived before the
    time, InstallScheduled must be there; only a machine slower than the window may skip it."""
    agent = charger.start()
    install = int(time.time()) + 3
    assert charger.update(firmware, 42, install=iso(install)) == "Accepted"
    rig.wait_reboot_request(agent)
    arrived = {
        m.payload["status"]: wall(m.at)
        for m in charger.csms.messages("SignedFirmwareStatusNotification")
    }
    assert arrived["Installing"] >= install
    if arrived["SignatureVerified"] < install or "InstallScheduled" in arrived:
        charger.assert_coherent(42, [*VERIFIED, "InstallScheduled", *HAPPY[3:]])
    else:
        charger.assert_coherent(42, HAPPY)


def test_cancel_a_scheduled_download(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.26: AcceptedCanceled; the old schedule is dropped (its waiting thread stops and
    nothing is fetched for it), the new request runs under its own requestId. L01.FR.29: while
    scheduled, both triggers answer DownloadScheduled with its requestId."""
    old = old_firmware(rig, fileserver)
    agent = charger.start()
    retrieve = int(time.time()) + FAR
    assert charger.update(old, 51, retrieve=iso(retrieve)) == "Accepted"
    charger.wait_status("DownloadScheduled")
    charger.assert_triggers("DownloadScheduled", 51)
    assert charger.update(firmware, 52) == "AcceptedCanceled"
    rig.wait_reboot_request(agent)
    agent.wait_log("update 51 stopped in phase download-scheduled")
    assert requests_for(fileserver, "/fw/old.bin") == []
    assert charger.sequence() == [("DownloadScheduled", 51)] + [(s, 52) for s in HAPPY]
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE


def test_cancel_a_download_in_progress_closes_the_transfer(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.26: the stalled transfer of the old update is closed by the AcceptedCanceled
    (the agent would otherwise hold it for its 10 min stall timeout, and the server never
    closes it); the new image is downloaded and installed instead."""
    old = old_firmware(rig, fileserver)
    fileserver.faults.stall_after = len(OLD_IMAGE) // 2
    agent = charger.start(firmware={"stall_timeout": 600})
    assert charger.update(old, 53) == "Accepted"
    assert fileserver.stalled.wait(deadline(60))
    charger.assert_triggers("Downloading", 53)  # L01.FR.29 while downloading
    fileserver.faults.stall_after = None  # the new download is not held
    (stalled,) = requests_for(fileserver, "/fw/old.bin")
    assert stalled.closed_at is None  # held open until the cancel
    assert charger.update(firmware, 54) == "AcceptedCanceled"
    charger.csms.wait_for(lambda: stalled.closed_at, 60, "the old transfer closed")
    assert stalled.sent == len(OLD_IMAGE) // 2
    rig.wait_reboot_request(agent)
    assert len(requests_for(fileserver, "/fw/old.bin")) == 1  # never resumed
    assert charger.sequence() == [("Downloading", 53)] + [(s, 54) for s in HAPPY]
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE


def test_cancel_a_scheduled_install(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.26: an update waiting for its installDateTime is cancelled; its timer is
    dropped and the new image is the one armed. L01.FR.29: while it waits, both triggers
    answer InstallScheduled with its requestId."""
    old = old_firmware(rig, fileserver)
    agent = charger.start()
    install = int(time.time()) + FAR
    assert charger.update(old, 55, install=iso(install)) == "Accepted"
    charger.wait_status("InstallScheduled")
    charger.assert_triggers("InstallScheduled", 55)
    assert filemodel.load_env(rig.env)["trial"] is None
    assert charger.update(firmware, 56) == "AcceptedCanceled"
    agent.wait_log("update 55 stopped in phase install-scheduled")
    rig.wait_reboot_request(agent)
    expected = [(s, 55) for s in [*VERIFIED, "InstallScheduled"]] + [(s, 56) for s in HAPPY]
    assert charger.sequence() == expected
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE
    assert filemodel.load_env(rig.env)["trial"]["slot"] == "B"


def test_cancel_an_update_waiting_at_the_install_gate(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.26 with L01.FR.06: the update held by the gate is cancelled; the new one waits
    at the gate in turn and installs once it opens; the old one never reaches Installing."""
    old = old_firmware(rig, fileserver)
    agent = charger.start(firmware=gate(rig))
    assert charger.update(old, 57) == "Accepted"
    charger.wait_status("InstallScheduled")
    agent.wait_log("install gate closed")
    assert charger.update(firmware, 58) == "AcceptedCanceled"
    agent.wait_log("update 57 stopped in phase install-scheduled")
    charger.csms.wait_for(lambda: ("InstallScheduled", 58) in charger.sequence(), what="58")
    (rig.base / "gate-open").touch()
    rig.wait_reboot_request(agent)
    held = [*VERIFIED, "InstallScheduled"]
    assert charger.sequence() == [(s, 57) for s in held] + [(s, 58) for s in GATED]
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE


def test_a_bad_certificate_does_not_cancel_the_running_update(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """CP-REQ-7: the new request's certificate is checked first; InvalidCertificate leaves
    the running update (held at the gate) untouched, and it completes."""
    expired, _ = CASES["expired"]
    agent = charger.start(firmware=gate(rig))
    assert charger.update(firmware, 59) == "Accepted"
    charger.wait_status("InstallScheduled")
    assert charger.update(firmware, 60, certificate=expired(rig)) == "InvalidCertificate"
    charger.wait_event("InvalidFirmwareSigningCertificate")
    (rig.base / "gate-open").touch()
    rig.wait_reboot_request(agent)
    charger.assert_coherent(59, GATED)
    assert "stopped in phase" not in agent.log


def test_once_the_reboot_is_issued_a_new_request_is_rejected(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.27: after InstallRebooting and the reboot request, a new update is Rejected and
    reports nothing; the first one still completes after the reboot; then triggers say Idle
    (L01.FR.28)."""
    agent = charger.start()
    assert charger.update(firmware, 61) == "Accepted"
    rig.wait_reboot_request(agent)
    assert charger.update(firmware, 62) == "Rejected"
    charger.assert_triggers("InstallRebooting", 61)
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    charger.restart()
    charger.wait_status("Installed")
    charger.assert_coherent(61, [*HAPPY, "Installed"])
    charger.assert_triggers("Idle", None)
