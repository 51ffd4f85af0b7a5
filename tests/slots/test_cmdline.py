"""The booted slot from the kernel command line: the slot parameter, root= in every form the
kernel takes, and the cross-check between them (issue #4; Mender's "No match between boot and
root partitions"). Real files, symlinks and device nodes; no mocks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.slots.cmdline import booted_from_cmdline, parse, root_slot


@pytest.fixture
def disks(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    """Slots A and B as files, and a /dev/disk look-alike whose by-* links point at them."""
    slots = {"A": tmp_path / "A.img", "B": tmp_path / "B.img"}
    for path in slots.values():
        path.write_bytes(b"")
    disk = tmp_path / "disk"
    links = {
        "by-partuuid": {"1c2d-02": "A", "1c2d-03": "B"},
        "by-uuid": {"f00d-a": "A", "f00d-b": "B"},
        "by-partlabel": {"rootfs_a": "A", "rootfs_b": "B"},
    }
    for folder, names in links.items():
        (disk / folder).mkdir(parents=True)
        for ident, slot in names.items():
            (disk / folder / ident).symlink_to(os.path.relpath(slots[slot], disk / folder))
    return slots, disk


@pytest.mark.parametrize(
    ("root", "slot"),
    [
        ("PARTUUID=1c2d-02", "A"),
        ("PARTUUID=1c2d-03", "B"),
        ("UUID=f00d-b", "B"),
        ("PARTLABEL=rootfs_a", "A"),
        ("PARTUUID=ffff-09", None),  # no such partition
        ("LABEL=rootfs", None),  # not a form we resolve
        ("/dev/does-not-exist", None),
    ],
)
def test_root_names_a_slot_through_dev_disk(disks, root: str, slot: str | None):
    slots, disk = disks
    assert root_slot(root, slots, disk) == slot


def test_root_as_a_path_through_a_symlink(disks, tmp_path: Path):
    slots, disk = disks
    (tmp_path / "root-alias").symlink_to(slots["B"])
    assert root_slot(str(tmp_path / "root-alias"), slots, disk) == "B"


def test_mender_reads_the_slot_from_root_alone(disks, tmp_path: Path):
    slots, disk = disks
    cmdline = tmp_path / "cmdline"
    cmdline.write_text('console=ttyS0 quiet="a b" root=PARTUUID=1c2d-03 rootwait\n')
    evidence = booted_from_cmdline(cmdline, "rauc.slot", slots, {"A": "A", "B": "B"}, disk)
    assert (evidence.booted, evidence.problem) == ("B", None)
    assert evidence.raw["cmdline.root_slot"] == "B"


def test_a_parameter_that_contradicts_root_is_a_problem_not_a_guess(disks, tmp_path: Path):
    slots, disk = disks
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("rauc.slot=A root=PARTUUID=1c2d-03\n")
    evidence = booted_from_cmdline(cmdline, "rauc.slot", slots, {"A": "A", "B": "B"}, disk)
    assert evidence.problem is not None
    assert "rauc.slot=A (slot A)" in evidence.problem and "is slot B" in evidence.problem


def test_the_last_occurrence_of_a_parameter_wins():
    assert parse("root=/dev/a root=/dev/b x")["root"] == "/dev/b"


@pytest.mark.skipif(
    os.geteuid() != 0, reason="mknod needs root: run the tests as root (make test does)"
)
def test_block_devices_match_by_major_minor(tmp_path: Path):
    """Two nodes for one device (the slot's configured /dev path and the kernel's root=
    alias) are the same slot; a different minor is not."""

    def node(name: str, minor: int) -> Path:
        path = tmp_path / name
        os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(7, minor))
        return path

    slots = {"A": node("slot-a", 40), "B": node("slot-b", 41)}
    assert root_slot(str(node("root-alias", 41)), slots, tmp_path) == "B"
    assert root_slot(str(node("other", 42)), slots, tmp_path) is None
