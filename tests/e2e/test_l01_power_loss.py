"""L01 end to end: kill -9 (or a shutdown) in each phase, then a restart, and the install gate.

Issue #3 "Persistence and power loss": the job lives in the state dir; after `kill -9` the
restarted daemon continues where it was and the CSMS sees one coherent sequence: no status
lost, none repeated, none for the wrong requestId, exactly one terminal status (L01.FR.10).
The install gate (L01.FR.06) holds Installing, the trial and the reboot until it opens.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.crashpoints import CRASH_AT_ENV, CRASH_LOG_ENV
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import AgentProcess, ChargerRig, Firmware
from agent.demo.waiting import deadline
from agent.slots import filemodel
from tests.e2e.conftest import GATED, HAPPY, IMAGE, Charger, iso, wait_until

GATE_POLL = 0.2
# A schedule that cannot come due while a test looks at it, however slow the machine: what must
# be seen *before* a scheduled time is checked against this, never against a few seconds.
FAR = 3600


def gate(rig: ChargerRig) -> dict[str, object]:
    """An install gate that opens when `<base>/gate-open` exists."""
    return {
        "install_gate": ["test", "-e", str(rig.base / "gate-open")],
        "gate_poll_interval": GATE_POLL,
    }


def a_failing_trial_behind_a_closed_gate(
    charger: Charger, rig: ChargerRig, firmware: Firmware, request_id: int
) -> AgentProcess:
    """An update whose trial boot will fail its health check, the gate closing while the
    charger reboots into it: the way back to the old slot must wait at the gate. The agent
    (stopped by the power cycle, its log still there) is returned."""
    (rig.base / "gate-open").touch()
    healthy = ["test", "-e", str(rig.base / "healthy")]  # never created: the health check fails
    agent = charger.start(firmware=gate(rig), health={"commands": [healthy]})
    assert charger.update(firmware, request_id) == "Accepted"
    rig.wait_reboot_request(agent)
    (rig.base / "gate-open").unlink()  # a session started while the charger rebooted
    assert rig.power_cycle(agent) == "B"
    return agent


def back_once_the_gate_opens(
    charger: Charger, rig: ChargerRig, agent: AgentProcess, request_id: int
) -> None:
    """The end of such an update: no reboot while the gate stays closed; once it opens, the
    reboot back into A, and the CSMS has seen the update fail, once."""
    assert not rig.reboot_marker.exists()
    (rig.base / "gate-open").touch()
    rig.wait_reboot_request(agent)
    assert rig.power_cycle(agent) == "A"
    charger.restart()
    charger.wait_acknowledged()
    charger.assert_coherent(request_id, [*HAPPY, "InstallationFailed"])


def status_showing(rig: ChargerRig, needle: str, timeout: float) -> str:
    """What `ocpp-fw-agent status` prints for this charger, once it shows `needle` (the
    daemon publishes its status shortly after a change; a daemon just started has published
    nothing yet, and `status` exits 1 until it has)."""

    def shown() -> str | None:
        argv = [sys.executable, "-m", "agent", "-c", str(rig.base / "agent.toml"), "status"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 and needle in done.stdout else None

    return str(wait_until(shown, timeout, f"status showing {needle!r}"))


def finish_after_reboot(charger: Charger, rig: ChargerRig, request_id: int, before: list[str]):
    """Power-cycle into the new slot and check the whole sequence the CSMS saw."""
    assert charger.agent is not None
    rig.wait_reboot_request(charger.agent)
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(charger.agent) == "B"
    charger.restart()
    charger.wait_status("Installed")
    charger.assert_coherent(request_id, [*before, "Installed"])
    assert filemodel.load_env(rig.env)["primary"] == "B"


def test_the_install_gate_holds_the_install_and_the_reboot(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.06 (CP-SCH-4): while the gate command fails, no Installing, no InstallRebooting,
    no trial armed and no reboot request, but InstallScheduled says why (L01.FR.34); once the
    gate opens the install goes on."""
    agent = charger.start(firmware=gate(rig))
    assert charger.update(firmware, 31) == "Accepted"
    charger.wait_status("InstallScheduled")
    agent.wait_log("install gate closed")
    # Several closed polls: the gate was asked again and again, and nothing else happened.
    wait_until(lambda: agent.log.count("install gate closed") >= 3, 60, "three closed polls")
    assert charger.statuses() == GATED[:4]  # and InstallScheduled only once
    assert filemodel.load_env(rig.env)["trial"] is None and not rig.reboot_marker.exists()
    shown = status_showing(rig, "waiting for:  the install gate", 60)
    assert "request 31: install-scheduled" in shown
    charger.assert_triggers("InstallScheduled", 31)  # L01.FR.29 while waiting at the gate
    (rig.base / "gate-open").touch()
    finish_after_reboot(charger, rig, 31, GATED)


