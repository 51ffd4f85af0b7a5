"""A charger whose slots are switched by a real bootloader environment, for end-to-end tests.

`BootloaderRig` has the verbs of `agent.demo.rig.ChargerRig` (config, request, sign,
wait_reboot_request, power_cycle, versions) but the agent runs the `uboot` or `grub` backend on
the real tools (`fw_setenv`/`fw_printenv` on env images made with `mkenvimage`, `grub-editenv`
on a 1024-byte env block), and a power-on is done by the bootloader simulators of
tests/slots/slot_simulators.py: they apply U-Boot's (RAUC script or Mender bootcount) or GRUB's
(RAUC grub.cfg) boot rules to the same env and write the fake /proc/cmdline the backend reads
(design §8.7 (a)/(c), issue 4 "Tests, all on this machine").

Slots are files named like partitions (mmcblk0p2/p3), or loop devices (`media="loop"`, root
only). With loop devices the rig holds the booted slot's device open with O_EXCL, as the kernel
does for a mounted root, so a write to the running slot fails instead of going unnoticed.
Only the loop devices the rig attached are detached (`close()`).

The health command of every boot is a script that fails when the running kernel came from a
slot listed by `break_slot()` (read from the fake command line's `root=`): "an image whose
health check fails" without touching the agent's configuration between boots.
"""

from __future__ import annotations

import mmap
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.demo.rig import AgentProcess, ChargerRig
from agent.slots import load_backend
from agent.slots.base import BackendError, BootObservation, SlotHealth

_SLOT_TESTS = str(Path(__file__).resolve().parents[1] / "slots")
if _SLOT_TESTS not in sys.path:
    sys.path.insert(0, _SLOT_TESTS)

import slot_simulators as sim  # noqa: E402
from slot_rigs import UBOOT_ENVS, make_env_images, need, write_cmdline  # noqa: E402

# kind -> (backend, uboot scheme or None); every kind a real bootloader setup in the field.
KINDS: Mapping[str, tuple[str, str | None]] = {
    "uboot-rauc": ("uboot", "rauc"),
    "uboot-mender": ("uboot", "mender"),
    "grub": ("grub", None),
}
BOOT_ATTEMPTS = 3  # the uboot backend's default boot_attempts (BOOT_x_LEFT of a good slot)
SLOT_SIZE = 4 << 20  # slots (files or loop devices): room for the test image
FACTORY_IMAGE = b"factory image 1.0\n"
MENDER_VALUES = {"A": "2", "B": "3"}  # mender_boot_part of each slot (partition numbers)


