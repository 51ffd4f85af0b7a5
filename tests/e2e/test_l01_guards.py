"""The guards around an install: read-back, crash-loop breaker, a backend that cannot work."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.demo.waiting import deadline
from agent.slots import filemodel
from tests.e2e.conftest import GATED, HAPPY, IMAGE, Charger, wait_until
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


def image_check(rig: ChargerRig, body: str) -> list[str]:
    """An `[firmware] image_check` script that records its OCPP_FW_* environment first."""
    script = rig.base / "image-check"
    script.write_text(
        f"#!/bin/sh\nenv | grep '^OCPP_FW_' | sort > {rig.base / 'image-check.env'}\n{body}\n"
    )
    script.chmod(0o755)
    return [str(script)]


def test_the_image_check_refuses_an_image_not_meant_for_this_charger(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """`[firmware] image_check` (peers §7 item 10: compatibility, anti-downgrade): run on the
    written slot when the installation starts; its refusal is InstallVerificationFailed after
    Installing (TC_L_08_CS), with its reason, and nothing is armed. It is told the slot, the
    image's size and digest, the running version and the requestId, and never the URL."""
    check = image_check(rig, 'echo "image is for AB-Charger-2, this is AB-Charger" >&2; exit 3')
    agent = charger.start(firmware={"image_check": check})
    assert charger.update(firmware, 63) == "Accepted"
    charger.wait_status("InstallVerificationFailed")
    charger.assert_coherent(63, [*HAPPY[:4], "InstallVerificationFailed"])
    error = charger.job()["error"]
    assert "image check" in error and "exited 3" in error and "AB-Charger-2" in error, error
    told = dict(
        line.split("=", 1) for line in (rig.base / "image-check.env").read_text().splitlines()
    )
    assert told == {
        "OCPP_FW_SLOT": str(rig.slots["B"]),
        "OCPP_FW_SLOT_NAME": "B",
        "OCPP_FW_IMAGE_SIZE": str(len(IMAGE)),
        "OCPP_FW_IMAGE_SHA256": hashlib.sha256(IMAGE).hexdigest(),
        "OCPP_FW_RUNNING_VERSION": "1.0",
        "OCPP_FW_REQUEST_ID": "63",
    }
    env = filemodel.load_env(rig.env)
    assert env["trial"] is None and env["primary"] == "A"
    # The line may follow the status the CSMS already has: wait for it, do not expect it.
    agent.wait_log("update 63 finished")
    assert not rig.reboot_marker.exists()


