"""The `rpi-tryboot` backend: Raspberry Pi firmware A/B with autoboot.txt and `reboot "0 tryboot"`.

The firmware reads `autoboot.txt` (max 512 bytes) on the first FAT partition:

    [all]
    tryboot_a_b=1
    boot_partition=2
    [tryboot]
    boot_partition=3

A plain boot uses `[all] boot_partition` (the primary). `reboot "0 tryboot"` sets a one-shot flag
that the firmware clears BEFORE it boots `[tryboot] boot_partition`, so any reset afterwards
returns to the primary: exactly one attempt, no counter. The firmware reports what it did in the
device tree: `<root>/proc/device-tree/chosen/bootloader/partition` and `.../tryboot`
(big-endian u32).

Layout invariant kept by this backend: `[tryboot]` always names the non-primary slot. Arming
therefore writes nothing to FAT (`reboot_argument()` returns "0 tryboot"); the only FAT write is
commit, which swaps the two `boot_partition` values.

The firmware has no bad mark (persistent_bad_mark=False): bad marks and the armed trial are an
agent-side record, `state_file` (JSON, atomic), which `observe()` merges with the firmware's
view. Nothing stops the firmware from trying a "bad" slot if someone else reboots with
"0 tryboot"; the daemon only guarantees never to arm one.

autoboot.txt is reached either as a file on the mounted boot partition (`autoboot_txt`,
rewritten as temp file + fsync + rename + fsync dir) or, with `fat_image`, on an unmounted FAT
partition or image through mtools (mcopy to AUTOBOOT.NEW, then mren over autoboot.txt). FAT
has no crash-atomic rename in either case; the new content is complete before the switch and
is read back after it.
"""

from __future__ import annotations

import shutil
import tempfile
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
    partition_number,
    path,
    slot_table,
    string,
)

MAX_SIZE: Final = 512
BOOTLOADER_DT: Final = "proc/device-tree/chosen/bootloader"
OPTIONS: Final = {
    "autoboot_txt": Option(path, Path("/boot/firmware/autoboot.txt"), "on the mounted FAT"),
    "fat_image": Option(path, None, "unmounted FAT partition/image, used through mtools"),
    "mcopy": Option(string, "mcopy", "mtools binary"),
    "mtype": Option(string, "mtype", "mtools binary"),
    "mren": Option(string, "mren", "mtools binary"),
    "root": Option(path, Path("/"), "root under which proc/device-tree is read"),
    "partitions": Option(slot_table, {}, "slot -> partition number (default: from the device)"),
    "state_file": Option(path, None, "agent-side record (default: <state dir>/tryboot.json)"),
}

Sections = dict[str, list[list[str]]]  # section -> [[key, value], ...] in file order


def parse_autoboot(text: str) -> Sections:
    """Sections of autoboot.txt; lines before any section header belong to [all]."""
    sections: Sections = {}
    current = "all"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections.setdefault(current, []).append([key.strip(), value.strip()])
    return sections


def render_autoboot(sections: Sections) -> str:
    return "".join(
        f"[{name}]\n" + "".join(f"{key}={value}\n" for key, value in items)
        for name, items in sections.items()
    )


def get(sections: Sections, section: str, key: str) -> str | None:
    values = [value for k, value in sections.get(section, []) if k == key]
    return values[-1] if values else None


def put(sections: Sections, section: str, key: str, value: str) -> None:
    items = sections.setdefault(section, [])
    for item in items:
        if item[0] == key:
            item[1] = value
            return
    items.append([key, value])


