"""The rpi-tryboot backend: autoboot.txt rewrites, device tree reading, self_check problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from slot_rigs import AUTOBOOT, tryboot_rig

from agent.slots import load_backend
from agent.slots.base import BackendError

SWAPPED = "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"


@pytest.mark.parametrize("fat", [False, True], ids=["dir", "fat"])
def test_arm_writes_nothing_commit_swaps(tmp_path: Path, fat: bool) -> None:
    rig = tryboot_rig(tmp_path, fat)
    backend = rig.backend
    backend.mark_bad("B")
    backend.arm_trial("B")
    assert rig.env_text().startswith(AUTOBOOT)  # FAT untouched by arming
    assert backend.reboot_argument() == "0 tryboot"
    assert rig.power_on("0 tryboot") == "B"
    assert (rig.paths["dt"] / "tryboot").read_bytes() == b"\0\0\0\1"
    assert backend.reboot_argument() is None  # the trial is running
    backend.commit("B")
    assert (
        rig.env_text()
        == SWAPPED + '--- agent record\n{\n "version": 1,\n "armed": null,\n "bad": []\n}\n'
    )
    assert rig.power_on(None) == "B"
    obs = backend.observe()
    assert (obs.booted, obs.primary, obs.trial_active) == ("B", "B", False)
    assert obs.raw["dt.partition"] == "3" and obs.raw["autoboot.all.boot_partition"] == "3"


def test_other_lines_survive_a_rewrite(tmp_path: Path) -> None:
    rig = tryboot_rig(tmp_path, fat=False)
    path = tmp_path / "bootfs" / "autoboot.txt"
    path.write_text("# factory\n" + AUTOBOOT + "[none]\nfoo=1\n")
    rig.backend.mark_bad("B")
    rig.backend.arm_trial("B")
    assert rig.power_on("0 tryboot") == "B"
    rig.backend.commit("B")
    assert path.read_text() == SWAPPED + "[none]\nfoo=1\n"


def test_self_check_problems(tmp_path: Path) -> None:
    rig = tryboot_rig(tmp_path, fat=False)
    path = tmp_path / "bootfs" / "autoboot.txt"
    path.write_text("[all]\nboot_partition=2\n[tryboot]\nboot_partition=5\n")
    problems = rig.backend.self_check()
    assert "lacks [all] tryboot_a_b=1" in problems[0]
    assert "are not the slots' partitions" in problems[1]
    path.write_text(AUTOBOOT)
    (rig.paths["dt"] / "partition").unlink()
    assert "partition missing" in rig.backend.self_check()[0]
    (rig.paths["dt"] / "partition").write_bytes(b"\0\0\0\7")
    assert rig.backend.self_check() == ["rpi-tryboot: booted partition 7 is neither slot"]
    (rig.paths["dt"] / "partition").write_bytes(b"\2")
    with pytest.raises(BackendError, match="1 bytes, expected 4"):
        rig.backend.observe()
    path.unlink()
    assert "cannot read" in rig.backend.self_check()[0]


def test_fat_self_check_and_size_limit(tmp_path: Path) -> None:
    rig = tryboot_rig(tmp_path, fat=True)
    backend = rig.backend
    with pytest.raises(BackendError, match="512"):
        backend.write_autoboot(AUTOBOOT + "#" * 600 + "\n")  # type: ignore[attr-defined]
    options = {"fat_image": str(tmp_path / "nope.img"), "root": str(rig.paths["root"])}
    other = load_backend("rpi-tryboot", backend.slots, options, state_dir=tmp_path)
    assert other.self_check() == [f"rpi-tryboot: FAT image {tmp_path / 'nope.img'} does not exist"]


def test_partition_numbers(tmp_path: Path) -> None:
    slots = {"A": tmp_path / "slotA.img", "B": tmp_path / "slotB.img"}
    with pytest.raises(BackendError, match="partitions = "):
        load_backend("rpi-tryboot", slots, {})
    backend = load_backend("rpi-tryboot", slots, {"partitions": {"A": 2, "B": 3}})
    assert backend.partitions == {"A": "2", "B": "3"}  # type: ignore[attr-defined]
