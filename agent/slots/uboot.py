"""The `uboot` backend: the U-Boot environment through libubootenv's fw_printenv / fw_setenv.

Every change is ONE `fw_setenv -c CONFIG -s -` script of `name=value` lines (libubootenv 0.3.2
silently ignores `name value` lines; `name=` deletes). With two copies in fw_env.config
libubootenv writes the inactive copy with a higher flag, so each change is atomic. The env is
then re-read and the post-condition checked (see base.VerifiedBackend). An unchanged env is not
rewritten, so repeating a verb costs no flash write.

Two variable schemes (option `scheme`):

- `rauc` (default): RAUC's `BOOT_ORDER` ("A B") and `BOOT_<bootname>_LEFT` (hex), as used by
  RAUC's example boot script, which decrements the first bootable slot's counter on EVERY boot.
  A slot is bootable when it is in BOOT_ORDER with attempts left. arm_trial(B) writes
  `BOOT_ORDER=B A BOOT_B_LEFT=<trial_attempts> BOOT_A_LEFT=<boot_attempts> ab_trial=B`; the agent
  variable `ab_trial` (ignored by the script) tells a trial from a committed slot. mark_bad drops
  the slot from BOOT_ORDER and zeroes its counter (as `rauc status mark-bad`). Because every
  boot counts, the daemon confirms each healthy boot with commit(booted)
  (`Capabilities.confirm_each_boot`).
- `mender`: `mender_boot_part` (option `slot_variable`; values from `slot_values`, by default
  the partition numbers of the slot devices), `upgrade_available`, `bootcount`, read by U-Boot's
  CONFIG_BOOTCOUNT_LIMIT/BOOTCOUNT_ENV with `bootlimit` and Mender's `altbootcmd` (which swaps
  the slot and clears upgrade_available once bootcount exceeds bootlimit). U-Boot has no bad
  mark here; the agent keeps one in the env variable `ab_bad` (persistent_bad_mark=False).

The booted slot comes from the kernel command line (`rauc.slot=` or `cmdline_parameter`),
cross-checked with `root=`; see agent/slots/cmdline.py.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from agent.slots.base import (
    BackendError,
    BootObservation,
    Capabilities,
    SlotHealth,
    VerifiedBackend,
    run_tool_full,
    tool_missing,
)
from agent.slots.options import (
    Option,
    boolean,
    check_slot_table,
    choice,
    integer,
    partition_number,
    path,
    slot_table,
    string,
)

TRIAL_VAR: Final = "ab_trial"
BAD_VAR: Final = "ab_bad"
DEFAULT_MARK: Final = "using default"  # libubootenv's stderr when the env could not be read

OPTIONS: Final = {
    "fw_env_config": Option(path, Path("/etc/fw_env.config"), "libubootenv config (-c)"),
    "fw_printenv": Option(string, "fw_printenv", "fw_printenv binary"),
    "fw_setenv": Option(string, "fw_setenv", "fw_setenv binary"),
    "scheme": Option(choice("rauc", "mender"), "rauc", "variable scheme"),
    "boot_attempts": Option(integer(1, 255), 3, "rauc: BOOT_x_LEFT of a good slot"),
    "trial_attempts": Option(integer(1, 255), 1, "rauc: BOOT_x_LEFT of a trial"),
    "slot_values": Option(slot_table, {}, "slot -> bootname / slot variable value"),
    "slot_variable": Option(string, "mender_boot_part", "mender: the slot variable"),
    "write_hex": Option(boolean, True, "mender: also write <slot_variable>_hex"),
    "cmdline": Option(path, Path("/proc/cmdline"), "kernel command line file"),
    "cmdline_parameter": Option(string, "rauc.slot", "kernel parameter naming the slot"),
    "require_redundant": Option(boolean, True, "self_check wants two env copies"),
    "canary": Option(string, None, "variable the boot script sets to 1 on each boot"),
}


class UBootBackend(VerifiedBackend):
    name = "uboot"
    OPTIONS = OPTIONS

    def _configure(self) -> None:
        check_slot_table(self.name, "slot_values", self.opts["slot_values"], self.slots)
        self.scheme: str = self.opts["scheme"]
        self.values: dict[str, str] = {
            slot: self.opts["slot_values"].get(slot) or self._default_value(slot)
            for slot in self.slots
        }
        self.by_value = {value: slot for slot, value in self.values.items()}

    def _default_value(self, slot: str) -> str:
        if self.scheme == "mender":
            number = partition_number(self.slots[slot])
            return str(number) if number is not None else slot
        return slot

    def capabilities(self) -> Capabilities:
        if self.scheme == "mender":
            return Capabilities(trial_attempts=1, persistent_bad_mark=False, atomic_switch=True)
        return Capabilities(
            trial_attempts=self.opts["trial_attempts"],
            persistent_bad_mark=True,
            atomic_switch=True,
            confirm_each_boot=True,
        )

    # --- reading -------------------------------------------------------------------------------

    def _config_entries(self) -> list[list[str]]:
        """The env copies listed in fw_env.config (device, offset, size, ...)."""
        text = self.opts["fw_env_config"].read_text(encoding="utf-8")
        lines = (line.split("#", 1)[0].split() for line in text.splitlines())
        return [fields for fields in lines if fields]

    def read_env(self) -> tuple[dict[str, str], bool]:
        """All variables, and whether libubootenv fell back to its default env."""
        argv = [self.opts["fw_printenv"], "-c", str(self.opts["fw_env_config"])]
        done = run_tool_full(argv, what="uboot")
        if done.returncode != 0:
            detail = done.stderr.strip() or done.stdout.strip()
            raise BackendError(f"uboot: {argv[0]} exited {done.returncode}: {detail}")
        env: dict[str, str] = {}
        for line in done.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env[key] = value
        return env, DEFAULT_MARK in done.stderr

    def observe(self) -> BootObservation:
        env, default = self.read_env()
        evidence = self._booted_from_cmdline(self.by_value)
        raw = {**env, **evidence.raw}
        if default:
            raw["_default_env"] = "1"
        view = _VIEWS[self.scheme](self, env, evidence.booted)
        return dataclasses.replace(view, raw=raw)

    def _rauc_view(self, env: Mapping[str, str], booted: str) -> BootObservation:
        order, left = self._rauc_order(env), self._rauc_left(env)
        trial = env.get(TRIAL_VAR, "")
        trial = trial if trial in self.slots else ""
        health: dict[str, SlotHealth] = {}
        for slot in self.slots:
            in_order = self.values[slot] in order
            if slot == trial and in_order and (left[slot] > 0 or booted == slot):
                health[slot] = SlotHealth.TRIAL
            elif in_order and left[slot] > 0:
                health[slot] = SlotHealth.GOOD
            else:
                health[slot] = SlotHealth.BAD
        candidates = [self.by_value[v] for v in order if v in self.by_value]
        primary = next((s for s in candidates if s != trial and left[s] > 0), "")
        return BootObservation(
            booted=booted,
            primary=primary,
            trial_active=bool(trial) and trial == booted,
            attempts_left=left[trial] if trial else None,
            health=health,
            raw={},
        )

    def _rauc_order(self, env: Mapping[str, str]) -> list[str]:
        # The boot script's default when BOOT_ORDER is unset; self_check reports that case.
        return env.get("BOOT_ORDER", " ".join(self.values.values())).split()

    def _rauc_left(self, env: Mapping[str, str]) -> dict[str, int]:
        left = {}
        for slot in self.slots:
            text = env.get(f"BOOT_{self.values[slot]}_LEFT", "3")
            try:
                left[slot] = int(text, 16)
            except ValueError:
                left[slot] = 0
        return left

    def _mender_view(self, env: Mapping[str, str], booted: str) -> BootObservation:
        part = self.by_value.get(env.get(self.opts["slot_variable"], ""), "")
        upgrade = env.get("upgrade_available") == "1"
        bad = set(env.get(BAD_VAR, "").split())
        limit, count = _int(env.get("bootlimit")), _int(env.get("bootcount"))
        if part and not upgrade and limit and count > limit:
            bad.add(self.other(part))  # altbootcmd ran: U-Boot gave up on the other slot
        health = {}
        for slot in self.slots:
            if slot in bad:
                health[slot] = SlotHealth.BAD
            elif upgrade and slot == part:
                health[slot] = SlotHealth.TRIAL
            else:
                health[slot] = SlotHealth.GOOD
        attempts = None
        if upgrade:
            attempts = max(limit - count, 0) if limit else None
        return BootObservation(
            booted=booted,
            primary=(self.other(part) if upgrade else part) if part else "",
            trial_active=upgrade and bool(part) and part == booted,
            attempts_left=attempts,
            health=health,
            raw={},
        )

    # --- writing -------------------------------------------------------------------------------

    def _write(self, assignments: Mapping[str, str]) -> None:
        """One fw_setenv script; skipped when the env already holds every value ("" = unset)."""
        env, _default = self.read_env()
        if all(env.get(key, "") == value for key, value in assignments.items()):
            return
        for key, value in assignments.items():
            if "\n" in value or "=" in key or not key:
                raise BackendError(f"uboot: refusing to write {key!r}={value!r}")
        script = "".join(f"{key}={value}\n" for key, value in assignments.items())
        argv = [self.opts["fw_setenv"], "-c", str(self.opts["fw_env_config"]), "-s", "-"]
        done = run_tool_full(argv, what="uboot", input_text=script)
        if done.returncode != 0:
            detail = done.stderr.strip() or done.stdout.strip()
            raise BackendError(f"uboot: fw_setenv failed ({done.returncode}): {detail}")

    def _left(self, slot: str, attempts: int) -> tuple[str, str]:
        return f"BOOT_{self.values[slot]}_LEFT", format(attempts, "x")

    def _order(self, env: Mapping[str, str], first: list[str], drop: list[str]) -> str:
        rest = [v for v in self._rauc_order(env) if v not in first and v not in drop]
        return " ".join([*first, *rest])

    def _slot_assign(self, slot: str) -> dict[str, str]:
        value = self.values[slot]
        out = {self.opts["slot_variable"]: value}
        if self.opts["write_hex"] and value.isdigit():
            out[self.opts["slot_variable"] + "_hex"] = format(int(value), "x")
        return out

    def _bad_list(self, env: Mapping[str, str], add: str = "", remove: str = "") -> str:
        bad = (set(env.get(BAD_VAR, "").split()) | {add}) - {remove, ""}
        return " ".join(sorted(bad))

    def _plan(self, op: str, slot: str, before: BootObservation) -> dict[str, str]:
        env, _ = self.read_env()
        return _PLANS[self.scheme, op](self, env, slot)

    def _rauc_mark_bad(self, env: Mapping[str, str], slot: str) -> dict[str, str]:
        out = {"BOOT_ORDER": self._order(env, [], [self.values[slot]])}
        out.update([self._left(slot, 0)])
        if env.get(TRIAL_VAR) == slot:
            out[TRIAL_VAR] = ""
        return out

    def _rauc_abandon(self, env: Mapping[str, str], slot: str) -> dict[str, str]:
        """abandon: the slot is bad, the other one first with attempts left."""
        other = self.other(slot)
        out = {"BOOT_ORDER": self._order(env, [self.values[other]], [self.values[slot]])}
        out.update([self._left(slot, 0)])
        if self._rauc_left(env)[other] == 0:
            out.update([self._left(other, self.opts["boot_attempts"])])
        out[TRIAL_VAR] = ""
        return out

    def _rauc_arm(self, env: Mapping[str, str], slot: str) -> dict[str, str]:
        other = self.other(slot)
        out = {"BOOT_ORDER": self._order(env, [self.values[slot], self.values[other]], [])}
        out.update([self._left(slot, self.opts["trial_attempts"])])
        out.update([self._left(other, self.opts["boot_attempts"])])
        out[TRIAL_VAR] = slot
        return out

    def _rauc_commit(self, env: Mapping[str, str], slot: str) -> dict[str, str]:
        out = {"BOOT_ORDER": self._order(env, [self.values[slot]], [])}
        out.update([self._left(slot, self.opts["boot_attempts"])])
        out[TRIAL_VAR] = ""
        return out

    def _mender_mark_bad(self, env: Mapping[str, str], slot: str) -> dict[str, str]:
        out = {BAD_VAR: self._bad_list(env, add=slot)}
        if self.by_value.get(env.get(self.opts["slot_variable"], "")) == slot:
            out.update(self._slot_assign(self.other(slot)))
            out.update(upgrade_available="0", bootcount="0")
        return out

    def _mender_abandon(self, env: Mapping[str, str], slot: str) -> dict[str, str]:
        out = {BAD_VAR: self._bad_list(env, add=slot), **self._slot_assign(self.other(slot))}
        out.update(upgrade_available="0", bootcount="0")
        return out

    def _mender_arm(self, env: Mapping[str, str], slot: str) -> dict[str, str]:
        out = {BAD_VAR: self._bad_list(env, remove=slot), **self._slot_assign(slot)}
        out.update(upgrade_available="1", bootcount="0")
        return out

    def _mender_commit(self, env: Mapping[str, str], slot: str) -> dict[str, str]:
        out = {BAD_VAR: self._bad_list(env, remove=slot), **self._slot_assign(slot)}
        out.update(upgrade_available="0", bootcount="0")
        return out

    def _do_mark_bad(self, slot: str, before: BootObservation) -> None:
        self._write(self._plan("mark_bad", slot, before))

    def _do_arm_trial(self, slot: str, before: BootObservation) -> None:
        self._write(self._plan("arm_trial", slot, before))

    def _do_abandon_trial(self, slot: str, before: BootObservation) -> None:
        self._write(self._plan("abandon_trial", slot, before))

    def _do_commit(self, slot: str, before: BootObservation) -> None:
        self._write(self._plan("commit", slot, before))

    # --- self check ----------------------------------------------------------------------------

    def self_check(self) -> list[str]:
        problems = [
            tool_missing("uboot", tool)
            for tool in (self.opts["fw_printenv"], self.opts["fw_setenv"])
            if shutil.which(tool) is None
        ]
        config = self.opts["fw_env_config"]
        try:
            entries = self._config_entries()
        except OSError as exc:
            return [*problems, f"uboot: cannot read {config}: {exc.strerror or exc}"]
        if not entries:
            problems.append(f"uboot: {config} lists no environment")
        elif len(entries) < 2 and self.opts["require_redundant"]:
            problems.append(
                f"uboot: {config} lists one env copy; a redundant env (two copies) is needed for "
                "atomic changes (set require_redundant = false to accept)"
            )
        for number, fields in enumerate(entries, 1):
            if not Path(fields[0]).exists():
                problems.append(f"uboot: env copy {number}: {fields[0]} does not exist")
        if problems:
            return problems
        try:
            env, default = self.read_env()
        except BackendError as exc:
            return [f"{exc} (environment never initialised or fw_env.config wrong?)"]
        if default:
            problems.append(
                "uboot: fw_printenv fell back to the default environment: U-Boot never saved its "
                f"env where {config} points"
            )
        problems += [f"uboot: {p}" for p in _REQUIRED[self.scheme](self, env)]
        canary = self.opts["canary"]
        if canary and env.get(canary) != "1":
            problems.append(f"uboot: canary {canary}={env.get(canary, '')!r}, expected 1")
        return problems + self._cmdline_problems(self.by_value)

    def _rauc_required(self, env: Mapping[str, str]) -> list[str]:
        missing = ["BOOT_ORDER"] if "BOOT_ORDER" not in env else []
        return [f"{name} not set (has the boot script ever saved the env?)" for name in missing]

    def _mender_required(self, env: Mapping[str, str]) -> list[str]:
        problems = []
        if _int(env.get("bootlimit")) < 1:
            problems.append("bootlimit not set: U-Boot would never fall back from a failed trial")
        for name in ("upgrade_available", "bootcount"):
            if name not in env:
                problems.append(f"{name} not set (U-Boot built without Mender's boot code?)")
        if env.get(self.opts["slot_variable"], "") not in self.by_value:
            value = env.get(self.opts["slot_variable"], "")
            problems.append(f"{self.opts['slot_variable']}={value!r} is neither slot {self.values}")
        return problems


def _int(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return 0


View = Callable[[UBootBackend, Mapping[str, str], str], BootObservation]
Plan = Callable[[UBootBackend, Mapping[str, str], str], dict[str, str]]

_VIEWS: Final[Mapping[str, View]] = {
    "rauc": UBootBackend._rauc_view,
    "mender": UBootBackend._mender_view,
}
_REQUIRED: Final[Mapping[str, Callable[[UBootBackend, Mapping[str, str]], list[str]]]] = {
    "rauc": UBootBackend._rauc_required,
    "mender": UBootBackend._mender_required,
}
_PLANS: Final[Mapping[tuple[str, str], Plan]] = {
    ("rauc", "mark_bad"): UBootBackend._rauc_mark_bad,
    ("rauc", "arm_trial"): UBootBackend._rauc_arm,
    ("rauc", "abandon_trial"): UBootBackend._rauc_abandon,
    ("rauc", "commit"): UBootBackend._rauc_commit,
    ("mender", "mark_bad"): UBootBackend._mender_mark_bad,
    ("mender", "arm_trial"): UBootBackend._mender_arm,
    ("mender", "abandon_trial"): UBootBackend._mender_abandon,
    ("mender", "commit"): UBootBackend._mender_commit,
}