def test_the_way_back_from_a_failed_trial_waits_at_the_gate_too(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.06 holds for the reboot back to the old slot as well: the trial's health check
    fails, InstallationFailed is reported at once, and the reboot waits until the gate opens."""
    agent = a_failing_trial_behind_a_closed_gate(charger, rig, firmware, 33)
    closed_before = agent.log.count("install gate closed")  # one log file for every run
    agent = charger.restart()
    charger.wait_status("InstallationFailed")
    wait_until(
        lambda: agent.log.count("install gate closed") >= closed_before + 3,
        60,
        "three closed-gate polls after InstallationFailed",
    )
    assert "B" in filemodel.load_env(rig.env)["bad"]  # the trial is abandoned already
    back_once_the_gate_opens(charger, rig, agent, 33)


def test_a_shutdown_while_install_rebooting_is_unconfirmed_is_prompt(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.15: the reboot waits for InstallRebooting's CALLRESULT, but a SIGTERM meanwhile
    stops the daemon at once (not after 2 x call_timeout, here 2 x 10 min: a daemon that
    waited for them would outlast the generous stop deadline below by far); the restart
    delivers the status and reboots, and the update completes."""
    refuse = {"on": True}
    charger.csms.answer_filter = lambda action, payload: (
        not (refuse["on"] and payload.get("status") == "InstallRebooting")
    )
    agent = charger.start(csms={"call_timeout": 600})
    assert charger.update(firmware, 32) == "Accepted"
    agent.wait_log("firmware status InstallRebooting")
    charger.csms.wait_for(lambda: "InstallRebooting" in charger.statuses(), what="refused once")
    assert not rig.reboot_marker.exists()  # not confirmed yet: no reboot
    agent.signal(15)
    assert agent.wait(timeout=120) == 0
    refuse["on"] = False
    charger.restart()
    rig.wait_reboot_request(charger.agent)
    # A refused CALL is sent again (outbox); collapse those repeats, nothing else may differ.
    seen = [
        s
        for i, s in enumerate(charger.csms.statuses())
        if charger.csms.statuses()[i - 1 : i] != [s]
    ]
    assert seen == [(s, 32) for s in HAPPY]
    rig.power_cycle(charger.agent)
    charger.restart()
    charger.wait_status("Installed")
    assert charger.csms.statuses()[-1] == ("Installed", 32)


def test_kill9_while_downloading_resumes_from_the_checkpoint(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """The restarted daemon asks only for the rest (Range from the durable offset, If-Range),
    does not announce Downloading again, and completes."""
    fileserver.faults.stall_after = len(IMAGE) // 2
    agent = charger.start(firmware={"checkpoint_bytes": 64 * 1024})
    assert charger.update(firmware, 33) == "Accepted"
    assert fileserver.stalled.wait(deadline(60))
    charger.wait_status("Downloading")
    wait_until(lambda: charger.job().get("offset", 0) >= 64 * 1024, 60, "a checkpoint")
    charger.wait_acknowledged()
    agent.kill9()
    offset = charger.job()["offset"]
    fileserver.faults.stall_after = None
    fileserver.release.set()
    charger.restart()
    finish_after_reboot(charger, rig, 33, HAPPY)
    _, second = fileserver.requests
    assert second.header("Range") == f"bytes={offset}-"
    assert second.header("If-Range") == fileserver.files["/fw/2.0.bin"].etag
    assert second.status == 206 and second.sent == len(IMAGE) - offset
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE


def test_kill9_while_the_download_is_scheduled_keeps_the_schedule(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, firmware: Firmware
):
    """L01.FR.13: the schedule survives: the restarted daemon waits for the same
    retrieveDateTime, fetches nothing, and does not send DownloadScheduled again. (That a
    scheduled download starts once its time comes is test_a_future_retrieve_date_time_...;
    here the time is an hour away so that no machine is too slow for the checks before it.)"""
    agent = charger.start()
    retrieve = int(time.time()) + FAR
    assert charger.update(firmware, 34, retrieve=iso(retrieve)) == "Accepted"
    charger.wait_status("DownloadScheduled")
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(retrieve))
    assert when in status_showing(rig, "waiting for:  retrieveDateTime", 60)
    charger.wait_acknowledged()
    agent.kill9()
    (rig.state / "status.json").unlink()  # what `status` shows next is the new daemon's
    agent = charger.restart()
    agent.wait_log("continuing update 34")
    assert when in status_showing(rig, "waiting for:  retrieveDateTime", 60)
    charger.wait_acknowledged()
    assert charger.statuses() == ["DownloadScheduled"] and fileserver.requests == []
    assert charger.job()["phase"] == "download-scheduled"


def test_kill9_while_the_install_is_scheduled_keeps_the_schedule(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.16: the install schedule survives: the restarted daemon reads the slot back
    again, waits for the same installDateTime, arms nothing and repeats no status (the time
    is an hour away; Installing at the time is test_a_future_install_date_time_...)."""
    agent = charger.start()
    install = int(time.time()) + FAR
    assert charger.update(firmware, 35, install=iso(install)) == "Accepted"
    charger.wait_status("InstallScheduled")
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(install))
    assert when in status_showing(rig, "waiting for:  installDateTime", 60)
    charger.wait_acknowledged()
    agent.kill9()
    (rig.state / "status.json").unlink()
    read_back_before = agent.log.count(" read back ")  # one log file for every run
    agent = charger.restart()
    assert when in status_showing(rig, "waiting for:  installDateTime", 60)
    wait_until(
        lambda: agent.log.count(" read back ") > read_back_before, 60, "the slot read back again"
    )
    charger.wait_acknowledged()
    assert charger.statuses() == [*HAPPY[:3], "InstallScheduled"]
    assert filemodel.load_env(rig.env)["trial"] is None and not rig.reboot_marker.exists()


def test_kill9_while_waiting_at_the_install_gate(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.06: after the restart the update reads the slot back again, waits at the gate
    again without repeating InstallScheduled, then installs."""
    agent = charger.start(firmware=gate(rig))
    assert charger.update(firmware, 36) == "Accepted"
    charger.wait_status("InstallScheduled")
    agent.wait_log("install gate closed")
    charger.wait_acknowledged()
    agent.kill9()
    closed_before = agent.log.count("install gate closed")  # one log file for every run
    agent = charger.restart()
    wait_until(
        lambda: agent.log.count("install gate closed") > closed_before, 60, "the gate polled"
    )
    assert charger.statuses() == GATED[:4] and not rig.reboot_marker.exists()
    assert agent.log.count(" read back with ") == 2  # before the first wait, after the restart
    (rig.base / "gate-open").touch()
    finish_after_reboot(charger, rig, 36, GATED)


def test_kill9_after_install_rebooting_before_the_power_cycle(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.15: killed after asking for the reboot, on the same boot: the restarted daemon
    asks for the reboot again, sends nothing twice, and Installed follows the power cycle."""
    agent = charger.start()
    assert charger.update(firmware, 37) == "Accepted"
    rig.wait_reboot_request(agent)
    charger.wait_acknowledged()
    agent.kill9()
    rig.reboot_marker.unlink()
    agent = charger.restart()
    rig.wait_reboot_request(agent)
    agent.wait_log("rebooting into the new slot")
    finish_after_reboot(charger, rig, 37, HAPPY)


def test_a_fallback_before_rebooting_was_saved_ends_the_update_not_a_second_arming(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """§6.8 fallback: the power fails right after the bootloader was armed, before the job
    saved REBOOTING; the trial boot of B hangs before the agent runs, and the bootloader falls
    back to A. The agent on A judges that boot: InstallationFailed, B stays bad, and the same
    image is not armed (and tried) a second time."""
    steps = rig.base / "steps"
    agent = charger.start({CRASH_AT_ENV: "file arm_trial(B)", CRASH_LOG_ENV: str(steps)})
    assert charger.update(firmware, 38) == "Accepted"
    assert agent.wait(timeout=120) == -signal.SIGKILL
    assert Path(f"{steps}.last").read_text().split(" ", 1)[1] == "file arm_trial(B)\n"
    assert rig.power_cycle(agent) == "B"  # the one-shot trial boot ...
    assert rig.power_cycle(agent) == "A"  # ... hung before the agent ran: the fallback
    agent = charger.restart()
    charger.wait_status("InstallationFailed")
    agent.wait_log("update 38 finished: InstallationFailed")
    assert "power was lost while arming the trial" in agent.log
    assert "rebooting into" not in agent.log
    assert not rig.reboot_marker.exists()
    env = filemodel.load_env(rig.env)
    assert env["primary"] == "A" and env["trial"] is None and "B" in env["bad"]
    # At-least-once delivery may repeat a status cut short by the kill; nothing else may differ.
    seen = list(dict.fromkeys(charger.sequence()))
    assert seen == [(s, 38) for s in [*HAPPY[:4], "InstallationFailed"]]


def test_a_restart_in_rebooting_on_the_same_boot_delivers_install_rebooting_first(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.15 after a restart: the first run rebooted without the CSMS's answer to
    InstallRebooting (it timed out) and the machine did not go down. The restarted daemon,
    still in REBOOTING on the same boot, does not reboot until the CSMS answered the status
    still queued (here: re-sent, and refused for a while)."""
    refuse = {"on": True}
    charger.csms.answer_filter = lambda action, payload: (
        not (refuse["on"] and payload.get("status") == "InstallRebooting")
    )
    agent = charger.start(csms={"call_timeout": 1})
    assert charger.update(firmware, 39) == "Accepted"
    rig.wait_reboot_request(agent)
    agent.wait_log("did not confirm the status in time; rebooting anyway")
    agent.kill9()  # the reboot never happened: same boot id
    rig.reboot_marker.unlink()
    rig.config(csms={"call_timeout": 600})
    sent = len([s for s in charger.statuses() if s == "InstallRebooting"])
    agent = charger.restart()
    charger.csms.wait_for(
        lambda: len([s for s in charger.statuses() if s == "InstallRebooting"]) > sent,
        what="the restarted daemon sending InstallRebooting",
    )
    agent.wait_log("in phase rebooting: reboot again")
    assert not rig.reboot_marker.exists()  # the answer is outstanding: no reboot yet
    refuse["on"] = False
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=120) == 0
    agent = charger.restart()
    rig.wait_reboot_request(agent)
    charger.wait_acknowledged()
    finish_after_reboot_seen(charger, rig, 39)


def finish_after_reboot_seen(charger: Charger, rig: ChargerRig, request_id: int) -> None:
    """Power-cycle into B and finish; refused statuses are sent again, so repeats collapse."""
    assert charger.agent is not None
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(charger.agent) == "B"
    charger.restart()
    charger.wait_status("Installed")
    seen = list(dict.fromkeys(charger.sequence()))
    assert seen == [(s, request_id) for s in [*HAPPY, "Installed"]]


def test_a_power_cut_after_the_arming_is_recorded_ends_the_update_honestly(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """The one window no boot can judge: the job saved that the arming began, the bootloader
    was not written yet, the power went. The next boot cannot tell this from "armed, tried,
    fell back", so the update ends InstallationFailed (B stays bad) instead of arming an image
    that may have hung the charger once already."""
    steps = rig.base / "steps"
    agent = charger.start({CRASH_AT_ENV: "arming recorded", CRASH_LOG_ENV: str(steps)})
    assert charger.update(firmware, 40) == "Accepted"
    assert agent.wait(timeout=120) == -signal.SIGKILL
    assert Path(f"{steps}.last").read_text().split(" ", 1)[1] == "arming recorded\n"
    assert filemodel.load_env(rig.env)["trial"] is None  # the bootloader was not touched
    assert rig.power_cycle(agent) == "A"
    agent = charger.restart()
    charger.wait_status("InstallationFailed")
    agent.wait_log("update 40 finished: InstallationFailed")
    assert "rebooting into" not in agent.log and not rig.reboot_marker.exists()
    env = filemodel.load_env(rig.env)
    assert env["primary"] == "A" and env["trial"] is None and "B" in env["bad"]
