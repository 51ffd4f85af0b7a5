"""The uboot backend on real libubootenv tools: whole-env expectations, one write per change,
power cut on the redundant env, and every self_check problem."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import slot_simulators as sim
from slot_rigs import ENV_SIZE, Rig, make_env_images, script, uboot_rig

from agent.slots import load_backend
from agent.slots.base import BackendError

RAUC_FLOW = [
    ("mark_bad", "BOOT_A_LEFT=3\nBOOT_B_LEFT=0\nBOOT_ORDER=A\nbootcmd=run rauc_boot\n"),
    (
        "arm_trial",
        "BOOT_A_LEFT=3\nBOOT_B_LEFT=1\nBOOT_ORDER=B A\nab_trial=B\nbootcmd=run rauc_boot\n",
    ),
    (
        "power_on",
        "BOOT_A_LEFT=3\nBOOT_B_LEFT=0\nBOOT_ORDER=B A\nab_trial=B\nbootcmd=run rauc_boot\n",
    ),
    ("commit", "BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\nbootcmd=run rauc_boot\n"),
]
MENDER_TAIL = "altbootcmd=run mender_altbootcmd\nbootcmd=run mender_setup\nbootlimit=1\n"
MENDER_FLOW = [
    ("mark_bad", "ab_bad=B\n" + MENDER_TAIL + "bootcount=0\nmender_boot_part=2\n"
     "mender_boot_part_hex=2\nupgrade_available=0\n"),
    ("arm_trial", MENDER_TAIL + "bootcount=0\nmender_boot_part=3\nmender_boot_part_hex=3\n"
     "upgrade_available=1\n"),
    ("power_on", MENDER_TAIL + "bootcount=1\nmender_boot_part=3\nmender_boot_part_hex=3\n"
     "upgrade_available=1\n"),
    ("commit", MENDER_TAIL + "bootcount=0\nmender_boot_part=3\nmender_boot_part_hex=3\n"
     "upgrade_available=0\n"),
]  # fmt: skip


def sorted_env(text: str) -> str:
    return "".join(sorted(text.splitlines(keepends=True)))


@pytest.mark.parametrize(("scheme", "flow"), [("rauc", RAUC_FLOW), ("mender", MENDER_FLOW)])
def test_whole_env_after_each_step(
    tmp_path: Path, scheme: str, flow: list[tuple[str, str]]
) -> None:
    rig = uboot_rig(tmp_path, scheme, redundant=True)
    image = sim.UBootEnvImage([tmp_path / "uboot-env1.img", tmp_path / "uboot-env2.img"], ENV_SIZE)
    for step, expected in flow:
        if step == "power_on":
            assert rig.power_on(rig.backend.reboot_argument()) == "B"
        else:
            getattr(rig.backend, step)("B")
        assert sorted_env(rig.env_text()) == sorted_env(expected), step
        # what U-Boot itself would read from the images agrees with fw_printenv
        assert sorted_env("".join(f"{k}={v}\n" for k, v in image.load().items())) == sorted_env(
            expected
        )


def logging_fw_setenv(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "fw_setenv.log"
    wrapper = script(
        tmp_path / "bin" / "fw_setenv-log",
        f'echo "--- $*" >> "{log}"\ntee -a "{log}" | fw_setenv "$@"\n',
    )
    return wrapper, log


def test_one_script_per_change_and_none_when_unchanged(tmp_path: Path) -> None:
    rig = uboot_rig(tmp_path, "rauc", redundant=True)
    wrapper, log = logging_fw_setenv(tmp_path)
    options = {
        "fw_env_config": str(rig.paths["config"]),
        "cmdline": str(rig.paths["cmdline"]),
        "fw_setenv": str(wrapper),
    }
    backend = load_backend("uboot", rig.backend.slots, options)
    backend.mark_bad("B")
    backend.arm_trial("B")
    backend.arm_trial("B")  # unchanged: no write at all
    calls = log.read_text().split("--- ")[1:]
    assert len(calls) == 2
    for call in calls:
        args, _, body = call.partition("\n")
        assert args.endswith("-s -")
        assert all("=" in line for line in body.splitlines())  # never `name value` lines


def newest_copy(copies: list[Path]) -> Path:
    flags = [path.read_bytes()[4] for path in copies]
    return copies[0] if (flags[0] - flags[1]) % 256 == 1 else copies[1]


def test_power_cut_during_arm_leaves_the_previous_env(tmp_path: Path) -> None:
    """Mender's test_redundant_uboot_env: zero the copy just written, as a torn write would."""
    rig = uboot_rig(tmp_path, "rauc", redundant=True)
    rig.backend.mark_bad("B")
    before = rig.env_text()
    rig.backend.arm_trial("B")
    copies = [tmp_path / "uboot-env1.img", tmp_path / "uboot-env2.img"]
    torn = newest_copy(copies)
    torn.write_bytes(torn.read_bytes()[:100] + b"\0" * (ENV_SIZE - 100))
    assert rig.env_text() == before
    assert rig.backend.observe().health["B"] == "bad"
    assert rig.power_on(None) == "A"  # U-Boot reads the same surviving copy


