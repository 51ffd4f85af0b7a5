"""The `file` backend: a JSON file plays the bootloader, `power_on()` plays the power button.

This is the reference model of the slot contract, used by the demo and as the oracle in tests.
Slots A and B are paths (regular files or block devices); the "bootloader environment" is a
small JSON document written atomically (temp file, fsync, rename, fsync dir):

    {"version": 1, "slots": ["A", "B"], "primary": "A", "bad": ["B"],
     "trial": {"slot": "B", "attempts_left": 1},
     "booted": {"slot": "A", "trial": false, "boots": 7}}

`booted` plays /proc/cmdline: only `power_on()` writes it, the backend copies it unchanged.

Boot rules applied by `power_on()`, in order:

1. An armed trial slot with attempts left boots as a trial; one attempt is used up (with the
   default of one attempt the trial is a one-shot flag, consumed by the boot).
2. A trial whose attempts are used up is dropped and its slot is marked bad: the bootloader gave
   up on it (like U-Boot's BOOT_x_LEFT=0).
3. Otherwise the primary slot boots; if the primary is bad, the other slot (a fallback).
4. A bad slot is never booted. If both are bad nothing boots (`booted.slot` is "").

Run `python -m agent.slots.filemodel power-on ENV` to simulate a power cycle, `init ENV` to
create an environment, `show ENV` to print it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from agent import durable
from agent.slots.base import (
    BackendError,
    BootObservation,
    Capabilities,
    SlotHealth,
    VerifiedBackend,
)
from agent.slots.options import Option, integer, path
from agent.slots.pair import pair_problem

FORMAT_VERSION: Final = 1
OPTIONS: Final = {
    "env": Option(path, None, "the JSON environment (default: <state dir>/bootenv.json)"),
    "trial_attempts": Option(integer(1, 16), 1, "boots a trial may take before it is given up"),
}

Env = dict[str, Any]


def new_env(slots: Sequence[str], primary: str, booted: str | None = None) -> Env:
    """A fresh environment: both slots good, `primary` booted (as after a factory flash)."""
    problem = pair_problem(slots)
    if problem or primary not in slots:
        raise ValueError(problem or f"primary {primary!r} is not one of {list(slots)}")
    return {
        "version": FORMAT_VERSION,
        "slots": list(slots),
        "primary": primary,
        "bad": [],
        "trial": None,
        "booted": {"slot": booted or primary, "trial": False, "boots": 0},
    }


def load_env(env_path: Path) -> Env:
    """Read the environment; raises BackendError when it is missing or malformed."""
    try:
        doc = durable.read_json(env_path, version=FORMAT_VERSION)
    except durable.StateFileError as exc:
        raise BackendError(f"file: {exc}") from exc
    if doc is None:
        raise BackendError(f"file: environment {env_path} does not exist")
    if not isinstance(doc.get("slots"), list) or pair_problem(doc["slots"]):
        raise BackendError(f"file: {env_path}: 'slots' must list two slot names")
    if doc.get("primary") not in doc["slots"]:
        raise BackendError(f"file: {env_path}: primary {doc.get('primary')!r} is not a slot")
    return doc


def _other(env: Env, slot: str) -> str:
    return str(next(name for name in env["slots"] if name != slot))


def power_on(env_path: Path) -> str:
    """Apply the boot rules once; record and return the booted slot ("" if none could boot)."""
    env = load_env(env_path)
    bad = list(env["bad"])
    trial = env["trial"]
    booted, as_trial = "", False
    if trial is not None and trial["slot"] not in bad:
        if trial["attempts_left"] > 0:
            trial = {**trial, "attempts_left": trial["attempts_left"] - 1}
            booted, as_trial = trial["slot"], True
        else:
            bad.append(trial["slot"])
            trial = None
    if not booted:
        for candidate in (env["primary"], _other(env, env["primary"])):
            if candidate not in bad:
                booted = candidate
                break
    boots = int(env.get("booted", {}).get("boots", 0)) + 1
    env.update(bad=bad, trial=trial, booted={"slot": booted, "trial": as_trial, "boots": boots})
    durable.atomic_write_json(env_path, env, mode=0o644)
    return booted


class FileModelBackend(VerifiedBackend):
    """Slots are paths; the bootloader is the JSON environment at `env`."""

    name = "file"
    OPTIONS = OPTIONS

    def _configure(self) -> None:
        opts = self.opts
        self.env_path: Path = opts["env"] or self.state_dir / "bootenv.json"
        self.trial_attempts: int = opts["trial_attempts"]
        self._write: Callable[[Path, Env], None] = lambda p, doc: durable.atomic_write_json(
            p, doc, mode=0o644
        )

    def capabilities(self) -> Capabilities:
        return Capabilities(
            trial_attempts=self.trial_attempts, persistent_bad_mark=True, atomic_switch=True
        )

    def self_check(self) -> list[str]:
        try:
            env = load_env(self.env_path)
        except BackendError as exc:
            return [str(exc)]
        if set(env["slots"]) != set(self.slots):
            return [
                f"file: {self.env_path} has slots {env['slots']}, configured {sorted(self.slots)}"
            ]
        if env["booted"]["slot"] not in self.slots:
            return [f"file: booted slot {env['booted']['slot']!r} is neither slot"]
        return []

    def observe(self) -> BootObservation:
        env = load_env(self.env_path)
        trial = env["trial"]
        booted = env["booted"]
        health = {}
        for slot in self.slots:
            if slot in env["bad"]:
                health[slot] = SlotHealth.BAD
            elif trial is not None and trial["slot"] == slot:
                health[slot] = SlotHealth.TRIAL
            else:
                health[slot] = SlotHealth.GOOD
        trial_active = (
            bool(booted["trial"]) and trial is not None and trial["slot"] == booted["slot"]
        )
        raw = {
            "primary": env["primary"],
            "bad": " ".join(env["bad"]),
            "trial": "" if trial is None else f"{trial['slot']}:{trial['attempts_left']}",
            "booted": booted["slot"],
            "booted_trial": str(bool(booted["trial"])).lower(),
            "boots": str(booted.get("boots", 0)),
        }
        return BootObservation(
            booted=booted["slot"],
            primary=env["primary"],
            trial_active=trial_active,
            attempts_left=None if trial is None else int(trial["attempts_left"]),
            health=health,
            raw=raw,
        )

    def _change(self, edit: Callable[[Env], None]) -> None:
        env = load_env(self.env_path)
        new = copy.deepcopy(env)
        edit(new)
        new["bad"] = sorted(set(new["bad"]))
        if new != env:  # idempotent: an unchanged environment is not rewritten
            self._write(self.env_path, new)

    def _do_mark_bad(self, slot: str, before: BootObservation) -> None:
        def edit(env: Env) -> None:
            env["bad"].append(slot)
            if env["trial"] is not None and env["trial"]["slot"] == slot:
                env["trial"] = None
            if env["primary"] == slot:
                env["primary"] = _other(env, slot)

        self._change(edit)

    def _do_arm_trial(self, slot: str, before: BootObservation) -> None:
        def edit(env: Env) -> None:
            env["bad"] = [name for name in env["bad"] if name != slot]
            env["trial"] = {"slot": slot, "attempts_left": self.trial_attempts}
            env["primary"] = _other(env, slot)

        self._change(edit)

    def _do_abandon_trial(self, slot: str, before: BootObservation) -> None:
        self._do_mark_bad(slot, before)

    def _do_commit(self, slot: str, before: BootObservation) -> None:
        def edit(env: Env) -> None:
            env["bad"] = [name for name in env["bad"] if name != slot]
            if env["trial"] is not None and env["trial"]["slot"] == slot:
                env["trial"] = None
            env["primary"] = slot

        self._change(edit)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m agent.slots.filemodel {power-on,init,show} ENV`."""
    parser = argparse.ArgumentParser(prog="python -m agent.slots.filemodel")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("power-on", help="apply the boot rules once").add_argument("env", type=Path)
    init = sub.add_parser("init", help="create a fresh environment")
    init.add_argument("env", type=Path)
    init.add_argument("--slots", nargs=2, default=["A", "B"])
    init.add_argument("--primary", default="A")
    sub.add_parser("show", help="print the environment").add_argument("env", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "power-on":
            booted = power_on(args.env)
            print(f"booted: {booted or 'nothing (no bootable slot)'}")
            return 0 if booted else 1
        if args.command == "init":
            durable.atomic_write_json(args.env, new_env(args.slots, args.primary), mode=0o644)
            return 0
        print(json.dumps(load_env(args.env), indent=1))
        return 0
    except (BackendError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
