"""The `rauc` backend: slot marking delegated to an installed RAUC through its CLI.

RAUC already drives the bootloader (its `system.conf` names it); this backend reads
`rauc status --output-format=json` (`booted` bootname, `boot_primary` slot name, and per slot
`bootname`, `device`, `state`, `boot_status` good/bad) and marks slots with
`rauc status mark-good|mark-bad|mark-active <slot>`. The agent still owns download,
verification, journal, health check and reporting.

RAUC has no separate trial: `mark-active` makes a slot primary with its boot attempts, and the
bootloader falls back when they run out. To tell an armed trial from a committed slot the
backend keeps an agent-side record (`state_file`, JSON, atomic) of the armed slot; while a slot
is armed, `observe().primary` is the other slot (the fallback), whatever RAUC calls primary.

Each verb is one or two `rauc` calls plus the record, so a change is not one medium write
(atomic_switch=False); every step is idempotent and the whole is re-read and checked. RAUC's own
U-Boot and GRUB scripts count every boot, hence confirm_each_boot (RAUC's `mark-good booted`;
harmless when a rauc-mark-good.service does it too).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from agent import durable
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
    integer,
    path,
    slot_table,
    string,
)

OPTIONS: Final = {
    "rauc_binary": Option(string, "rauc", "the rauc executable"),
    "conf": Option(path, None, "system.conf passed as --conf (default: RAUC's own)"),
    "slot_names": Option(slot_table, {}, "slot -> RAUC slot name such as rootfs.0"),
    "slot_class": Option(string, "rootfs", "RAUC slot class matched against the devices"),
    "trial_attempts": Option(integer(1, 255), 3, "boot-attempts-primary in system.conf"),
    "state_file": Option(path, None, "agent-side record (default: <state dir>/rauc.json)"),
}


class RaucBackend(VerifiedBackend):
    name = "rauc"
    OPTIONS = OPTIONS

    def _configure(self) -> None:
        check_slot_table(self.name, "slot_names", self.opts["slot_names"], self.slots)
        self.state_file: Path = self.opts["state_file"] or self.state_dir / "rauc.json"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            trial_attempts=self.opts["trial_attempts"],
            persistent_bad_mark=True,
            atomic_switch=False,
            confirm_each_boot=True,
        )

    def _rauc(self, *args: str) -> str:
        conf = [f"--conf={self.opts['conf']}"] if self.opts["conf"] else []
        return run_tool([self.opts["rauc_binary"], *conf, *args], what=self.name)

    def status(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """RAUC's status document and our slot name -> RAUC slot entry (with its "name")."""
        text = self._rauc("status", "--output-format=json")
        try:
            doc = json.loads(text)
            entries = {
                name: {**info, "name": name} for item in doc["slots"] for name, info in item.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"rauc: unexpected `rauc status` output: {exc}") from exc
        return doc, self._map(entries)

    def _map(self, entries: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        mapped: dict[str, dict[str, Any]] = {}
        for slot, device in self.slots.items():
            name = self.opts["slot_names"].get(slot)
            if name is None:
                name = next(
                    (
                        n
                        for n, e in entries.items()
                        if e.get("class") == self.opts["slot_class"]
                        and (_same(e.get("device"), device) or e.get("bootname") == slot)
                    ),
                    None,
                )
            if name is None or name not in entries:
                raise BackendError(
                    f"rauc: no RAUC slot for {slot} ({device}); RAUC has {sorted(entries)}; "
                    "set [slots.options] slot_names"
                )
            mapped[slot] = entries[name]
        return mapped

    def _armed(self) -> str | None:
        try:
            doc = durable.read_json(self.state_file)
        except durable.StateFileError as exc:
            raise BackendError(f"rauc: {exc}") from exc
        armed = (doc or {}).get("armed")
        return armed if armed in self.slots else None

    def _set_armed(self, slot: str | None) -> None:
        if self._armed() != slot:
            durable.atomic_write_json(self.state_file, {"version": 1, "armed": slot})

    def observe(self) -> BootObservation:
        doc, slots = self.status()
        armed = self._armed()
        booted = next((s for s, e in slots.items() if e.get("state") == "booted"), "")
        rauc_primary = next(
            (s for s, e in slots.items() if e["name"] == doc.get("boot_primary")), ""
        )
        health = {}
        for slot, entry in slots.items():
            if entry.get("boot_status") != "good":
                health[slot] = SlotHealth.BAD
            elif slot == armed:
                health[slot] = SlotHealth.TRIAL
            else:
                health[slot] = SlotHealth.GOOD
        trial = armed if armed is not None and health[armed] == SlotHealth.TRIAL else None
        primary = self.other(trial) if trial and rauc_primary == trial else rauc_primary
        raw = {"booted": str(doc.get("booted", "")), "boot_primary": str(doc.get("boot_primary"))}
        for entry in slots.values():
            raw[f"{entry['name']}.boot_status"] = str(entry.get("boot_status"))
            raw[f"{entry['name']}.state"] = str(entry.get("state"))
        raw["agent.armed"] = armed or ""
        return BootObservation(
            booted=booted,
            primary=primary,
            trial_active=trial is not None and trial == booted,
            attempts_left=None,
            health=health,
            raw=raw,
        )

    def _mark(self, state: str, slot: str) -> None:
        _, slots = self.status()
        self._rauc("status", f"mark-{state}", slots[slot]["name"])

    def _do_mark_bad(self, slot: str, before: BootObservation) -> None:
        if before.health[slot] != SlotHealth.BAD:
            self._mark("bad", slot)
        if self._armed() == slot:
            self._set_armed(None)

    def _do_arm_trial(self, slot: str, before: BootObservation) -> None:
        self._set_armed(slot)  # intent first: a crash before mark-active leaves the slot bad
        doc, slots = self.status()
        if doc.get("boot_primary") != slots[slot]["name"] or before.health[slot] == SlotHealth.BAD:
            self._mark("active", slot)

    def _do_abandon_trial(self, slot: str, before: BootObservation) -> None:
        if before.health[slot] != SlotHealth.BAD:
            self._mark("bad", slot)
        doc, slots = self.status()
        other = self.other(slot)
        if doc.get("boot_primary") != slots[other]["name"]:
            self._mark("active", other)
        self._set_armed(None)

    def _do_commit(self, slot: str, before: BootObservation) -> None:
        self._mark("good", slot)  # always: it also restores the boot attempts (per-boot confirm)
        doc, slots = self.status()
        if doc.get("boot_primary") != slots[slot]["name"]:
            self._mark("active", slot)
        self._set_armed(None)

    def self_check(self) -> list[str]:
        binary = self.opts["rauc_binary"]
        if shutil.which(binary) is None:
            return [tool_missing("rauc", binary)]
        try:
            doc, slots = self.status()
            self._armed()
        except BackendError as exc:
            return [str(exc)]
        problems = []
        if not any(e.get("state") == "booted" for e in slots.values()):
            problems.append(f"rauc: the booted slot ({doc.get('booted')!r}) is neither A/B slot")
        return problems


def _same(device: Any, slot_device: Path) -> bool:
    if not isinstance(device, str) or not device:
        return False
    return os.path.realpath(device) == os.path.realpath(slot_device)
