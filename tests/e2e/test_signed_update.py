"""Use case L01 end to end: a real CSMS, a real firmware server, file slots, the agent process."""

from __future__ import annotations

import json
import subprocess
import sys

from ocpp.v16 import call

from agent.demo.rig import ChargerRig
from agent.demo.waiting import deadline
from agent.slots import filemodel
from tests.e2e.conftest import IMAGE, Charger

HAPPY = ["Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting"]


def test_happy_path_installs_the_new_slot_after_the_reboot(
    charger: Charger, rig: ChargerRig, firmware
):
    """L01.FR.01/.10/.15: every state announced with the requestId; Installed comes from the
    new slot after the reboot, with FirmwareUpdated."""
    agent = charger.start()
    charger.csms.wait_message("BootNotification")
    assert charger.update(firmware, 42) == "Accepted"
    reboot_argv = rig.wait_reboot_request(agent)
    assert reboot_argv == ""  # the file backend needs no reboot argument
    assert charger.csms.statuses() == [(s, 42) for s in HAPPY]
    env = filemodel.load_env(rig.env)
    assert env["primary"] == "A" and env["trial"]["slot"] == "B"  # armed, primary unchanged
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE

    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    charger.restart()
    charger.wait_status("Installed")
    assert charger.csms.statuses() == [(s, 42) for s in [*HAPPY, "Installed"]]
    charger.csms.wait_message("SecurityEventNotification")
    assert charger.events() == ["FirmwareUpdated"]
    boots = charger.csms.messages("BootNotification")
    assert boots[-1].payload["firmware_version"] == "2.0"
    assert filemodel.load_env(rig.env)["primary"] == "B"  # committed
    # The trial boot tells its steps (issue #12, stumble 4), in this order.
    assert charger.agent is not None
    # The last line follows the status into the outbox: the CSMS may have both first.
    charger.agent.wait_log("update 42 finished: Installed")
    log = charger.agent.log
    steps = [
        "update 42: booted slot B on trial",
        "update 42: the CSMS accepted the trial boot",
        "update 42: health checks passed",
        "update 42: committed slot B",
        "update 42 finished: Installed",
    ]
    positions = [log.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), positions
    assert rig.power_cycle(charger.agent) == "B"  # and it stays


def test_a_trial_that_falls_back_is_reported_as_installation_failed(
    charger: Charger, rig, firmware
):
    """The bootloader booted the old slot although a trial was armed: rollback detected."""
    agent = charger.start()
    assert charger.update(firmware, 7) == "Accepted"
    rig.wait_reboot_request(agent)
    agent.signal(15)
    agent.wait()
    env = filemodel.load_env(rig.env)
    env["trial"] = None  # the one-shot flag was lost (power cut while writing it, say)
    filemodel.durable.atomic_write_json(rig.env, env)
    assert rig.power_cycle(agent) == "A"
    charger.restart()
    charger.wait_status("InstallationFailed")
    assert charger.statuses(7)[-1] == "InstallationFailed"
    assert "Installed" not in charger.statuses()
    assert "B" in filemodel.load_env(rig.env)["bad"]


def test_firmware_status_trigger_follows_the_last_status(charger: Charger, rig, firmware):
    """L01.FR.28/.29: Idle after Installed; otherwise the last status with its requestId."""
    agent = charger.start()
    fail = charger.rig.request(firmware, 5)
    fail["firmware"]["signature"] = charger.rig.sign(b"something else")
    charger.csms.call(rig.charge_point_id, call.SignedUpdateFirmware(**fail))
    charger.wait_status("InvalidSignature")
    trigger = call.ExtendedTriggerMessage(requested_message="FirmwareStatusNotification")
    assert charger.csms.call(rig.charge_point_id, trigger).status == "Accepted"
    last = charger.csms.wait_message("SignedFirmwareStatusNotification", count=4)[-1]
    assert last.payload == {"status": "InvalidSignature", "request_id": 5}

    assert charger.update(firmware, 6) == "Accepted"
    rig.wait_reboot_request(agent)
    rig.power_cycle(agent)
    charger.restart()
    charger.wait_status("Installed")
    assert charger.csms.call(rig.charge_point_id, trigger).status == "Accepted"
    charger.csms.wait_for(
        lambda: (
            charger.csms.messages("SignedFirmwareStatusNotification")[-1].payload
            == {"status": "Idle"}
        ),
        what="Idle after Installed",
    )


def test_status_shows_the_job(charger: Charger, rig, firmware, fileserver):
    """`ocpp-fw-agent status --json` shows the phase and bytes done while the daemon runs."""
    fileserver.faults.stall_after = len(IMAGE) // 2
    agent = charger.start()
    charger.update(firmware, 9)
    assert fileserver.stalled.wait(deadline(10))

    def status() -> dict | None:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "-c", str(rig.base / "agent.toml"), "status", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        document = json.loads(done.stdout)
        job = document.get("job") or {}
        return document if job.get("bytes_done") else None

    document = charger.csms.wait_for(status, 10, "status with progress")
    assert document["running"] is True
    assert document["job"]["request_id"] == 9 and document["job"]["phase"] == "downloading"
    assert 0 < document["job"]["bytes_done"] <= len(IMAGE)
    fileserver.release.set()
    agent.stop()
