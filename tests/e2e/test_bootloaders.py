"""L01 end to end on real bootloader environments: the agent process, the test CSMS, the real
`fw_setenv`/`fw_printenv` (U-Boot, RAUC and Mender schemes, redundant env) and `grub-editenv`,
and bootloader simulators that pick the slot at every power-on (tests/e2e/bootloader_rig.py).

Issue 4, "Tests, all on this machine": a good image is committed; an image whose health check
fails is rolled back; a trial boot that hangs falls back and is reported after the next boot;
loop devices as slots when running as root. Design references: §8.5 (health confirmation before
commit), §8.6 (rollback detection table), §8.7 (a) U-Boot and (c) GRUB backends, §8.8 items 1
and 6 (contract on real tools, block-device path with O_DIRECT read-back).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, Firmware
from agent.slots.base import SlotHealth
from tests.e2e.bootloader_rig import FACTORY_IMAGE, BootloaderRig
from tests.e2e.conftest import HAPPY, IMAGE, Charger, wait_until

ALL = ["uboot-rauc", "uboot-mender", "grub"]
EACH_BOOT = ["uboot-rauc", "grub"]  # Capabilities.confirm_each_boot: the script counts every boot
LOOP = ["uboot-rauc/loop", "uboot-mender/loop", "grub/loop"]


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path, csms: TestCsms) -> Iterator[BootloaderRig]:
    """`kind` or `kind/loop`; booted into slot A by the simulator from a fresh env."""
    kind, _, media = str(request.param).partition("/")
    made = BootloaderRig(tmp_path, csms.url, kind, media or "file")
    yield made
    made.close()


def names_slot(rig: BootloaderRig, slot: str) -> bool:
    """The fake /proc/cmdline the simulator wrote says the kernel came from `slot`."""
    words = rig.cmdline.read_text().split()
    root = f"root={rig.slots[slot]}" in words
    if rig.kind == "uboot-mender":
        return root  # Mender's boot script passes root= only
    return root and f"rauc.slot={rig.value(slot)}" in words


def install_until_reboot(
    charger: Charger, rig: BootloaderRig, firmware: Firmware, request_id: int
) -> AgentProcess:
    """Request → download into B → verify → read back → arm the trial → InstallRebooting."""
    agent = charger.start()
    charger.csms.wait_message("BootNotification")
    assert charger.update(firmware, request_id) == "Accepted"
    assert rig.wait_reboot_request(agent) == ""  # no reboot argument for U-Boot or GRUB
    assert charger.sequence() == [(s, request_id) for s in HAPPY]
    armed = rig.observe()  # §8.4: a trial of B is armed, the primary is unchanged
    assert (armed.booted, armed.primary, armed.health["B"]) == ("A", "A", SlotHealth.TRIAL)
    assert rig.read_slot("B", len(IMAGE)) == IMAGE
    assert rig.read_slot("A", len(FACTORY_IMAGE)) == FACTORY_IMAGE  # the running slot
    return agent


def commit_good_image(
    charger: Charger, rig: BootloaderRig, firmware: Firmware, request_id: int
) -> None:
    """Install, power on into the trial of B, and let the agent commit it."""
    agent = install_until_reboot(charger, rig, firmware, request_id)
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    assert names_slot(rig, "B")
    trial = rig.observe()
    assert trial.booted == "B" and trial.trial_active, trial.raw
    charger.restart()
    charger.wait_status("Installed")
    wait_until(lambda: rig.committed("B"), 10, "the commit of B in the env")
    charger.wait_acknowledged()  # a power cut before the CALLRESULT would re-send Installed


def settled(charger: Charger, boots: int) -> None:
    """The agent of the current boot connected and its outbox drained (nothing more queued)."""
    charger.csms.wait_message("BootNotification", count=boots)
    charger.wait_acknowledged()


# --- 1: a good image is committed --------------------------------------------------------------


@pytest.mark.parametrize("rig", ALL + LOOP, indirect=True)
def test_a_good_image_is_committed_after_its_trial_boot(
    charger: Charger, rig: BootloaderRig, firmware: Firmware
) -> None:
    """L01.FR.01/.10/.15 and §8.5-8.6: Downloading … InstallRebooting; the bootloader's next
    power-on boots B as a trial (the kernel command line names it); the agent checks its
    health and commits (B first/primary in the env, read back with the real tool); Installed
    and FirmwareUpdated with the original requestId; the next power-on boots B again.
    With loop devices (§8.8.6) the image goes to /dev/loopN, is read back with O_DIRECT, and
    the running slot, held exclusively like a mounted root, is never written."""
    commit_good_image(charger, rig, firmware, 42)
    charger.assert_coherent(42, [*HAPPY, "Installed"])
    charger.csms.wait_message("SecurityEventNotification")
    assert charger.events() == ["FirmwareUpdated"]
    assert charger.csms.messages("BootNotification")[-1].payload["firmware_version"] == "2.0"
    committed = rig.observe()
    assert (committed.primary, committed.trial_active) == ("B", False), committed.raw
    assert committed.health["B"] is SlotHealth.GOOD
    assert charger.job()["phase"] == "finished" and charger.job()["outcome"] == "Installed"
    if rig.media == "loop":
        assert charger.agent is not None
        assert f"slot {rig.slots['B']} read back with O_DIRECT" in charger.agent.log
        assert rig.read_slot("B", len(IMAGE)) == IMAGE
    assert rig.read_slot("A", len(FACTORY_IMAGE)) == FACTORY_IMAGE  # never written

    assert rig.power_cycle(charger.agent) == "B"  # and it stays
    assert names_slot(rig, "B")


# --- 2: a failed health check rolls back --------------------------------------------------------


@pytest.mark.parametrize("rig", ALL, indirect=True)
def test_an_image_whose_health_check_fails_is_rolled_back(
    charger: Charger, rig: BootloaderRig, firmware: Firmware
) -> None:
    """§8.5: the health command fails in the new slot only → abandon the trial, report
    InstallationFailed with the original requestId, ask for the reboot; the bootloader boots
    the old slot; B stays marked bad in the env; exactly one terminal status."""
    rig.break_slot("B")
    agent = install_until_reboot(charger, rig, firmware, 7)
    assert rig.power_cycle(agent) == "B"
    assert names_slot(rig, "B")
    agent = charger.restart()
    charger.wait_status("InstallationFailed")
    assert rig.wait_reboot_request(agent) == ""  # the way back
    charger.wait_acknowledged()
    assert rig.marked_bad("B"), rig.bootenv()
    assert rig.observe().primary == "A"
    job = charger.job()
    assert job["outcome"] == "InstallationFailed"
    assert "trial failed" in job["error"] and "health check" in job["error"], job

    assert rig.power_cycle(agent) == "A"
    assert names_slot(rig, "A")
    charger.restart()
    settled(charger, boots=3)
    charger.assert_coherent(7, [*HAPPY, "InstallationFailed"])
    assert "FirmwareUpdated" not in charger.events()
    assert rig.marked_bad("B"), rig.bootenv()
    assert rig.read_slot("A", len(FACTORY_IMAGE)) == FACTORY_IMAGE


# --- 3: a trial boot that hangs falls back ------------------------------------------------------


def hang_in_the_trial(charger: Charger, rig: BootloaderRig, firmware: Firmware, rid: int) -> None:
    """Arm the trial, power on into it, never start the agent (a hang), power on again: the
    bootloader's counters (U-Boot BOOT_B_LEFT / bootcount > bootlimit, GRUB B_TRY) fall back."""
    agent = install_until_reboot(charger, rig, firmware, rid)
    assert rig.power_cycle(agent) == "B"
    assert names_slot(rig, "B") and rig.observe().trial_active
    assert rig.power_cycle() == "A"  # the watchdog reset; no agent ran in the trial
    assert names_slot(rig, "A")