def test_an_image_check_that_accepts_lets_the_install_go_on(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """The check reads the slot itself (here: its digest) and exits 0: the install continues."""
    check = image_check(
        rig,
        'head -c "$OCPP_FW_IMAGE_SIZE" "$OCPP_FW_SLOT" | sha256sum '
        '| grep -q "^$OCPP_FW_IMAGE_SHA256 "',
    )
    agent = charger.start(firmware={"image_check": check})
    assert charger.update(firmware, 64) == "Accepted"
    rig.wait_reboot_request(agent)
    charger.assert_coherent(64, HAPPY)
    assert (rig.base / "image-check.env").exists()


def test_a_daemon_that_keeps_dying_gives_the_update_up(
    charger: Charger, rig: ChargerRig, firmware: Firmware, fileserver: FirmwareHttpServer
):
    """Crash-loop breaker (issue #4, Mender's state-store counter): every restart that
    continues the update is counted (saved); at `max_transitions` it is given up cleanly, once.
    Planned steps (download attempts, phases) are not restarts (issue #9)."""
    fileserver.faults.stall_after = 1000  # the download never finishes
    agent = charger.start(health={"max_transitions": 4})
    assert charger.update(firmware, 62) == "Accepted"
    assert fileserver.stalled.wait(deadline(60))
    charger.wait_acknowledged()  # else Downloading, unanswered when killed, is sent again
    for restart in range(1, 5):
        agent.kill9()
        agent = charger.restart()
        agent.wait_log(f"update 62: restart {restart} (given up at 4)", 60)
    charger.wait_status("DownloadFailed")
    assert charger.statuses(62) == ["Downloading", "DownloadFailed"]
    agent.wait_log("gave up after")
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
    problems = charger.csms.wait_for(lambda: published(rig).get("problems"), 60, "problems")
    assert any("bootenv.json" in problem for problem in problems)


def published(rig: ChargerRig) -> dict:
    """The daemon's published status (what `ocpp-fw-agent status` shows)."""
    path = rig.state / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def small_state_dir(rig: ChargerRig) -> Iterator[Path]:
    """The charger's state dir on a 256 KiB tmpfs (as root), its files carried over."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: run the tests as root (make test does)")
    kept = {path.name: path.read_bytes() for path in rig.state.iterdir() if path.is_file()}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(rig.state)], check=True)
    try:
        for name, data in kept.items():
            (rig.state / name).write_bytes(data)
        yield rig.state
    finally:
        subprocess.run(["umount", "-l", str(rig.state)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem under `directory` to the last byte (again, if something was freed
    since); returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def kept_full(directory: Path) -> Iterator[Path]:
    """Another program that keeps the filesystem full: whatever the daemon frees (a failed
    write's temp file, the job's previous generation replaced by a rename) is taken again at
    once, so no write of the daemon's can land in a page that happened to be free. Leaving
    the block stops it and deletes the filler: space returns."""
    stop = threading.Event()
    filler = fill(directory)

    def keep() -> None:
        while not stop.wait(0.01):
            fill(directory)

    thread = threading.Thread(target=keep, name="filler", daemon=True)
    thread.start()
    try:
        yield filler
    finally:
        stop.set()
        thread.join()
        filler.unlink()


def test_a_full_state_dir_pauses_the_update_until_space_returns(
    charger: Charger,
    rig: ChargerRig,
    firmware: Firmware,
    fileserver: FirmwareHttpServer,
    small_state_dir: Path,
):
    """The state dir fills up mid-download (logs, another program): the daemon keeps running,
    the update pauses with a clear error instead of dying in its thread, a daemon (re)started
    on the full disk runs too (its status file just goes stale), and the update goes on from
    its durable state, with no status lost or repeated, once space returns."""
    fileserver.faults.stall_after = 300_000
    agent = charger.start()
    assert charger.update(firmware, 65) == "Accepted"
    assert fileserver.stalled.wait(deadline(60))
    charger.wait_acknowledged()
    with kept_full(small_state_dir):
        fileserver.faults.stall_after = None
        fileserver.release.set()
        agent.wait_log("update 65 paused in phase")
        assert "No space left on device" in agent.log
        assert agent.proc is not None and agent.proc.poll() is None  # the daemon lives on
        agent.kill9()
        # One log file for every run: count what the first daemon wrote, then wait for the
        # restarted one to say both things, in whichever order its two threads get there.
        paused_before = agent.log.count("update 65 paused in phase")
        stale_before = agent.log.count("cannot publish the status")
        agent = charger.restart()  # as systemd would, on the full disk
        wait_until(
            lambda: agent.log.count("update 65 paused in phase") > paused_before,
            60,
            "the restarted daemon's update paused",
        )
        wait_until(
            lambda: agent.log.count("cannot publish the status") > stale_before,
            60,
            "the restarted daemon's status publication refused",
        )
        assert agent.proc is not None and agent.proc.poll() is None
        assert charger.statuses(65) == ["Downloading"]
    rig.wait_reboot_request(agent, timeout=120)
    charger.wait_acknowledged(timeout=60)
    charger.assert_coherent(65, HAPPY)
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE


def test_a_request_on_a_full_state_dir_is_rejected_and_says_why(
    charger: Charger, rig: ChargerRig, firmware: Firmware, small_state_dir: Path
):
    """The job cannot be made durable, so it is not accepted: Rejected (not a CALLERROR), the
    reason in the log; once there is space, the next request is accepted."""
    agent = charger.start()
    charger.csms.wait_message("BootNotification")
    filler = fill(small_state_dir)
    assert charger.update(firmware, 66) == "Rejected"
    agent.wait_log("refusing request 66: ")
    assert "No space left on device" in agent.log
    filler.unlink()
    assert charger.update(firmware, 67) == "Accepted"
    charger.wait_status("Downloaded")


def test_a_request_that_cannot_be_saved_leaves_the_running_update_going(
    charger: Charger, rig: ChargerRig, firmware: Firmware, small_state_dir: Path
):
    """A new request would cancel the update held at the gate (L01.FR.26), but it cannot be
    saved (the state dir's filesystem went read-only): it is Rejected, and the running update
    goes on and installs once the gate opens."""
    agent = charger.start(firmware=gate(rig))
    assert charger.update(firmware, 68) == "Accepted"
    charger.wait_status("InstallScheduled")
    charger.wait_acknowledged()
    remount = ["mount", "-o", "remount,{}", str(small_state_dir)]
    subprocess.run([w.format("ro") for w in remount], check=True)
    try:
        assert charger.update(firmware, 69) == "Rejected"
        agent.wait_log("refusing request 69: ")
        assert "read-only file system" in agent.log.lower()  # the save, or the self-check
    finally:
        subprocess.run([w.format("rw") for w in remount], check=True)
    (rig.base / "gate-open").touch()
    rig.wait_reboot_request(agent)
    charger.assert_coherent(68, GATED)
