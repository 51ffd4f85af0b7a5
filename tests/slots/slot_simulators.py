"""Bootloader simulators: each applies one bootloader's boot rules to the same env the backend
writes, so a simulated power-on picks the slot the real bootloader would and writes the fake
/proc/cmdline or device tree the backend then reads.

They read and write the env media themselves (U-Boot env images with CRC and redundancy flag,
the GRUB 1024-byte block), independently of fw_setenv / grub-editenv, so a disagreement between
the agent's tools and the bootloader's view of the env shows up as a test failure.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

# --- U-Boot env images ---------------------------------------------------------------------------


class UBootEnvImage:
    """One or two env copies of `size` bytes at offset 0 of their files (as in fw_env.config)."""

    def __init__(self, copies: list[Path], size: int) -> None:
        self.copies, self.size = copies, size
        self.redundant = len(copies) == 2
        self.header = 5 if self.redundant else 4

    def _read(self, path: Path) -> tuple[int, dict[str, str]] | None:
        try:
            blob = path.read_bytes()[: self.size]
        except FileNotFoundError:
            return None
        if len(blob) < self.size:
            return None
        data = blob[self.header :]
        if int.from_bytes(blob[:4], "little") != zlib.crc32(data):
            return None
        env: dict[str, str] = {}
        for item in data.split(b"\0"):
            if not item:
                break
            key, _, value = item.decode().partition("=")
            env[key] = value
        return (blob[4] if self.redundant else 0), env

    def _current(self) -> tuple[int, int, dict[str, str]]:
        """(index of the copy U-Boot uses, its flag, its env)."""
        found = [self._read(path) for path in self.copies]
        valid = [(i, f[0], f[1]) for i, f in enumerate(found) if f is not None]
        if not valid:
            raise RuntimeError("U-Boot: no valid environment (bad CRC): would use its default")
        if len(valid) == 1:
            return valid[0]
        (_, f0, _), (_, f1, _) = valid
        if (f0 == 0xFF and f1 == 0) or (f1 > f0 and not (f1 == 0xFF and f0 == 0)):
            return valid[1]
        return valid[0]

    def load(self) -> dict[str, str]:
        return dict(self._current()[2])

    def save(self, env: Mapping[str, str]) -> None:
        """U-Boot's saveenv: sorted variables, into the other copy with the next flag value."""
        index, flag, _ = self._current()
        target = (index + 1) % len(self.copies)
        body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in sorted(env.items())) + b"\0"
        data = body.ljust(self.size - self.header, b"\0")
        head = zlib.crc32(data).to_bytes(4, "little")
        if self.redundant:
            head += bytes([(flag + 1) & 0xFF])
        path = self.copies[target]
        with open(path, "r+b") as fh:
            fh.write(head + data)
            fh.flush()
            os.fsync(fh.fileno())


def _hex(text: str | None, default: int = 0) -> int:
    try:
        return int(text or "", 16)
    except ValueError:
        return default


def uboot_rauc_boot(env: MutableMapping[str, str], bootnames: tuple[str, ...] = ("A", "B")) -> str:
    """RAUC's contrib/uboot.sh: first slot in BOOT_ORDER with attempts left, decremented on
    EVERY boot; no slot left -> reset all counters to 3 and reset (boot again)."""
    for _reset in range(2):
        env.setdefault("BOOT_ORDER", " ".join(bootnames))
        for name in bootnames:
            env.setdefault(f"BOOT_{name}_LEFT", "3")
        for name in env["BOOT_ORDER"].split():
            if name in bootnames and _hex(env.get(f"BOOT_{name}_LEFT")) > 0:
                env[f"BOOT_{name}_LEFT"] = format(_hex(env[f"BOOT_{name}_LEFT"]) - 1, "x")
                return name
        for name in bootnames:
            env[f"BOOT_{name}_LEFT"] = "3"
    return ""


