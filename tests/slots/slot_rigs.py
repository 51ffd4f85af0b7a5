"""Test rigs: a backend on real tools and media, plus the simulator that powers the "device" on.

Every rig starts as a device that booted slot A from a freshly flashed env (A primary, B good),
with the per-boot confirm done where the bootloader needs one. Slot devices are plain files named
like partitions (mmcblk0p2 / mmcblk0p3) so partition numbers can be derived from them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import slot_simulators as sim
from real_rauc import RealRauc

from agent.slots import filemodel, load_backend
from agent.slots.base import BootBackend

ENV_SIZE = 0x4000
AUTOBOOT = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"


@dataclasses.dataclass
class Rig:
    id: str
    backend: BootBackend
    power_on: Callable[[str | None], str]  # reboot argument -> booted slot ("" = neither)
    env_text: Callable[[], str]  # the whole env, for exact comparisons
    dropping: Callable[[pytest.MonkeyPatch], BootBackend]  # writes vanish, tools exit 0
    drop_ops: tuple[str, ...] = ("mark_bad", "arm_trial", "commit")
    drop_keeps_env: bool = True  # False where the agent record is written before the tool
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    close: Callable[[], None] = lambda: None  # processes a rig started (the rauc service)


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"tool(s) not installed: {', '.join(missing)}; make deps installs them")


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def devices(tmp: Path) -> dict[str, Path]:
    (tmp / "dev").mkdir(exist_ok=True)
    slots = {"A": tmp / "dev" / "mmcblk0p2", "B": tmp / "dev" / "mmcblk0p3"}
    for device in slots.values():
        device.write_bytes(b"\0" * 4096)
    return slots


def write_cmdline(path: Path, root: Path | str, param: str | None) -> None:
    extra = f" rauc.slot={param}" if param is not None else ""
    path.write_text(f"console=ttyS0,115200 root={root} rootwait{extra}\n")


def settle(rig: Rig) -> Rig:
    """Boot A once, confirming it where the bootloader counts every boot."""
    assert rig.power_on(None) == "A"
    if rig.backend.capabilities().confirm_each_boot:
        rig.backend.commit("A")
    return rig


# --- file -----------------------------------------------------------------------------------------


def file_rig(tmp: Path) -> Rig:
    slots = devices(tmp)
    env = tmp / "bootenv.json"
    env.write_text(json.dumps(filemodel.new_env(["A", "B"], "A")))
    backend = load_backend("file", slots, {"env": str(env)}, state_dir=tmp)

    def dropping(mp: pytest.MonkeyPatch) -> BootBackend:
        other = load_backend("file", slots, {"env": str(env)}, state_dir=tmp)
        mp.setattr(other, "_write", lambda path, doc: None)
        return other

    return settle(
        Rig("file", backend, lambda _arg: filemodel.power_on(env), env.read_text, dropping)
    )


# --- uboot ---------------------------------------------------------------------------------------

UBOOT_ENVS = {
    "rauc": "BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\nbootcmd=run rauc_boot\n",
    "mender": (
        "mender_boot_part=2\nmender_boot_part_hex=2\nupgrade_available=0\nbootcount=0\n"
        "bootlimit=1\nbootcmd=run mender_setup\naltbootcmd=run mender_altbootcmd\n"
    ),
}


def make_env_images(tmp: Path, text: str, redundant: bool) -> tuple[Path, list[Path]]:
    need("mkenvimage")
    source = tmp / "env.txt"
    source.write_text(text)
    copies = [tmp / "uboot-env1.img"] + ([tmp / "uboot-env2.img"] if redundant else [])
    flags = ["-r"] if redundant else []
    subprocess.run(
        ["mkenvimage", *flags, "-s", hex(ENV_SIZE), "-o", str(copies[0]), str(source)], check=True
    )
    for copy in copies[1:]:
        shutil.copyfile(copies[0], copy)
    config = tmp / "fw_env.config"
    config.write_text("".join(f"{c} 0x0 {hex(ENV_SIZE)}\n" for c in copies))
    return config, copies


def uboot_rig(tmp: Path, scheme: str, redundant: bool) -> Rig:
    need("fw_printenv", "fw_setenv")
    slots = devices(tmp)
    config, copies = make_env_images(tmp, UBOOT_ENVS[scheme], redundant)
    cmdline = tmp / "cmdline"
    options = {
        "fw_env_config": str(config),
        "scheme": scheme,
        "cmdline": str(cmdline),
        "require_redundant": redundant,
    }
    backend = load_backend("uboot", slots, options, state_dir=tmp)
    image = sim.UBootEnvImage(copies, ENV_SIZE)
    by_value = {"A": "A", "B": "B"} if scheme == "rauc" else {"2": "A", "3": "B"}

    def power_on(_arg: str | None) -> str:
        env = image.load()
        before = dict(env)
        if scheme == "rauc":
            slot = by_value.get(sim.uboot_rauc_boot(env), "")
            write_cmdline(cmdline, slots[slot] if slot else "/dev/sda1", slot or "R")
        else:
            slot = by_value[sim.uboot_mender_boot(env, ("2", "3"))]
            write_cmdline(cmdline, slots[slot], None)  # Mender: root= only
        if env != before:
            image.save(env)
        return slot

    def env_text() -> str:
        return subprocess.run(
            ["fw_printenv", "-c", str(config)], capture_output=True, text=True, check=True
        ).stdout

    def dropping(_mp: pytest.MonkeyPatch) -> BootBackend:
        fake = script(tmp / "bin" / "fw_setenv", "cat >/dev/null; exit 0\n")
        return load_backend("uboot", slots, {**options, "fw_setenv": str(fake)}, state_dir=tmp)

    rig = Rig(f"uboot-{scheme}", backend, power_on, env_text, dropping)
    rig.paths.update(config=config, cmdline=cmdline, env1=copies[0])
    return settle(rig)


# --- grub ----------------------------------------------------------------------------------------


def grub_rig(tmp: Path) -> Rig:
    need("grub-editenv")
    slots = devices(tmp)
    grubenv = tmp / "grubenv"
    subprocess.run(["grub-editenv", str(grubenv), "create"], check=True)
    subprocess.run(
        [
            "grub-editenv",
            str(grubenv),
            "set",
            "ORDER=A B",
            "A_OK=1",
            "B_OK=1",
            "A_TRY=0",
            "B_TRY=0",
        ],
        check=True,
    )
    cmdline = tmp / "cmdline"
    options = {"grubenv": str(grubenv), "cmdline": str(cmdline)}
    backend = load_backend("grub", slots, options, state_dir=tmp)

    def power_on(_arg: str | None) -> str:
        env = sim.grub_load(grubenv)
        slot = sim.grub_rauc_boot(env)
        sim.grub_save(grubenv, env)
        write_cmdline(cmdline, slots[slot] if slot else "/dev/sda1", slot or "R")
        return slot

    def env_text() -> str:
        return subprocess.run(
            ["grub-editenv", str(grubenv), "list"], capture_output=True, text=True, check=True
        ).stdout

    def dropping(_mp: pytest.MonkeyPatch) -> BootBackend:
        fake = script(
            tmp / "bin" / "grub-editenv",
            'for a in "$@"; do [ "$a" = set ] && exit 0; done\nexec grub-editenv "$@"\n',
        )
        return load_backend("grub", slots, {**options, "grub_editenv": str(fake)}, state_dir=tmp)

    rig = Rig("grub", backend, power_on, env_text, dropping)
    rig.paths.update(grubenv=grubenv, cmdline=cmdline)
    return settle(rig)


# --- rpi-tryboot ---------------------------------------------------------------------------------


def tryboot_rig(tmp: Path, fat: bool) -> Rig:
    slots = devices(tmp)
    root = tmp / "root"
    dt = root / "proc/device-tree/chosen/bootloader"
    options: dict[str, object] = {"root": str(root), "state_file": str(tmp / "tryboot.json")}
    if fat:
        need("mkfs.vfat", "mcopy", "mtype", "mren")
        image = tmp / "bootfs.img"
        subprocess.run(["mkfs.vfat", "-C", str(image), "2048"], check=True, capture_output=True)
        source = tmp / "autoboot.src"
        source.write_text(AUTOBOOT)
        subprocess.run(["mcopy", "-i", str(image), str(source), "::/autoboot.txt"], check=True)
        options["fat_image"] = str(image)

        def read() -> str:
            return subprocess.run(
                ["mtype", "-i", str(image), "::/autoboot.txt"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
    else:
        bootfs = tmp / "bootfs"
        bootfs.mkdir()
        (bootfs / "autoboot.txt").write_text(AUTOBOOT)
        options["autoboot_txt"] = str(bootfs / "autoboot.txt")

        def read() -> str:
            return (bootfs / "autoboot.txt").read_text()

    backend = load_backend("rpi-tryboot", slots, options, state_dir=tmp)
    by_partition = {2: "A", 3: "B"}

    def power_on(arg: str | None) -> str:
        return by_partition.get(sim.tryboot_power_on(read, dt, arg == "0 tryboot"), "")

    def env_text() -> str:
        record = tmp / "tryboot.json"
        return read() + "--- agent record\n" + (record.read_text() if record.exists() else "")

    def dropping(mp: pytest.MonkeyPatch) -> BootBackend:
        if fat:
            fake = script(tmp / "bin" / "mren", "exit 0\n")
            return load_backend("rpi-tryboot", slots, {**options, "mren": str(fake)}, state_dir=tmp)
        from agent.slots import tryboot

        mp.setattr(tryboot.durable, "atomic_write_bytes", lambda *a, **k: None)
        mp.setattr(tryboot.durable, "atomic_write_json", lambda *a, **k: None)
        return backend

    drop_ops = ("commit",) if fat else ("mark_bad", "arm_trial", "commit")
    rig = Rig(
        f"rpi-tryboot-{'fat' if fat else 'dir'}", backend, power_on, env_text, dropping, drop_ops
    )
    rig.paths.update(root=root, dt=dt)
    return settle(rig)


# --- rauc ----------------------------------------------------------------------------------------


def rauc_rig(tmp: Path) -> Rig:
    """Debian's real rauc (service on a private D-Bus) with RAUC's custom bootloader backend
    as the simulator (real_rauc.py); closed by the `rig` fixture."""
    need("rauc", "dbus-daemon")
    slots = devices(tmp)
    rauc = RealRauc(tmp / "rauc", slots)
    record = tmp / "rauc-agent.json"
    options = {"rauc_binary": str(rauc.wrapper), "conf": str(rauc.conf), "state_file": str(record)}
    backend = load_backend("rauc", slots, options, state_dir=tmp)

    def env_text() -> str:
        agent = record.read_text() if record.exists() else ""
        return rauc.env.read_text() + f"\nbooted={rauc.booted}\n{agent}"

    def dropping(_mp: pytest.MonkeyPatch) -> BootBackend:
        run = f'exec "{rauc.wrapper}" "$@"\n'
        fake = script(tmp / "bin" / "rauc-drop", f'case "$*" in *mark-*) exit 0;; esac\n{run}')
        return load_backend("rauc", slots, {**options, "rauc_binary": str(fake)}, state_dir=tmp)

    rig = Rig("rauc", backend, lambda _arg: rauc.power_on(), env_text, dropping)
    rig.close = rauc.close
    rig.drop_keeps_env = False  # arm records its intent before `rauc status mark-active`
    # A dropped `mark-good` of the already-primary booted slot cannot be seen: RAUC's status
    # shows good/bad, not the boot attempts that mark-good restores.
    rig.drop_ops = ("mark_bad", "arm_trial")
    rig.paths.update(env=rauc.env, conf=rauc.conf)
    try:
        rauc.start_bus()
        return settle(rig)
    except BaseException:
        rauc.close()
        raise


RIGS: dict[str, Callable[[Path], Rig]] = {
    "file": file_rig,
    "uboot-rauc-redundant": lambda tmp: uboot_rig(tmp, "rauc", redundant=True),
    "uboot-rauc-single": lambda tmp: uboot_rig(tmp, "rauc", redundant=False),
    "uboot-mender-redundant": lambda tmp: uboot_rig(tmp, "mender", redundant=True),
    "uboot-mender-single": lambda tmp: uboot_rig(tmp, "mender", redundant=False),
    "grub": grub_rig,
    "rpi-tryboot-dir": lambda tmp: tryboot_rig(tmp, fat=False),
    "rpi-tryboot-fat": lambda tmp: tryboot_rig(tmp, fat=True),
    "rauc": rauc_rig,
}
