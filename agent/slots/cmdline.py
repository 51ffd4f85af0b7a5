"""The booted slot from the kernel command line, cross-checked with the root device.

The boot script names the slot it chose in a parameter (`rauc.slot=A` in RAUC's scripts, or a
configured one). Independently, `root=` names the device the kernel mounted: a /dev path or
`PARTUUID=`/`UUID=`/`PARTLABEL=` resolved through /dev/disk/by-*, matched to a slot by the
device's major:minor. When both resolve to slots and disagree,
the env and the boot script do not match (Mender's "No match between boot and root
partitions"); `booted_from_cmdline` reports that as a problem instead of guessing.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path

DISK_DIRS = {"PARTUUID": "by-partuuid", "UUID": "by-uuid", "PARTLABEL": "by-partlabel"}


@dataclasses.dataclass(frozen=True)
class CmdlineEvidence:
    booted: str  # slot name, or "" when neither slot
    raw: dict[str, str]
    problem: str | None  # a contradiction between the parameter and root=


def parse(text: str) -> dict[str, str]:
    """Kernel parameters as a dict (the last occurrence wins, as in the kernel)."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    params: dict[str, str] = {}
    for word in words:
        key, _, value = word.partition("=")
        params[key] = value
    return params


def _same_device(a: Path, b: Path) -> bool:
    """Two paths name the same device: for block devices the same major:minor (the kernel's
    identity of a device, whichever node or symlink names it, as Mender compares them); for
    anything else (file slots in tests) the same file after following links."""
    try:
        first, second = os.stat(a), os.stat(b)
    except OSError:
        return False
    if stat.S_ISBLK(first.st_mode) and stat.S_ISBLK(second.st_mode):
        return first.st_rdev == second.st_rdev
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def root_slot(root: str, slots: Mapping[str, Path], disk_dir: Path) -> str | None:
    """The slot whose device `root=` names, or None."""
    kind, sep, ident = root.partition("=")
    if sep and kind in DISK_DIRS:
        device = disk_dir / DISK_DIRS[kind] / ident
    elif root.startswith("/"):
        device = Path(root)
    else:
        return None
    for name, slot_device in slots.items():
        if _same_device(device, slot_device):
            return name
    return None


def booted_from_cmdline(
    cmdline: Path,
    parameter: str,
    slots: Mapping[str, Path],
    aliases: Mapping[str, str],
    disk_dir: Path = Path("/dev/disk"),
) -> CmdlineEvidence:
    """Read `cmdline`; `aliases` maps the parameter's possible values -> slot name.

    Raises OSError when the file cannot be read.
    """
    params = parse(cmdline.read_text(encoding="utf-8", errors="replace"))
    raw = {f"cmdline.{parameter}": params.get(parameter, "")}
    named = aliases.get(params[parameter], "") if parameter in params else ""
    from_root = None
    if "root" in params:
        raw["cmdline.root"] = params["root"]
        from_root = root_slot(params["root"], slots, disk_dir)
        raw["cmdline.root_slot"] = from_root or ""
    problem = None
    if named and from_root and named != from_root:
        problem = (
            f"kernel command line says {parameter}={params[parameter]} (slot {named}) but "
            f"root={params['root']} is slot {from_root}"
        )
    booted = named or (from_root if parameter not in params else "") or ""
    return CmdlineEvidence(booted=booted, raw=raw, problem=problem)
