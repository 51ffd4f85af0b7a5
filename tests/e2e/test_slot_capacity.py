"""A file slot has a size, and an image that would pass it fails before writing past it, as on a
block device (issue #11, hole 4): a huge Content-Length is refused before the first byte (the
boot environment untouched), and a body without a length stops at the slot's end. The slot
file never grows and the state dir stays small, whatever the server sends."""

from __future__ import annotations

import os

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig
from agent.slots import filemodel
from tests.e2e.conftest import Charger, publish

SLOT = 1 << 20  # a 1 MiB slot B
IMAGE = bytes(range(256)) * (3 * SLOT // 256)  # 3 MiB


def state_bytes(rig: ChargerRig) -> int:
    return sum(p.stat().st_size for p in rig.state.rglob("*") if p.is_file())


def test_an_image_announced_larger_than_the_slot_fails_before_its_first_byte(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer
):
    os.truncate(rig.slots["B"], SLOT)
    firmware = publish(rig, fileserver, "/fw/big.bin", IMAGE)
    charger.start(firmware={"default_retries": 0})
    charger.csms.wait_message("BootNotification")
    env = rig.env.read_bytes()
    assert charger.update(firmware, 90) == "Accepted"
    charger.wait_status("DownloadFailed")
    charger.agent.wait_log("does not fit slot")  # type: ignore[union-attr]
    assert rig.slots["B"].stat().st_size == SLOT
    assert rig.slots["B"].read_bytes() == bytes(SLOT)  # not a byte written
    assert rig.env.read_bytes() == env  # nothing marked: no byte was about to be written


def test_a_body_without_a_length_stops_at_the_slot_end(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer
):
    os.truncate(rig.slots["B"], SLOT)
    fileserver.faults.no_length = True
    firmware = publish(rig, fileserver, "/fw/big.bin", IMAGE)
    charger.start(firmware={"default_retries": 0})
    assert charger.update(firmware, 91) == "Accepted"
    charger.wait_status("DownloadFailed")
    assert rig.slots["B"].stat().st_size == SLOT  # never grown
    assert rig.slots["B"].read_bytes() == IMAGE[:SLOT]  # filled up to its end, not past it
    assert state_bytes(rig) < 256 * 1024  # nothing spilled into the state dir
    assert "B" in filemodel.load_env(rig.env)["bad"]  # half-written: never bootable
