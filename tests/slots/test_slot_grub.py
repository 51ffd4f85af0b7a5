"""The grub backend on the real grub-editenv: whole-env expectations and self_check problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from slot_rigs import grub_rig, script

from agent.slots import load_backend
from agent.slots.base import BackendError

FLOW = [
    ("mark_bad", "ORDER=A B\nA_OK=1\nB_OK=0\nA_TRY=0\nB_TRY=0\nab_trial=\n"),
    ("arm_trial", "ORDER=B A\nA_OK=1\nB_OK=1\nA_TRY=0\nB_TRY=0\nab_trial=B\n"),
    ("power_on", "ORDER=B A\nA_OK=1\nB_OK=1\nA_TRY=0\nB_TRY=1\nab_trial=B\n"),
    ("commit", "ORDER=B A\nA_OK=1\nB_OK=1\nA_TRY=0\nB_TRY=0\nab_trial=\n"),
    ("power_on", "ORDER=B A\nA_OK=1\nB_OK=1\nA_TRY=0\nB_TRY=1\nab_trial=\n"),
]


def test_whole_env_after_each_step(tmp_path: Path) -> None:
    rig = grub_rig(tmp_path)
    for step, expected in FLOW:
        if step == "power_on":
            assert rig.power_on(None) == "B"
        else:
            getattr(rig.backend, step)("B")
        assert sorted(rig.env_text().splitlines()) == sorted(expected.splitlines()), step
    obs = rig.backend.observe()  # a routine boot of B not confirmed yet: grub would pick A next
    assert (obs.booted, obs.primary, obs.trial_active) == ("B", "A", False)
    assert rig.backend.capabilities().confirm_each_boot


def test_one_call_per_change(tmp_path: Path) -> None:
    rig = grub_rig(tmp_path)
    log = tmp_path / "calls"
    wrapper = script(tmp_path / "bin" / "ge", f'echo "$*" >> "{log}"\nexec grub-editenv "$@"\n')
    options = {
        "grubenv": str(rig.paths["grubenv"]),
        "cmdline": str(rig.paths["cmdline"]),
        "grub_editenv": str(wrapper),
    }
    backend = load_backend("grub", rig.backend.slots, options)
    backend.mark_bad("B")
    backend.arm_trial("B")
    backend.arm_trial("B")
    sets = [line for line in log.read_text().splitlines() if " set " in f" {line} "]
    assert len(sets) == 2


def test_missing_env_file_is_reported_and_never_created(tmp_path: Path) -> None:
    rig = grub_rig(tmp_path)
    grubenv = rig.paths["grubenv"]
    grubenv.unlink()
    assert rig.backend.self_check() == [f"grub: cannot read {grubenv}: No such file or directory"]
    with pytest.raises(BackendError, match="does not exist"):
        rig.backend.mark_bad("B")
    assert not grubenv.exists()


def test_self_check_problems(tmp_path: Path) -> None:
    rig = grub_rig(tmp_path)
    grubenv = rig.paths["grubenv"]
    missing = load_backend("grub", rig.backend.slots, {"grub_editenv": "/nonexistent/ge"})
    assert missing.self_check() == ["grub: /nonexistent/ge not found"]
    grubenv.write_bytes(b"# GRUB Environment Block\n".ljust(1024, b"#"))  # empty, as `create`
    assert rig.backend.self_check() == [
        "grub: ORDER not set (grub.cfg's default makes it unbootable)",
        "grub: A_OK not set (grub.cfg's default makes it unbootable)",
        "grub: B_OK not set (grub.cfg's default makes it unbootable)",
    ]
    grubenv.write_bytes(b"junk")
    assert "is not a 1024-byte GRUB environment block" in rig.backend.self_check()[0]