class TrybootBackend(VerifiedBackend):
    name = "rpi-tryboot"
    OPTIONS = OPTIONS

    def _configure(self) -> None:
        check_slot_table(self.name, "partitions", self.opts["partitions"], self.slots)
        self.partitions: dict[str, str] = {}
        for slot, device in self.slots.items():
            number = self.opts["partitions"].get(slot) or partition_number(device)
            if number is None:
                raise BackendError(
                    f"{self.name}: cannot tell the partition number of {device}; "
                    "set [slots.options] partitions = { A = 2, B = 3 }"
                )
            self.partitions[slot] = str(int(number))
        self.by_partition = {number: slot for slot, number in self.partitions.items()}
        self.state_file: Path = self.opts["state_file"] or self.state_dir / "tryboot.json"
        self.dt = self.opts["root"] / BOOTLOADER_DT

    def capabilities(self) -> Capabilities:
        return Capabilities(trial_attempts=1, persistent_bad_mark=False, atomic_switch=True)

    # --- autoboot.txt access -------------------------------------------------------------------

    def _image_args(self) -> list[str]:
        return ["-i", str(self.opts["fat_image"])]

    def read_autoboot(self) -> str:
        if self.opts["fat_image"] is None:
            try:
                text: str = self.opts["autoboot_txt"].read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                where = self.opts["autoboot_txt"]
                raise BackendError(f"{self.name}: cannot read {where}: {exc}") from exc
            return text
        argv = [self.opts["mtype"], *self._image_args(), "::/autoboot.txt"]
        return run_tool(argv, what=self.name)

    def write_autoboot(self, text: str) -> None:
        """Replace autoboot.txt with `text` and read it back; raises BackendError."""
        data = text.encode("ascii")
        if len(data) > MAX_SIZE:
            raise BackendError(f"{self.name}: autoboot.txt would be {len(data)} > {MAX_SIZE} bytes")
        if self.opts["fat_image"] is None:
            try:
                durable.atomic_write_bytes(self.opts["autoboot_txt"], data, mode=0o644)
            except OSError as exc:
                raise BackendError(f"{self.name}: cannot write autoboot.txt: {exc}") from exc
        else:
            with tempfile.NamedTemporaryFile("wb", suffix=".txt") as tmp:
                tmp.write(data)
                tmp.flush()
                image = self._image_args()
                run_tool(
                    [self.opts["mcopy"], "-o", *image, tmp.name, "::/AUTOBOOT.NEW"], what=self.name
                )
                # a crash here leaves the old autoboot.txt and a complete AUTOBOOT.NEW
                run_tool(
                    [self.opts["mren"], "-o", *image, "::/AUTOBOOT.NEW", "::/autoboot.txt"],
                    what=self.name,
                )
        if self.read_autoboot() != text:
            raise BackendError(f"{self.name}: autoboot.txt read back differs from what was written")

    # --- agent record and device tree ----------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        try:
            doc = durable.read_json(self.state_file)
        except durable.StateFileError as exc:
            raise BackendError(f"{self.name}: {exc}") from exc
        doc = doc or {}
        return {"armed": doc.get("armed"), "bad": sorted(set(doc.get("bad", [])))}

    def _save_record(self, armed: str | None, bad: set[str]) -> None:
        new = {"armed": armed, "bad": sorted(bad)}
        if new != self._record():
            durable.atomic_write_json(self.state_file, {"version": 1, **new})

    def _dt_u32(self, prop: str) -> int | None:
        try:
            data = (self.dt / prop).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendError(f"{self.name}: cannot read {self.dt / prop}: {exc}") from exc
        if len(data) != 4:
            raise BackendError(f"{self.name}: {self.dt / prop} is {len(data)} bytes, expected 4")
        return int.from_bytes(data, "big")

    def observe(self) -> BootObservation:
        sections = parse_autoboot(self.read_autoboot())
        record = self._record()
        partition, tryboot = self._dt_u32("partition"), self._dt_u32("tryboot")
        booted = self.by_partition.get(str(partition), "")
        primary = self.by_partition.get(get(sections, "all", "boot_partition") or "", "")
        try_slot = self.by_partition.get(get(sections, "tryboot", "boot_partition") or "", "")
        in_trial = tryboot == 1 and bool(booted) and booted == try_slot and booted != primary
        health = {}
        for slot in self.slots:
            if slot in record["bad"]:
                health[slot] = SlotHealth.BAD
            elif (record["armed"] == slot and try_slot == slot) or (in_trial and booted == slot):
                health[slot] = SlotHealth.TRIAL
            else:
                health[slot] = SlotHealth.GOOD
        raw = {
            f"autoboot.{section}.{key}": value
            for section, items in sections.items()
            for key, value in items
        }
        raw.update(
            {
                "dt.partition": "" if partition is None else str(partition),
                "dt.tryboot": "" if tryboot is None else str(tryboot),
                "dt.pm_rsts": _hex_or_empty(self._dt_u32("pm_rsts")),  # reset cause evidence
                "agent.armed": record["armed"] or "",
                "agent.bad": " ".join(record["bad"]),
            }
        )
        return BootObservation(
            booted=booted,
            primary=primary,
            trial_active=in_trial,
            attempts_left=0 if in_trial else (1 if record["armed"] else None),
            health=health,
            raw=raw,
        )

    def reboot_argument(self) -> str | None:
        """ "0 tryboot" while a trial is armed and not yet running, else None."""
        armed = self._record()["armed"]
        booted = self.by_partition.get(str(self._dt_u32("partition")), "")
        return "0 tryboot" if armed and armed != booted else None

    # --- mutations -----------------------------------------------------------------------------

    def _layout(self, primary: str) -> None:
        """Make `primary` the [all] partition and the other slot the [tryboot] one."""
        text = self.read_autoboot()
        sections = parse_autoboot(text)
        put(sections, "all", "tryboot_a_b", "1")
        put(sections, "all", "boot_partition", self.partitions[primary])
        put(sections, "tryboot", "boot_partition", self.partitions[self.other(primary)])
        if parse_autoboot(text) != sections:  # only a real change touches the FAT
            self.write_autoboot(render_autoboot(sections))

    def _do_mark_bad(self, slot: str, before: BootObservation) -> None:
        record = self._record()
        if before.primary == slot:
            self._layout(self.other(slot))
        armed = None if record["armed"] == slot else record["armed"]
        self._save_record(armed, set(record["bad"]) | {slot})

    def _do_arm_trial(self, slot: str, before: BootObservation) -> None:
        self._layout(self.other(slot))
        self._save_record(slot, set(self._record()["bad"]) - {slot})

    def _do_abandon_trial(self, slot: str, before: BootObservation) -> None:
        self._layout(self.other(slot))
        self._save_record(None, set(self._record()["bad"]) | {slot})

    def _do_commit(self, slot: str, before: BootObservation) -> None:
        self._layout(slot)  # the one FAT write of an update: swap the boot partitions
        self._save_record(None, set(self._record()["bad"]) - {slot})

    def self_check(self) -> list[str]:
        problems = []
        if self.opts["fat_image"] is not None:
            for tool in ("mcopy", "mtype", "mren"):
                if shutil.which(self.opts[tool]) is None:
                    problems.append(tool_missing(self.name, self.opts[tool]))
            if not self.opts["fat_image"].exists():
                problems.append(f"{self.name}: FAT image {self.opts['fat_image']} does not exist")
        if problems:
            return problems
        try:
            text = self.read_autoboot()
        except BackendError as exc:
            return [str(exc)]
        if len(text.encode("ascii", "replace")) > MAX_SIZE:
            problems.append(f"{self.name}: autoboot.txt is larger than {MAX_SIZE} bytes")
        sections = parse_autoboot(text)
        if get(sections, "all", "tryboot_a_b") != "1":
            problems.append(f"{self.name}: autoboot.txt lacks [all] tryboot_a_b=1")
        parts = {get(sections, "all", "boot_partition"), get(sections, "tryboot", "boot_partition")}
        if parts != set(self.partitions.values()):
            problems.append(
                f"{self.name}: autoboot.txt boot_partition values {sorted(map(str, parts))} are "
                f"not the slots' partitions {sorted(self.partitions.values())}"
            )
        try:
            partition = self._dt_u32("partition")
        except BackendError as exc:
            return [*problems, str(exc)]
        if partition is None:
            problems.append(
                f"{self.name}: {self.dt}/partition missing (not booted by RPi firmware?)"
            )
        elif str(partition) not in self.by_partition:
            problems.append(f"{self.name}: booted partition {partition} is neither slot")
        return problems


def _hex_or_empty(value: int | None) -> str:
    return "" if value is None else f"0x{value:08x}"
