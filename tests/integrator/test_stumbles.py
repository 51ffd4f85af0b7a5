"""Issue 12: each stumble an integrator hit on a real board, with the exact line they now see.

Real parts: the CLI as a process, libubootenv's fw_printenv/fw_setenv on env images, a real
read-only bind mount (in a private mount namespace, as root) standing in for the unit's
ProtectSystem=strict, certificates from the demo PKI. The drop-in under the real unit is
tests/system/test_package.py's job (systemd is not PID 1 here).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.demo import pki
from agent.demo.rig import SOURCE_ROOT, ChargerRig

sys.path.insert(0, str(SOURCE_ROOT / "tests" / "slots"))
from slot_rigs import uboot_rig

GUIDE = "see docs/integrator-guide.md#manufacturer-pki"


def cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "agent", *args],
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def uboot_charger(tmp_path: Path) -> tuple[ChargerRig, Path, list[Path]]:
    """A charger on U-Boot (RAUC scheme, redundant env): the rig, its config, the env copies."""
    (tmp_path / "board").mkdir()
    board = uboot_rig(tmp_path / "board", "rauc", redundant=True)
    rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
    slots = {"backend": "uboot", "devices": {k: str(v) for k, v in board.backend.slots.items()},
             "options": {"fw_env_config": str(board.paths["config"]),
                         "cmdline": str(board.paths["cmdline"])}}  # fmt: skip
    lines = board.paths["config"].read_text().splitlines()
    copies = [Path(line.split()[0]) for line in lines if line.strip() and line[0] != "#"]
    return rig, rig.config(slots=slots), copies


def read_only(*paths: Path) -> tuple[str, ...]:
    """Run the command in a private mount namespace where `paths` are read-only, as
    ProtectSystem=strict leaves everything not granted by ReadWritePaths=."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount")
    script = ""
    for path in map(shlex.quote, map(str, paths)):
        script += f"mount --bind {path} {path} && mount -o remount,bind,ro {path} && "
    script += 'exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")


