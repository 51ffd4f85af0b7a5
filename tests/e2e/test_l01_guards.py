"""The guards around an install: read-back, crash-loop breaker, a backend that cannot work."""

from __future__ import annotations

import json

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.slots import filemodel
from tests.e2e.conftest import Charger
from tests.e2e.test_l01_power_loss import gate


def test_a_slot_that_reads_back_wrong_is_install_verification_failed(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """The slot is read back past the page cache and compared with the streamed digest: a
    medium that changed under us is InstallVerificationFailed, and nothing is armed. Here the
    daemon is killed while waiting at the install gate, the slot is corrupted, and the restarted
    daemon redoes the read-back (a job resumed while waiting to install proves the slot again)."""
    agent = charger.start(firmware=gate(rig))
    assert charger.update(firmware, 61) == "Accepted"
    charger.wait_status("InstallScheduled")
    agent.wait_log("install gate closed")
    agent.kill9()
    with rig.slots["B"].open("r+b") as slot:
        slot.seek(1000)
        slot.write(b"\xff" * 16)  # one flipped region, as a failing eMMC block would give
    charger.restart()
    charger.wait_status("InstallVerificationFailed")
    assert charger.statuses(61)[-1] == "InstallVerificationFailed"
    env = filemodel.load_env(rig.env)
    assert env["trial"] is None and env["primary"] == "A" and "B" in env["bad"]
    assert not rig.reboot_marker.exists()


def test_a_daemon_that_keeps_dying_gives_the_update_up(
    charger: Charger, rig: ChargerRig, firmware: Firmware, fileserver: FirmwareHttpServer
):
    """Crash-loop breaker (issue #4, Mender's state-store counter): every resume is a saved
    transition; past `max_transitions` the update is given up cleanly, once."""
    fileserver.faults.stall_after = 1000  # the download never finishes
    agent = charger.start(health={"max_transitions": 4})
    assert charger.update(firmware, 62) == "Accepted"
    assert fileserver.stalled.wait(10)
    charger.wait_acknowledged()  # else Downloading, unanswered when killed, is sent again
    for _ in range(4):
        agent.kill9()
        agent = charger.restart()
        agent.wait_log("continuing update 62")
    charger.wait_status("DownloadFailed")
    assert charger.statuses(62) == ["Downloading", "DownloadFailed"]
    assert "gave up after" in agent.log
    fileserver.release.set()


def test_an_unusable_backend_refuses_updates_and_says_why(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """self_check at start-up: problems are logged and shown by `status`, and an update is
    answered Rejected (issue #4)."""
    rig.env.unlink()  # the bootloader environment is gone
    agent = charger.start()
    agent.wait_log("boot-slot backend file:")
    assert charger.update(firmware, 63) == "Rejected"
    assert charger.statuses() == []
    problems = charger.csms.wait_for(lambda: published(rig).get("problems"), 10, "problems")
    assert any("bootenv.json" in problem for problem in problems)


def published(rig: ChargerRig) -> dict:
    """The daemon's published status (what `ocpp-fw-agent status` shows)."""
    path = rig.state / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}