def check(rig: Rig, **options: object) -> list[str]:
    base = {"fw_env_config": str(rig.paths["config"]), "cmdline": str(rig.paths["cmdline"])}
    return load_backend("uboot", rig.backend.slots, {**base, **options}).self_check()


def test_self_check_missing_tool_and_config(tmp_path: Path) -> None:
    rig = uboot_rig(tmp_path, "rauc", redundant=True)
    assert check(rig) == []
    assert check(rig, fw_setenv="/nonexistent/fw_setenv") == [
        "uboot: /nonexistent/fw_setenv not found (apt-get install libubootenv-tool)"
    ]
    problems = check(rig, fw_env_config=str(tmp_path / "missing.config"))
    assert len(problems) == 1 and "cannot read" in problems[0]


def test_self_check_redundancy(tmp_path: Path) -> None:
    rig = uboot_rig(tmp_path, "rauc", redundant=False)
    assert check(rig, require_redundant=False) == []
    assert "redundant env" in check(rig)[0]
    (tmp_path / "r").mkdir()
    rig2 = uboot_rig(tmp_path / "r", "rauc", redundant=True)
    (tmp_path / "r" / "uboot-env2.img").unlink()
    assert any("env copy 2" in p and "does not exist" in p for p in check(rig2))


def test_self_check_uninitialised_and_default_env(tmp_path: Path) -> None:
    rig = uboot_rig(tmp_path, "rauc", redundant=False)
    image = tmp_path / "uboot-env1.img"
    image.write_bytes(b"\0" * ENV_SIZE)  # never initialised
    problems = check(rig, require_redundant=False)
    assert len(problems) == 1 and "exited 243" in problems[0]
    with pytest.raises(BackendError, match="exited 243"):
        rig.backend.observe()
    defaults = tmp_path / "defaults.txt"
    defaults.write_text("BOOT_ORDER=A B\n")
    printenv = script(
        tmp_path / "bin" / "fw_printenv-def", f'exec fw_printenv -f "{defaults}" "$@"\n'
    )
    problems = check(rig, require_redundant=False, fw_printenv=str(printenv))
    assert any("default environment" in p for p in problems)


def test_self_check_variables_canary_and_cmdline(tmp_path: Path) -> None:
    rig = uboot_rig(tmp_path, "rauc", redundant=True)
    assert check(rig, canary="boot_canary") == ["uboot: canary boot_canary='', expected 1"]
    subprocess.run(
        ["fw_setenv", "-c", str(rig.paths["config"]), "BOOT_ORDER"], check=True
    )  # deleted
    assert any("BOOT_ORDER not set" in p for p in check(rig))
    rig.paths["cmdline"].write_text(f"root={rig.backend.slots['B']} rauc.slot=A\n")
    assert any("rauc.slot=A (slot A) but root=" in p for p in check(rig))
    rig.paths["cmdline"].write_text("root=/dev/nfs\n")
    assert any("booted slot unknown" in p for p in check(rig))


def test_self_check_mender_variables(tmp_path: Path) -> None:
    config, _ = make_env_images(tmp_path, "mender_boot_part=7\n", redundant=True)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("root=/dev/mmcblk0p2\n")
    slots = {"A": Path("/dev/mmcblk0p2"), "B": Path("/dev/mmcblk0p3")}
    options = {"fw_env_config": str(config), "scheme": "mender", "cmdline": str(cmdline)}
    problems = load_backend("uboot", slots, options).self_check()
    assert any("bootlimit not set" in p for p in problems)
    assert any("upgrade_available not set" in p for p in problems)
    assert any("mender_boot_part='7' is neither slot" in p for p in problems)


def test_mender_slot_values_option_and_rollback_evidence(tmp_path: Path) -> None:
    rig = uboot_rig(tmp_path, "mender", redundant=True)
    rig.backend.mark_bad("B")
    rig.backend.arm_trial("B")
    assert rig.power_on(rig.backend.reboot_argument()) == "B"
    assert rig.backend.observe().attempts_left == 0
    assert rig.power_on(None) == "A"  # bootcount 2 > bootlimit 1: altbootcmd
    obs = rig.backend.observe()
    assert (obs.booted, obs.primary, obs.health["B"]) == ("A", "A", "bad")
    assert obs.raw["bootcount"] == "2" and obs.raw["upgrade_available"] == "0"
    with pytest.raises(ValueError, match="slot_values"):
        load_backend("uboot", rig.backend.slots, {"slot_values": {"A": "2"}})