@pytest.mark.parametrize("rig", ALL, indirect=True)
def test_a_trial_boot_that_hangs_falls_back_and_is_reported(
    charger: Charger, rig: BootloaderRig, firmware: Firmware
) -> None:
    """§8.6 row "booted == source": the agent, started on the old slot after the fallback,
    marks B bad and reports InstallationFailed ("rolled back") with the original requestId,
    once."""
    hang_in_the_trial(charger, rig, firmware, 11)
    charger.restart()
    charger.wait_status("InstallationFailed")
    settled(charger, boots=2)
    charger.assert_coherent(11, [*HAPPY, "InstallationFailed"])
    assert "rolled back" in charger.job()["error"], charger.job()
    assert rig.marked_bad("B"), rig.bootenv()
    assert "FirmwareUpdated" not in charger.events()


# --- 4: bootloaders that count every boot -------------------------------------------------------


def keeps_booting(charger: Charger, rig: BootloaderRig, slot: str, boots: int) -> None:
    """`boots` power-ons with the agent running each time: every one boots `slot`, and the
    agent confirms each (commit(booted) outside a trial) before the next power-on."""
    for number in range(1, boots + 1):
        charger.wait_acknowledged()  # nothing in flight: at-least-once would repeat it
        assert rig.power_cycle(charger.agent) == slot, f"power-on {number}: {rig.bootenv()}"
        assert not rig.committed(slot)  # the boot script counted this boot
        charger.restart()
        wait_until(lambda: rig.committed(slot), 10, f"the agent to confirm boot {number} of {slot}")