def uboot_mender_boot(
    env: MutableMapping[str, str], values: tuple[str, str], variable: str = "mender_boot_part"
) -> str:
    """U-Boot CONFIG_BOOTCOUNT_LIMIT + BOOTCOUNT_ENV with Mender's altbootcmd.

    bootcount is loaded and stored only while upgrade_available=1; once it exceeds bootlimit,
    altbootcmd swaps the slot variable and clears upgrade_available before booting.
    """
    upgrade = env.get("upgrade_available") == "1"
    count = (int(env.get("bootcount", "0")) if upgrade else 0) + 1
    if upgrade:
        env["bootcount"] = str(count)
    limit = int(env.get("bootlimit", "0"))
    if limit and count > limit:
        current = env[variable]
        env[variable] = values[1] if current == values[0] else values[0]
        if f"{variable}_hex" in env:
            env[f"{variable}_hex"] = format(int(env[variable]), "x")
        env["upgrade_available"] = "0"
    return env[variable]


# --- GRUB env block ------------------------------------------------------------------------------

GRUB_HEADER = b"# GRUB Environment Block\n"


def grub_load(path: Path) -> dict[str, str]:
    blob = path.read_bytes()
    assert blob.startswith(GRUB_HEADER) and len(blob) == 1024, "GRUB: invalid environment block"
    env: dict[str, str] = {}
    for line in blob[len(GRUB_HEADER) :].decode().split("\n"):
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key] = value
    return env


def grub_save(path: Path, env: Mapping[str, str]) -> None:
    """GRUB's save_env: the block rewritten in place, padded with '#' to 1024 bytes."""
    body = GRUB_HEADER + b"".join(f"{k}={v}\n".encode() for k, v in env.items())
    assert len(body) <= 1024, "GRUB: environment block full"
    path.write_bytes(body.ljust(1024, b"#"))


def grub_rauc_boot(env: MutableMapping[str, str], bootnames: tuple[str, ...] = ("A", "B")) -> str:
    """RAUC's contrib/grub.conf: walk ORDER, mark each visited slot tried, boot the first with
    OK=1 and TRY=0 (before this boot); none -> reset TRY of the OK slots and boot entry 0 ("")."""
    chosen = ""
    for name in env.get("ORDER", " ".join(bootnames)).split():
        if name not in bootnames:
            continue
        ok, tried = env.get(f"{name}_OK", "0"), env.get(f"{name}_TRY", "0")
        env[f"{name}_TRY"] = "1"
        if ok == "1" and tried == "0":
            chosen = name
            break
    if not chosen:
        for name in bootnames:
            if env.get(f"{name}_OK", "0") == "1" and env.get(f"{name}_TRY", "0") == "1":
                env[f"{name}_TRY"] = "0"
    for name in bootnames:  # save_env A_TRY B_TRY
        env.setdefault(f"{name}_TRY", "0")
    return chosen


# --- Raspberry Pi firmware -----------------------------------------------------------------------


def _autoboot_value(text: str, tryboot: bool, key: str) -> str | None:
    """A property as the firmware sees it: [all] lines, overridden by [tryboot] in tryboot mode."""
    value, section = None, "all"
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and (section == "all" or (section == "tryboot" and tryboot)):
            k, _, v = line.partition("=")
            if k.strip() == key:
                value = v.strip()
    return value


def tryboot_power_on(read_autoboot: Callable[[], str], dt_dir: Path, tryboot_flag: bool) -> int:
    """The firmware: the one-shot flag is cleared before boot; in tryboot mode with
    tryboot_a_b=1 the [tryboot] boot_partition wins. Writes the /chosen/bootloader props."""
    text = read_autoboot()
    tryboot = tryboot_flag and _autoboot_value(text, True, "tryboot_a_b") == "1"
    partition = int(_autoboot_value(text, tryboot, "boot_partition") or "1")
    dt_dir.mkdir(parents=True, exist_ok=True)
    (dt_dir / "partition").write_bytes(partition.to_bytes(4, "big"))
    (dt_dir / "tryboot").write_bytes(int(tryboot).to_bytes(4, "big"))
    return partition
