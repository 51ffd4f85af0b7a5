"""load_backend, describe, the file model's own rules and CLI, and the rauc backend's mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from slot_rigs import Rig, devices, rauc_rig

from agent.slots import BACKENDS, describe, filemodel, load_backend
from agent.slots.base import BackendConfigError, BackendError


def test_load_backend_errors(tmp_path: Path) -> None:
    slots = devices(tmp_path)
    assert set(BACKENDS) == {"file", "uboot", "grub", "rpi-tryboot", "rauc"}
    with pytest.raises(ValueError, match="unknown slots backend 'lilo'; known backends: file"):
        load_backend("lilo", slots, {})
    with pytest.raises(BackendConfigError, match="unknown option 'fw_env'; known options: "):
        load_backend("uboot", slots, {"fw_env": "/etc/fw_env.config"})
    with pytest.raises(ValueError, match="option 'scheme': expected one of rauc, mender"):
        load_backend("uboot", slots, {"scheme": "barebox"})
    with pytest.raises(ValueError, match="option 'trial_attempts': expected an integer"):
        load_backend("file", slots, {"trial_attempts": True})
    with pytest.raises(ValueError, match="expected exactly two slots"):
        load_backend("grub", {"A": slots["A"]}, {})


def test_describe_reports_errors_instead_of_raising(tmp_path: Path) -> None:
    backend = load_backend("file", devices(tmp_path), {"env": str(tmp_path / "none.json")})
    out = describe(backend)
    assert "does not exist" in out["error"] and "does not exist" in out["problems"][0]


def test_filemodel_rules(tmp_path: Path) -> None:
    env = tmp_path / "env.json"
    env.write_text(json.dumps(filemodel.new_env(["A", "B"], "A")))
    backend = load_backend("file", devices(tmp_path), {"env": str(env), "trial_attempts": 2})
    backend.mark_bad("B")
    backend.arm_trial("B")
    assert [filemodel.power_on(env) for _ in range(3)] == ["B", "B", "A"]
    assert backend.observe().health["B"] == "bad"  # attempts used up: given up on
    doc = json.loads(env.read_text())
    doc["bad"] = ["A", "B"]
    env.write_text(json.dumps(doc))
    assert filemodel.power_on(env) == ""  # nothing bootable: a bad slot is never booted


def test_filemodel_cli(tmp_path: Path) -> None:
    env = tmp_path / "env.json"
    run = [sys.executable, "-m", "agent.slots.filemodel"]
    subprocess.run([*run, "init", str(env)], check=True)
    out = subprocess.run([*run, "power-on", str(env)], capture_output=True, text=True, check=True)
    assert out.stdout == "booted: A\n"
    shown = json.loads(
        subprocess.run([*run, "show", str(env)], capture_output=True, text=True).stdout
    )
    assert shown["booted"] == {"slot": "A", "trial": False, "boots": 1}
    bad = subprocess.run(
        [*run, "power-on", str(tmp_path / "x.json")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_rauc_mapping_and_self_check(tmp_path: Path) -> None:
    rig = rauc_rig(tmp_path)
    try:
        rauc_mapping_and_self_check(tmp_path, rig)
    finally:
        rig.close()


def rauc_mapping_and_self_check(tmp_path: Path, rig: Rig) -> None:
    options = {
        "rauc_binary": str(rig.backend.opts["rauc_binary"]),
        "conf": str(rig.paths["conf"]),
        "state_file": str(tmp_path / "r.json"),
    }
    named = load_backend(
        "rauc",
        {"A": Path("/dev/x1"), "B": Path("/dev/x2")},
        {**options, "slot_names": {"A": "rootfs.0", "B": "rootfs.1"}},
    )
    assert named.observe().booted == "A"
    unmapped = load_backend("rauc", {"X": Path("/dev/x1"), "Y": Path("/dev/x2")}, options)
    assert "no RAUC slot for X" in unmapped.self_check()[0]
    missing = load_backend("rauc", rig.backend.slots, {"rauc_binary": "/nonexistent/rauc"})
    assert missing.self_check() == ["rauc: /nonexistent/rauc not found (apt-get install rauc)"]
    obs = rig.backend.observe()
    assert obs.raw["rootfs.1.boot_status"] == "good" and obs.raw["boot_primary"] == "rootfs.0"
    with pytest.raises(BackendError, match="refusing to commit B"):
        rig.backend.commit("B")