@pytest.mark.parametrize("rig", EACH_BOOT, indirect=True)
def test_a_committed_slot_is_confirmed_at_every_boot(
    charger: Charger, rig: BootloaderRig, firmware: Firmware
) -> None:
    """`Capabilities.confirm_each_boot` (RAUC's U-Boot script decrements BOOT_x_LEFT at every
    boot; RAUC's grub.cfg sets x_TRY at every boot): after the commit, several power-ons with
    the agent running never fall back to the old slot on the bootloader's own."""
    assert rig.backend.capabilities().confirm_each_boot
    commit_good_image(charger, rig, firmware, 21)
    keeps_booting(charger, rig, "B", boots=4)  # > BOOT_B_LEFT after the commit (3)
    assert rig.power_cycle(charger.agent) == "B"
    charger.assert_coherent(21, [*HAPPY, "Installed"])


@pytest.mark.parametrize("rig", EACH_BOOT, indirect=True)
def test_the_old_slot_is_confirmed_at_every_boot_after_a_rollback(
    charger: Charger, rig: BootloaderRig, firmware: Firmware
) -> None:
    """After a fallback (§8.6) the old slot is the only bootable one, and its boots count too:
    the agent confirms them, so the device keeps booting a verified slot (GRUB would otherwise
    find every slot tried and boot menu entry 0, neither slot)."""
    hang_in_the_trial(charger, rig, firmware, 31)
    charger.restart()
    charger.wait_status("InstallationFailed")
    wait_until(lambda: rig.committed("A"), 10, "the agent to confirm the fallback boot of A")
    keeps_booting(charger, rig, "A", boots=4)
    charger.assert_coherent(31, [*HAPPY, "InstallationFailed"])
    assert rig.marked_bad("B"), rig.bootenv()


# --- 5: loop devices: a slot in use is never written ---------------------------------------------


@pytest.mark.parametrize("rig", ["uboot-rauc/loop"], indirect=True)
def test_a_slot_device_in_use_is_never_written(
    charger: Charger, rig: BootloaderRig, firmware: Firmware
) -> None:
    """Issue 4 "a slot that is the running root is never written": the target device is held
    exclusively (as the kernel holds a mounted root: a miswired command line, say), so the
    exclusive open fails; the agent reports DownloadFailed and no byte reaches the device."""
    before = rig.read_slot("B", len(IMAGE))
    held = os.open(rig.slots["B"], os.O_RDONLY | os.O_EXCL)
    try:
        charger.start()
        charger.csms.wait_message("BootNotification")
        assert charger.update(firmware, 51, retries=0) == "Accepted"
        charger.wait_status("DownloadFailed")
    finally:
        os.close(held)
    charger.assert_coherent(51, ["Downloading", "DownloadFailed"])
    assert "in use" in charger.job()["error"], charger.job()
    assert rig.read_slot("B", len(IMAGE)) == before
    assert rig.read_slot("A", len(FACTORY_IMAGE)) == FACTORY_IMAGE
    assert rig.observe().primary == "A"


@pytest.mark.parametrize("rig", EACH_BOOT, indirect=True)
def test_a_daemon_restart_before_the_reboot_keeps_the_trial_armed(
    charger: Charger, rig: BootloaderRig, firmware: Firmware
) -> None:
    """The daemon restarts in the same boot after arming (systemd restart, package upgrade, a
    reboot command that failed): the per-boot confirm of the running slot must not undo the
    armed trial (committing A puts A first again); the job asks for the reboot again and the
    next power-on still boots B as a trial (job.py RESUME table, phase `rebooting`)."""
    agent = install_until_reboot(charger, rig, firmware, 61)
    agent.stop()
    rig.reboot_marker.unlink()
    agent = charger.restart()
    assert rig.wait_reboot_request(agent) == ""
    agent.wait_log("not confirming slot A")  # the confirm thread has decided
    assert rig.observe().health["B"] is SlotHealth.TRIAL, rig.bootenv()
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B", rig.bootenv()
    charger.restart()
    charger.wait_status("Installed")
    charger.assert_coherent(61, [*HAPPY, "Installed"])