def loop_attach(backing: Path) -> Path:
    done = subprocess.run(
        ["losetup", "--show", "-f", str(backing)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {done.stderr.strip()}")
    return Path(done.stdout.strip())


def read_direct(device: Path, size: int) -> bytes:
    """The first `size` bytes of `device` as the medium holds them (O_DIRECT, aligned)."""
    length = -(-size // 4096) * 4096
    buffer = mmap.mmap(-1, length)
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    try:
        done = os.readv(fd, [buffer])
    finally:
        os.close(fd)
    data = bytes(buffer[: min(done, size)])
    buffer.close()
    return data


class BootloaderRig(ChargerRig):
    """A charger on a U-Boot or GRUB environment; booted into slot A from a fresh env."""

    def __init__(self, base: Path, csms_url: str, kind: str, media: str = "file") -> None:
        super().__init__(base, csms_url, charge_point_id=f"CP-{kind.upper()}")
        self.kind = kind
        self.backend_name, self.scheme = KINDS[kind]
        self.media = media
        self.cmdline = base / "cmdline"
        self.broken = base / "broken-slots"
        self.broken.write_text("")
        self._loops: list[Path] = []
        self._held: int | None = None  # fd holding the booted slot's device (loop media)
        try:
            self._set_up(base)
        except BaseException:  # a skip or a failure half-way: detach what was attached
            self.close()
            raise

    def _set_up(self, base: Path) -> None:
        self.slots = self._make_slots(base / "dev")
        self.options: dict[str, Any] = {"cmdline": str(self.cmdline)}
        if self.backend_name == "uboot":
            need("mkenvimage", "fw_printenv", "fw_setenv")
            assert self.scheme is not None
            config, copies = make_env_images(base, UBOOT_ENVS[self.scheme], redundant=True)
            self.uboot_env = sim.UBootEnvImage(copies, 0x4000)
            self.options.update(fw_env_config=str(config), scheme=self.scheme)
            if self.scheme == "mender" and self.media == "loop":
                self.options["slot_values"] = MENDER_VALUES  # /dev/loopN has no partition no.
        else:
            need("grub-editenv")
            self.grubenv = base / "grubenv"
            subprocess.run(["grub-editenv", str(self.grubenv), "create"], check=True)
            fresh = ["ORDER=A B", "A_OK=1", "B_OK=1", "A_TRY=0", "B_TRY=0"]
            subprocess.run(["grub-editenv", str(self.grubenv), "set", *fresh], check=True)
            self.options["grubenv"] = str(self.grubenv)
        health = base / "health-check"
        health.write_text(
            "#!/bin/sh\n"
            "# fails when the running kernel came from a slot listed in broken-slots\n"
            f'cmdline=" $(cat {shlex.quote(str(self.cmdline))}) "\n'
            f"for dev in $(cat {shlex.quote(str(self.broken))}); do\n"
            '  case "$cmdline" in *" root=$dev "*) echo "broken image in $dev" >&2; exit 1;; esac\n'
            "done\n"
        )
        health.chmod(0o755)
        self.health_command = [str(health)]
        # The test's own view of the bootloader state (the agent has its own backend).
        self.backend = load_backend(
            self.backend_name, self.slots, self.options, state_dir=base / "observer"
        )
        self.boots: list[str] = []
        assert self.power_on() == "A", "the factory env must boot slot A"

    # --- media ----------------------------------------------------------------------------------

    def _make_slots(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        files = {"A": directory / "mmcblk0p2", "B": directory / "mmcblk0p3"}
        files["A"].write_bytes(FACTORY_IMAGE.ljust(4096, b"\0"))
        files["B"].write_bytes(b"\0" * 4096)
        for backing in files.values():  # pre-allocated, as partitions are
            os.truncate(backing, SLOT_SIZE)
        if self.media == "file":
            return files
        if os.geteuid() != 0:
            pytest.skip("loop devices as slots need root (losetup)")
        need("losetup")
        slots = {}
        for name, backing in files.items():
            slots[name] = loop_attach(backing)
            self._loops.append(slots[name])
        return slots

    def _hold(self, slot: str) -> None:
        """Hold the booted slot's block device exclusively, as the mounted root is held."""
        if self.media != "loop":
            return
        if self._held is not None:
            os.close(self._held)
            self._held = None
        if slot:
            self._held = os.open(self.slots[slot], os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)

    def close(self) -> None:
        """Release the hold and detach only the loop devices this rig attached."""
        self._hold("")
        for device in self._loops:
            subprocess.run(["losetup", "-d", str(device)], check=False, capture_output=True)
        self._loops.clear()

    def read_slot(self, slot: str, size: int) -> bytes:
        """What the slot holds (O_DIRECT on a loop device: the medium, not the page cache)."""
        if self.media == "loop":
            return read_direct(self.slots[slot], size)
        return self.slots[slot].read_bytes()[:size]

    # --- configuration --------------------------------------------------------------------------

    def config(self, **sections: Mapping[str, Any]) -> Path:
        slots: dict[str, Any] = {
            "backend": self.backend_name,
            "devices": {name: str(path) for name, path in self.slots.items()},
            "options": dict(self.options),
        }
        slots.update(sections.pop("slots", {}))
        health: dict[str, Any] = {"deadline": 30, "commands": [self.health_command]}
        health.update(sections.pop("health", {}))
        return super().config(slots=slots, health=health, **sections)

    def break_slot(self, slot: str) -> None:
        """From now on the health check fails whenever `slot` is the running system."""
        self.broken.write_text(f"{self.slots[slot]}\n")

    # --- the bootloader -------------------------------------------------------------------------

    def power_on(self) -> str:
        """The bootloader's boot rules on the env; writes the fake /proc/cmdline; the slot
        booted ("" = neither, e.g. GRUB's entry 0 after every slot was tried)."""
        if self.backend_name == "grub":
            env = sim.grub_load(self.grubenv)
            slot = sim.grub_rauc_boot(env)
            sim.grub_save(self.grubenv, env)
            param: str | None = slot or "R"
        else:
            env = self.uboot_env.load()
            before = dict(env)
            if self.scheme == "rauc":
                slot = sim.uboot_rauc_boot(env)
                param = slot or "R"
            else:
                values = self.backend.values  # type: ignore[attr-defined]
                by_value = {value: name for name, value in values.items()}
                slot = by_value[sim.uboot_mender_boot(env, (values["A"], values["B"]))]
                param = None  # Mender's boot script passes root= only
            if env != before:
                self.uboot_env.save(env)
        write_cmdline(self.cmdline, self.slots[slot] if slot else "/dev/sda1", param)
        self._hold(slot)
        self.boots.append(slot)
        return slot

    def power_cycle(self, agent: AgentProcess | None = None) -> str:
        """Shutdown (SIGTERM, when an agent runs), a power-on through the bootloader's rules,
        a new boot id and the booted slot's version file; returns the booted slot."""
        if agent is not None and agent.proc is not None and agent.proc.poll() is None:
            agent.signal(signal.SIGTERM)
            agent.wait()
        self.reboot_marker.unlink(missing_ok=True)
        booted = self.power_on()
        self.version_file.write_text(self.versions.get(booted, "unknown") + "\n")
        self._boot_count += 1
        self.boot_id.write_text(f"boot-{self._boot_count}\n")
        return booted

    # --- reading the env back -------------------------------------------------------------------

    def bootenv(self) -> dict[str, str]:
        """The variables as the real tools read them (fw_printenv / grub-editenv list)."""
        read: Callable[[], Any] = self.backend.read_env  # type: ignore[attr-defined]
        value = read()
        return dict(value[0] if isinstance(value, tuple) else value)

    def observe(self) -> BootObservation:
        return self.backend.observe()

    def value(self, slot: str) -> str:
        """The bootloader's name for `slot` (bootname, or mender_boot_part value)."""
        return str(self.backend.values[slot])  # type: ignore[attr-defined]

    def booted_per_cmdline(self) -> str:
        return self.cmdline.read_text()

    def committed(self, slot: str) -> bool:
        """`slot` is the primary and needs no confirm: the state right after commit(slot).
        Polled while the agent runs: a block torn by grub-editenv's in-place rewrite reads as
        "not yet"."""
        try:
            env = self.bootenv()
        except BackendError:
            return False
        name = self.value(slot)
        if self.kind == "uboot-rauc":
            return (
                env.get("BOOT_ORDER", "").split()[:1] == [name]
                and env.get(f"BOOT_{name}_LEFT") == format(BOOT_ATTEMPTS, "x")
                and not env.get("ab_trial")
            )
        if self.kind == "uboot-mender":
            return env.get("mender_boot_part") == name and env.get("upgrade_available") == "0"
        return (
            env.get("ORDER", "").split()[:1] == [name]
            and env.get(f"{name}_OK") == "1"
            and env.get(f"{name}_TRY") == "0"
            and not env.get("ab_trial")
        )

    def marked_bad(self, slot: str) -> bool:
        """The bootloader itself will not pick `slot` (or, Mender, the agent's mark is set)."""
        env, name = self.bootenv(), self.value(slot)
        if self.observe().health.get(slot) != SlotHealth.BAD:
            return False
        if self.kind == "uboot-rauc":
            return name not in env.get("BOOT_ORDER", "").split() and (
                int(env.get(f"BOOT_{name}_LEFT", "0"), 16) == 0
            )
        if self.kind == "uboot-mender":
            return slot in env.get("ab_bad", "").split() and env.get("mender_boot_part") != name
        return env.get(f"{name}_OK") == "0"