@pytest.mark.root
def test_a_boot_env_the_sandbox_keeps_read_only_names_read_write_paths(tmp_path: Path) -> None:
    """Stumble 1: outside the sandbox `slots` sees no problem, and inside it the first update
    failed with `fw_setenv failed (247)`. Now the deep check, run where the env is read-only,
    names the drop-in line (fails before this change: there was no deep check, and `slots`
    read the env without trying to write it)."""
    _rig, config, copies = uboot_charger(tmp_path)
    assert cli("-c", str(config), "slots").returncode == 0
    assert cli("-c", str(config), "check-config", "--deep").returncode == 0

    denied = read_only(*copies)
    # What the daemon met: the tool itself fails there.
    board_config = json.loads(cli("-c", str(config), "check-config").stdout)["slots"]["options"]
    setenv = subprocess.run(
        [*denied, "fw_setenv", "-c", board_config["fw_env_config"], "-s", "-"],
        input="ab_probe=1\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert setenv.returncode != 0

    done = cli("-c", str(config), "check-config", "--deep", prefix=denied)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == "".join(
        f"problem: boot environment: {env} is not writable here (read-only file system); grant "
        f"it in the unit's drop-in (systemctl edit ocpp-fw-agent): ReadWritePaths={env}\n"
        for env in copies
    )
    assert done.stdout.endswith("2 problem(s)\n")
    # `slots` runs the same check, so it sees it too when run where the daemon runs.
    slots = cli("-c", str(config), "slots", prefix=denied)
    assert slots.returncode == 1
    assert f"problem:   boot environment: {copies[1]} is not writable here" in slots.stdout


@pytest.mark.root
def test_a_slot_the_sandbox_keeps_read_only_names_read_write_paths(tmp_path: Path) -> None:
    """File slots under ProtectSystem=strict (the system test's layout) need ReadWritePaths=."""
    rig = ChargerRig(tmp_path, "ws://127.0.0.1:9/ocpp")
    config = rig.config()
    slot_b = rig.slots["B"]
    done = cli("-c", str(config), "check-config", "--deep", prefix=read_only(slot_b))
    assert done.returncode == 1
    assert done.stderr == (
        f"problem: slot B: {slot_b} is not writable here (read-only file system); grant it in "
        f"the unit's drop-in (systemctl edit ocpp-fw-agent): ReadWritePaths={slot_b}\n"
    )


def test_an_empty_roots_directory_is_found_before_the_first_request(tmp_path: Path) -> None:
    """Stumble 2: an empty roots directory passed check-config and start-up (fails before this
    change: check-config exited 0)."""
    rig = ChargerRig(tmp_path, "ws://127.0.0.1:9/ocpp")
    roots = tmp_path / "roots"
    (roots / "manufacturer.pem").unlink()
    (roots / "root.key").write_bytes(rig.root.key_pem)
    done = cli("-c", str(rig.config()), "check-config")
    assert done.returncode == 1
    assert done.stderr == (
        f"problem: [firmware] manufacturer_roots: {roots} holds no certificate, so every "
        "SignedUpdateFirmware would be answered InvalidCertificate; ignored root.key (only "
        f".pem, .crt, .cer, .der files are read) ({GUIDE})\n"
    )
    json.loads(done.stdout)


def test_a_private_key_in_the_roots_directory_is_named(tmp_path: Path) -> None:
    """Stumble 2: the root's key copied where its certificate belongs."""
    rig = ChargerRig(tmp_path, "ws://127.0.0.1:9/ocpp")
    wrong = tmp_path / "roots" / "manufacturer.pem"
    wrong.write_bytes(rig.root.key_pem)
    done = cli("-c", str(rig.config()), "check-config")
    assert done.returncode == 1
    assert done.stderr == (
        f"problem: [firmware] manufacturer_roots: {wrong} holds a private key, not a "
        f"certificate: install the root's certificate and keep its key off the charger "
        f"({GUIDE})\n"
    )


def test_an_expired_root_is_named(tmp_path: Path) -> None:
    rig = ChargerRig(tmp_path, "ws://127.0.0.1:9/ocpp")
    old = pki.issue("Old Root", pki.rsa_key(2048, 100), ca=True,
                    not_before=pki.NOW - 40 * pki.DAY, not_after=pki.NOW - 2 * pki.DAY)  # fmt: skip
    (tmp_path / "roots" / "old.pem").write_text(old.pem)
    done = cli("-c", str(rig.config()), "check-config")
    assert done.returncode == 1
    assert "problem: [firmware] manufacturer_roots: " in done.stderr
    assert "root CN=Old Root expired" in done.stderr


def test_the_deep_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    """Stumble 5, deep: an unusable root and a missing boot env in one run, one line each."""
    rig = ChargerRig(tmp_path, "ws://127.0.0.1:9/ocpp")
    (tmp_path / "roots" / "manufacturer.pem").write_bytes(rig.root.key_pem)
    rig.env.unlink()
    done = cli("-c", str(rig.config()), "check-config", "--deep")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("problem: [firmware] manufacturer_roots: ")
    assert lines[1] == f"problem: file: environment {rig.env} does not exist"


@pytest.mark.root
def test_a_mounted_inactive_slot_is_named_with_its_mount_point(tmp_path: Path) -> None:
    """A loop device as slot B, mounted: the deep check names it; unmounted, no problem."""
    if shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs losetup and mkfs.ext4")
    image = tmp_path / "b.img"
    image.write_bytes(b"\0" * (4 << 20))
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, capture_output=True)
    attached = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                              text=True, check=False)  # fmt: skip
    if attached.returncode != 0:
        pytest.skip(f"no loop device: {attached.stderr.strip()}")
    loop = attached.stdout.strip()
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    try:
        rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
        config = rig.config(slots={"devices": {"A": str(rig.slots["A"]), "B": loop}})
        assert cli("-c", str(config), "check-config", "--deep").returncode == 0
        subprocess.run(["mount", loop, str(mount_point)], check=True)
        try:
            done = cli("-c", str(config), "check-config", "--deep")
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)
        assert done.returncode == 1
        assert done.stderr == (
            f"problem: slot B: {loop} is mounted on {mount_point}; the agent never writes a "
            "mounted slot (unmount it, or fix [slots] devices if it is the running system)\n"
        )
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)
