"""The boot-slot contract every bootloader backend implements.

The daemon owns the update transaction (journal, download, verification, reporting); a backend
only reads and flips the bootloader's state. Every mutation is a single write on the medium where
the bootloader allows it, is idempotent (safe to re-run after a crash) and is read back: the
backend calls `observe()` after writing and raises `BackendError` when the post-condition does
not hold, so a tool that exits 0 but drops the write is caught.

Slot names are the bootloader's own ("A"/"B" for U-Boot and GRUB in RAUC's scheme, the
partition numbers' names for tryboot); the daemon never invents them.
"""

from __future__ import annotations

import dataclasses
import enum
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class SlotHealth(enum.StrEnum):
    GOOD = "good"  # eligible for a normal boot or as the fallback
    BAD = "bad"  # the bootloader will not pick it, and the daemon never arms it
    TRIAL = "trial"  # armed for a limited trial boot (one-shot or N attempts)
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class Capabilities:
    trial_attempts: int  # 1: one-shot (tryboot, grub next-entry); N: U-Boot boot counter
    persistent_bad_mark: bool  # can the bootloader itself refuse a slot?
    atomic_switch: bool  # arm and commit each land in one medium write


@dataclasses.dataclass(frozen=True)
class BootObservation:
    """What the bootloader and the running kernel say, read without side effects."""

    booted: str  # the slot the running system came from (kernel command line, device tree)
    primary: str  # the slot a plain power-on would boot now
    trial_active: bool  # this boot is a trial boot of `booted`
    attempts_left: int | None  # trial attempts left, where the bootloader counts them
    health: Mapping[str, SlotHealth]
    raw: Mapping[str, str]  # raw variables / properties, logged with every transition

    def other_than(self, slot: str) -> str:
        """The other slot of an A/B pair."""
        others = [name for name in self.health if name != slot]
        if len(others) != 1:
            raise BackendError(f"expected exactly two slots, have {sorted(self.health)}")
        return others[0]


class BackendError(Exception):
    """A bootloader operation failed or its read-back did not show the intended state."""


class BootBackend(Protocol):
    """The verbs the updater needs. Each mutation is idempotent and verified by `observe()`."""

    name: str
    slots: Mapping[str, Path]  # slot name -> device or file the image is written to

    def capabilities(self) -> Capabilities: ...

    def self_check(self) -> list[str]:
        """Problems that make updates unsafe (tool missing, default env, no redundant copy).

        An empty list means the backend can work; the daemon refuses updates otherwise.
        """
        ...

    def observe(self) -> BootObservation: ...

    def mark_bad(self, slot: str) -> None:
        """Make `slot` unbootable. Called before the first byte is written to it."""
        ...

    def arm_trial(self, slot: str) -> None:
        """Let the next boot (only) try `slot`; the primary slot is unchanged."""
        ...

    def disarm_trial(self, slot: str) -> None:
        """Undo `arm_trial` before the reboot happened (cancel, gate timeout)."""
        ...

    def commit(self, slot: str) -> None:
        """Make `slot` the primary slot. Only from a verified trial boot of `slot`."""
        ...

    def abandon_trial(self, slot: str) -> None:
        """Health failed: the next plain boot returns to the other slot, `slot` marked bad."""
        ...

    def reboot_argument(self) -> str | None:
        """An argument the reboot must carry to start the trial (tryboot: "0 tryboot")."""
        ...


def run_tool(argv: Sequence[str], *, what: str, input_text: str | None = None) -> str:
    """Run a bootloader tool; return stdout, or raise BackendError naming the tool and stderr."""
    try:
        completed = subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as exc:
        raise BackendError(f"{what}: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"{what}: {argv[0]} timed out") from exc
    if completed.returncode != 0:
        detail = completed.stderr.strip() or completed.stdout.strip()
        raise BackendError(f"{what}: {argv[0]} exited {completed.returncode}: {detail}")
    return completed.stdout


BackendOptions = Mapping[str, Any]
