"""The `grub` backend: RAUC's ORDER / <slot>_OK / <slot>_TRY scheme in a GRUB env block.

RAUC's example grub.cfg walks ORDER and boots the first slot with `_OK=1` and `_TRY=0`, setting
`_TRY=1` for every slot it looks at and saving the env; when no slot qualifies it resets `_TRY`
of the OK slots and boots menu entry 0. So every boot is a one-shot try until userspace resets
`_TRY` (RAUC's `mark-good`): the daemon must confirm each healthy boot with commit(booted)
(`Capabilities.confirm_each_boot`).

Every change is ONE `grub-editenv FILE set k=v ...` call (grub-editenv rewrites the 1024-byte
block in place, so a single call is one write of one sector-sized block), skipped when nothing
changes, then re-read and checked. The agent variable `ab_trial` (ignored by grub.cfg) tells an
armed trial from a committed slot, because both look like `ORDER="B A" B_OK=1 B_TRY=0`.

`grub-editenv FILE list` prints nothing and exits 0 for a missing FILE, and `set` would create
it: the backend refuses to write a missing env file and self_check reports it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from agent.slots.base import (
    BackendError,
    BootObservation,
    Capabilities,
    SlotHealth,
    VerifiedBackend,
    run_tool,
    tool_missing,
)
from agent.slots.options import (
    Option,
    check_slot_table,
    path,
    slot_table,
    string,
)

TRIAL_VAR: Final = "ab_trial"
BLOCK_HEADER: Final = b"# GRUB Environment Block\n"
BLOCK_SIZE: Final = 1024

OPTIONS: Final = {
    "grubenv": Option(path, Path("/boot/grub/grubenv"), "the GRUB environment block"),
    "grub_editenv": Option(string, "grub-editenv", "grub-editenv binary"),
    "slot_values": Option(slot_table, {}, "slot -> bootname used in ORDER and variable names"),
    "cmdline": Option(path, Path("/proc/cmdline"), "kernel command line file"),
    "cmdline_parameter": Option(string, "rauc.slot", "kernel parameter naming the slot"),
}


class GrubBackend(VerifiedBackend):
    name = "grub"
    OPTIONS = OPTIONS

    def _configure(self) -> None:
        check_slot_table(self.name, "slot_values", self.opts["slot_values"], self.slots)
        self.values = {slot: self.opts["slot_values"].get(slot, slot) for slot in self.slots}
        self.by_value = {value: slot for slot, value in self.values.items()}
        self.envfile: Path = self.opts["grubenv"]

    def capabilities(self) -> Capabilities:
        return Capabilities(
            trial_attempts=1, persistent_bad_mark=True, atomic_switch=True, confirm_each_boot=True
        )

    def read_env(self) -> dict[str, str]:
        """All variables; raises BackendError when the env file is missing or invalid."""
        if not self.envfile.is_file():
            raise BackendError(f"grub: environment block {self.envfile} does not exist")
        out = run_tool([self.opts["grub_editenv"], str(self.envfile), "list"], what="grub")
        env: dict[str, str] = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env[key] = value
        return env

    def _flag(self, env: Mapping[str, str], slot: str, suffix: str) -> bool:
        # grub.cfg's defaults before load_env: ORDER="A B", every _OK and _TRY 0
        try:
            return int(env.get(f"{self.values[slot]}_{suffix}", "0")) != 0
        except ValueError:
            return False

    def _order(self, env: Mapping[str, str]) -> list[str]:
        return env.get("ORDER", " ".join(self.values.values())).split()

    def observe(self) -> BootObservation:
        env = self.read_env()
        evidence = self._booted_from_cmdline(self.by_value)
        booted = evidence.booted
        order = self._order(env)
        trial = env.get(TRIAL_VAR, "")
        trial = trial if trial in self.slots else ""
        health: dict[str, SlotHealth] = {}
        for slot in self.slots:
            ok = self._flag(env, slot, "OK") and self.values[slot] in order
            tried = self._flag(env, slot, "TRY")
            if ok and slot == trial and (not tried or booted == slot):
                health[slot] = SlotHealth.TRIAL
            elif ok and (not tried or booted == slot):
                health[slot] = SlotHealth.GOOD  # booted and tried: awaiting the per-boot confirm
            else:
                health[slot] = SlotHealth.BAD
        candidates = [self.by_value[v] for v in order if v in self.by_value]
        primary = next(
            (
                s
                for s in candidates
                if s != trial and self._flag(env, s, "OK") and not self._flag(env, s, "TRY")
            ),
            "",
        )
        trial_active = bool(trial) and trial == booted and self._flag(env, trial, "TRY")
        return BootObservation(
            booted=booted,
            primary=primary,
            trial_active=trial_active,
            attempts_left=(0 if self._flag(env, trial, "TRY") else 1) if trial else None,
            health=health,
            raw={**env, **evidence.raw},
        )

    def _write(self, assignments: Mapping[str, str]) -> None:
        """One `grub-editenv set` call, skipped when every value is already in place."""
        env = self.read_env()  # also refuses a missing file, which `set` would create
        if all(env.get(key, "") == value for key, value in assignments.items()):
            return
        pairs = [f"{key}={value}" for key, value in assignments.items()]
        run_tool([self.opts["grub_editenv"], str(self.envfile), "set", *pairs], what="grub")

    def _new_order(self, env: Mapping[str, str], first: list[str]) -> str:
        rest = [v for v in self._order(env) if v not in first]
        return " ".join([*first, *rest])

    def _state(self, slot: str, ok: bool) -> dict[str, str]:
        name = self.values[slot]
        return {f"{name}_OK": "1" if ok else "0", f"{name}_TRY": "0"}

    def _do_mark_bad(self, slot: str, before: BootObservation) -> None:
        env = self.read_env()
        out = self._state(slot, ok=False)
        if env.get(TRIAL_VAR) == slot:
            out[TRIAL_VAR] = ""
        self._write(out)

    def _do_arm_trial(self, slot: str, before: BootObservation) -> None:
        env, other = self.read_env(), self.other(slot)
        order = self._new_order(env, [self.values[slot], self.values[other]])
        # the running slot is the fallback: make sure grub.cfg will pick it after the try
        self._write(
            {"ORDER": order, **self._state(slot, True), **self._state(other, True), TRIAL_VAR: slot}
        )

    def _do_abandon_trial(self, slot: str, before: BootObservation) -> None:
        env, other = self.read_env(), self.other(slot)
        order = self._new_order(env, [self.values[other]])
        self._write(
            {"ORDER": order, **self._state(slot, False), **self._state(other, True), TRIAL_VAR: ""}
        )

    def _do_commit(self, slot: str, before: BootObservation) -> None:
        env = self.read_env()
        order = self._new_order(env, [self.values[slot]])
        self._write({"ORDER": order, **self._state(slot, True), TRIAL_VAR: ""})

    def self_check(self) -> list[str]:
        if shutil.which(self.opts["grub_editenv"]) is None:
            return [tool_missing("grub", self.opts["grub_editenv"])]
        try:
            head = self.envfile.read_bytes()
        except OSError as exc:
            return [f"grub: cannot read {self.envfile}: {exc.strerror or exc}"]
        if not head.startswith(BLOCK_HEADER) or len(head) != BLOCK_SIZE:
            return [f"grub: {self.envfile} is not a {BLOCK_SIZE}-byte GRUB environment block"]
        try:
            env = self.read_env()
        except BackendError as exc:
            return [str(exc)]
        problems = []
        for name in ["ORDER"] + [f"{v}_OK" for v in self.values.values()]:
            if name not in env:
                problems.append(f"grub: {name} not set (grub.cfg's default makes it unbootable)")
        return problems + self._cmdline_problems(self.by_value)
