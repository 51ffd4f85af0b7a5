"""A stand-in `rauc` CLI with RAUC's documented behaviour, on a JSON state file.

RAUC cannot run as a working service here, so the tests use this. It models RAUC with its U-Boot
bootloader backend (reference.rst, src/bootloaders/uboot.c behaviour as documented):

- boot_status of a slot: good when its bootname is in BOOT_ORDER and BOOT_<x>_LEFT > 0;
- boot_primary: the first slot in BOOT_ORDER with attempts left;
- mark-good: BOOT_<x>_LEFT = boot-attempts; mark-bad: drop from BOOT_ORDER, LEFT = 0;
- mark-active: LEFT = boot-attempts-primary and the slot first in BOOT_ORDER;
- identifiers: booted, other, or a slot name such as rootfs.1.

Usage: fake_rauc.py --state FILE [--conf=...] status [--output-format=json | mark-X [SLOT]]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def good(state: dict[str, Any], bootname: str) -> bool:
    env = state["env"]
    return (
        bootname in env["BOOT_ORDER"].split() and int(env.get(f"BOOT_{bootname}_LEFT", "0"), 16) > 0
    )


def status_json(state: dict[str, Any]) -> dict[str, Any]:
    by_bootname = {info["bootname"]: name for name, info in state["slots"].items()}
    primary = next(
        (
            by_bootname[b]
            for b in state["env"]["BOOT_ORDER"].split()
            if b in by_bootname and good(state, b)
        ),
        None,
    )
    slots = []
    for name, info in state["slots"].items():
        slots.append(
            {
                name: {
                    "class": info["class"],
                    "device": info["device"],
                    "type": "ext4",
                    "bootname": info["bootname"],
                    "state": "booted" if info["bootname"] == state["booted"] else "inactive",
                    "parent": None,
                    "mountpoint": "/" if info["bootname"] == state["booted"] else None,
                    "boot_status": "good" if good(state, info["bootname"]) else "bad",
                }
            }
        )
    return {
        "compatible": state["compatible"],
        "variant": "",
        "booted": state["booted"],
        "boot_primary": primary,
        "slots": slots,
    }


def resolve(state: dict[str, Any], ident: str) -> str:
    names = {info["bootname"]: name for name, info in state["slots"].items()}
    if ident == "booted":
        return names[state["booted"]]
    if ident == "other":
        return next(n for b, n in names.items() if b != state["booted"])
    if ident not in state["slots"]:
        raise KeyError(ident)
    return ident


def mark(state: dict[str, Any], how: str, name: str) -> None:
    env, bootname = state["env"], state["slots"][name]["bootname"]
    order = env["BOOT_ORDER"].split()
    if how == "good":
        env[f"BOOT_{bootname}_LEFT"] = format(state["boot_attempts"], "x")
    elif how == "bad":
        env["BOOT_ORDER"] = " ".join(b for b in order if b != bootname)
        env[f"BOOT_{bootname}_LEFT"] = "0"
    else:
        env[f"BOOT_{bootname}_LEFT"] = format(state["boot_attempts_primary"], "x")
        env["BOOT_ORDER"] = " ".join([bootname, *(b for b in order if b != bootname)])


def main(argv: list[str]) -> int:
    state_path = Path(argv[argv.index("--state") + 1])
    args = [a for i, a in enumerate(argv) if a != "--state" and argv[i - 1 : i] != ["--state"]]
    args = [a for a in args if not a.startswith("--conf=")]
    state = load(state_path)
    if args[:1] != ["status"]:
        print(f"fake rauc: unsupported command {args}", file=sys.stderr)
        return 1
    if args[1:] == ["--output-format=json"]:
        print(json.dumps(status_json(state)))
        return 0
    if len(args) in (2, 3) and args[1] in ("mark-good", "mark-bad", "mark-active"):
        try:
            name = resolve(state, args[2] if len(args) == 3 else "booted")
        except KeyError:
            print(f"No slot with class or name '{args[2]}' found", file=sys.stderr)
            return 1
        how = args[1].removeprefix("mark-")
        mark(state, how, name)
        save(state_path, state)
        print(f"rauc status: marked slot {name} as {how}")
        return 0
    print(f"fake rauc: unsupported status arguments {args[1:]}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
