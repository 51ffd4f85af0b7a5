"""The boot-slot contract every bootloader backend implements.

The daemon owns the update transaction (journal, download, verification, reporting); a backend
only reads and flips the bootloader's state. Every mutation is a single write on the medium where
the bootloader allows it, is idempotent (safe to re-run after a crash) and is read back: the
backend calls `observe()` after writing and raises `BackendError` when the post-condition does
not hold, so a tool that exits 0 but drops the write is caught. `VerifiedBackend` does that
checking once for all backends; they only implement the raw writes.

Slot names are the keys of `[slots] devices` ("A"/"B"); backends map them to the bootloader's
own names (RAUC bootnames, partition numbers, `mender_boot_part` values).

Meaning of the observation fields, the same for every backend:

- `booted`: the slot the running kernel came from ("" when it is neither slot, e.g. a rescue
  system);
- `primary`: the slot a plain power-on boots once an armed trial is used up or ignored, i.e. the
  committed choice. Bootloaders that count every boot (RAUC's U-Boot and GRUB scripts) move it
  away from an unconfirmed slot: see `Capabilities.confirm_each_boot`;
- `trial_active`: this boot is a trial boot of `booted` that has not been committed;
- `health[slot]`: BAD (never booted by a plain power-on, never armed by the daemon), TRIAL (armed,
  or being tried), GOOD (eligible).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

from agent import crashpoints
from agent.slots import cmdline
from agent.slots.errors import BackendConfigError as BackendConfigError  # re-exported
from agent.slots.errors import BackendError as BackendError  # re-exported
from agent.slots.options import parse_options
from agent.slots.pair import pair_problem


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
    # The bootloader counts every boot, not only trials (RAUC's U-Boot and GRUB scripts): after
    # each healthy boot outside a trial the daemon must call commit(booted) - RAUC's
    # `mark-good booted` - or a later power-on falls back to the other slot.
    confirm_each_boot: bool = False


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
        problem = pair_problem(self.health)
        if problem:
            raise BackendError(problem)
        return next(name for name in self.health if name != slot)


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
        """Let the next boot (only) try `slot`; the running slot becomes/stays the primary."""
        ...

    def commit(self, slot: str) -> None:
        """Make the running `slot` the primary: after its trial boot, or as the per-boot confirm."""
        ...

    def abandon_trial(self, slot: str) -> None:
        """Health failed: the next plain boot returns to the other slot, `slot` marked bad."""
        ...

    def reboot_argument(self) -> str | None:
        """An argument the reboot must carry to start the trial (tryboot: "0 tryboot")."""
        ...


# --- post-conditions: one checker per verb, returning a problem or None --------------------------

Check = Callable[[BootObservation, str], str | None]


def _health(obs: BootObservation, slot: str) -> SlotHealth:
    return obs.health.get(slot, SlotHealth.UNKNOWN)


def _after_mark_bad(obs: BootObservation, slot: str) -> str | None:
    if _health(obs, slot) != SlotHealth.BAD:
        return f"health[{slot}] is {_health(obs, slot)}, expected bad"
    if obs.primary == slot:
        return f"primary is still {slot}"
    return None


def _after_arm(obs: BootObservation, slot: str) -> str | None:
    if _health(obs, slot) != SlotHealth.TRIAL:
        return f"health[{slot}] is {_health(obs, slot)}, expected trial"
    if obs.primary != obs.other_than(slot):
        return f"primary is {obs.primary!r}, expected {obs.other_than(slot)!r}"
    return None


def _after_commit(obs: BootObservation, slot: str) -> str | None:
    if obs.primary != slot:
        return f"primary is {obs.primary!r}, expected {slot!r}"
    if _health(obs, slot) != SlotHealth.GOOD:
        return f"health[{slot}] is {_health(obs, slot)}, expected good"
    if obs.trial_active:
        return "the trial is still active"
    return None


POSTCONDITIONS: Final[Mapping[str, Check]] = {
    "mark_bad": _after_mark_bad,
    "arm_trial": _after_arm,
    "abandon_trial": _after_mark_bad,
    "commit": _after_commit,
}


def _before_commit(obs: BootObservation, slot: str) -> str | None:
    if obs.booted != slot:
        return f"refusing to commit {slot}: the running slot is {obs.booted or 'unknown'!r}"
    return None


def _before_arm(obs: BootObservation, slot: str) -> str | None:
    if obs.booted == slot:
        return f"refusing to arm a trial of the running slot {slot}"
    return None


def _before_mark_bad(obs: BootObservation, slot: str) -> str | None:
    if obs.booted == slot:
        return f"refusing to mark the running slot {slot} bad (use abandon_trial)"
    return None


PRECONDITIONS: Final[Mapping[str, Check]] = {
    "mark_bad": _before_mark_bad,
    "arm_trial": _before_arm,
    "commit": _before_commit,
}


class VerifiedBackend(abc.ABC):
    """Implements the mutating verbs as: observe, check pre-condition, write, observe, check.

    Subclasses implement `observe()` and the `_do_*` writes; each `_do_*` gets the observation
    taken just before and must be idempotent (skip the write when nothing changes).
    """

    name: str = "?"
    slots: Mapping[str, Path]
    # The backend's `[slots.options]`: key -> options.Option(checker, default, help).
    OPTIONS: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self, devices: Mapping[str, Path], options: BackendOptions, state_dir: Path
    ) -> None:
        """Two slots, and the options checked against `OPTIONS` (defaults filled in) in
        `self.opts`; raises BackendConfigError naming the backend and the key."""
        problem = pair_problem(devices)
        if problem:
            raise BackendConfigError(f"slots backend {self.name!r}: {problem}")
        self.slots = {str(name): Path(path) for name, path in devices.items()}
        self.opts: dict[str, Any] = parse_options(self.name, self.OPTIONS, options)
        self.state_dir = state_dir
        self._configure()

    def _booted_from_cmdline(self, by_value: Mapping[str, str]) -> cmdline.CmdlineEvidence:
        """The booted slot named on the kernel command line (options `cmdline`,
        `cmdline_parameter`), by slot name or by the bootloader's value for it."""
        aliases = {**{slot: slot for slot in self.slots}, **by_value}
        try:
            return cmdline.booted_from_cmdline(
                self.opts["cmdline"], self.opts["cmdline_parameter"], self.slots, aliases
            )
        except OSError as exc:
            raise BackendError(f"{self.name}: cannot read {self.opts['cmdline']}: {exc}") from exc

    def _cmdline_problems(self, by_value: Mapping[str, str]) -> list[str]:
        """self_check's part for the command line: the booted slot must be readable there."""
        evidence = self._booted_from_cmdline(by_value)
        if evidence.problem:
            return [f"{self.name}: {evidence.problem}"]
        if not evidence.booted:
            return [f"{self.name}: booted slot unknown ({evidence.raw})"]
        return []

    @abc.abstractmethod
    def _configure(self) -> None:
        """What a backend derives from its options (slot tables, file paths); may raise
        BackendConfigError."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def self_check(self) -> list[str]: ...

    @abc.abstractmethod
    def observe(self) -> BootObservation: ...

    def reboot_argument(self) -> str | None:
        return None

    def other(self, slot: str) -> str:
        """The other slot of the pair."""
        return next(name for name in self.slots if name != slot)

    def mark_bad(self, slot: str) -> None:
        self._mutate("mark_bad", slot, self._do_mark_bad)

    def arm_trial(self, slot: str) -> None:
        self._mutate("arm_trial", slot, self._do_arm_trial)

    def commit(self, slot: str) -> None:
        self._mutate("commit", slot, self._do_commit)

    def abandon_trial(self, slot: str) -> None:
        self._mutate("abandon_trial", slot, self._do_abandon_trial)

    @abc.abstractmethod
    def _do_mark_bad(self, slot: str, before: BootObservation) -> None: ...

    @abc.abstractmethod
    def _do_arm_trial(self, slot: str, before: BootObservation) -> None: ...

    @abc.abstractmethod
    def _do_commit(self, slot: str, before: BootObservation) -> None: ...

    @abc.abstractmethod
    def _do_abandon_trial(self, slot: str, before: BootObservation) -> None: ...

    def _mutate(self, op: str, slot: str, write: Callable[[str, BootObservation], None]) -> None:
        if slot not in self.slots:
            raise BackendError(f"{self.name}: {op}: unknown slot {slot!r}", op=op)
        before = self.observe()
        precondition = PRECONDITIONS.get(op)
        refused = precondition(before, slot) if precondition else None
        if refused:
            raise BackendError(f"{self.name}: {op}: {refused}", op=op, raw_before=before.raw)
        write(slot, before)
        crashpoints.reached(f"{self.name} {op}({slot})")
        after = self.observe()
        problem = POSTCONDITIONS[op](after, slot)
        if problem:
            raise BackendError(
                f"{self.name}: {op}({slot}) not in effect after the write: {problem}",
                op=op,
                raw_before=before.raw,
                raw_after=after.raw,
            )


class SerializedBackend:
    """One call at a time into `inner`, whichever thread makes it.

    The daemon calls its backend from several threads (the update worker, the per-boot
    confirm, the loop thread's self_check for a new request). The env tools do not allow
    that: `grub-editenv` rewrites the block in place, so a read during a write sees "invalid
    environment block", and two read-modify-write cycles at once lose one write.
    """

    def __init__(self, inner: BootBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.slots = inner.slots
        self.lock = threading.RLock()

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def self_check(self) -> list[str]:
        with self.lock:
            return self.inner.self_check()

    def observe(self) -> BootObservation:
        with self.lock:
            return self.inner.observe()

    def mark_bad(self, slot: str) -> None:
        with self.lock:
            self.inner.mark_bad(slot)

    def arm_trial(self, slot: str) -> None:
        with self.lock:
            self.inner.arm_trial(slot)

    def commit(self, slot: str) -> None:
        with self.lock:
            self.inner.commit(slot)

    def abandon_trial(self, slot: str) -> None:
        with self.lock:
            self.inner.abandon_trial(slot)

    def reboot_argument(self) -> str | None:
        with self.lock:
            return self.inner.reboot_argument()


# The Debian package of each bootloader tool a backend runs, named when the tool is missing.
TOOL_PACKAGES: Final[Mapping[str, str]] = {
    "fw_printenv": "libubootenv-tool",
    "fw_setenv": "libubootenv-tool",
    "grub-editenv": "grub-common",
    "mcopy": "mtools",
    "mtype": "mtools",
    "mren": "mtools",
    "rauc": "rauc",
}


def tool_missing(what: str, tool: str) -> str:
    """`uboot: fw_printenv not found (apt-get install libubootenv-tool)`."""
    package = TOOL_PACKAGES.get(Path(tool).name)
    return f"{what}: {tool} not found" + (f" (apt-get install {package})" if package else "")


def run_tool_full(
    argv: Sequence[str], *, what: str, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a bootloader tool; return the completed process whatever its exit status.

    Raises BackendError only when the tool cannot be started or times out.
    """
    try:
        return subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as exc:
        raise BackendError(tool_missing(what, argv[0])) from exc
    except PermissionError as exc:
        raise BackendError(f"{what}: {argv[0]} not executable") from exc
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"{what}: {argv[0]} timed out") from exc


def run_tool(argv: Sequence[str], *, what: str, input_text: str | None = None) -> str:
    """Run a bootloader tool; return stdout, or raise BackendError naming the tool and stderr."""
    completed = run_tool_full(argv, what=what, input_text=input_text)
    if completed.returncode != 0:
        detail = completed.stderr.strip() or completed.stdout.strip()
        raise BackendError(f"{what}: {argv[0]} exited {completed.returncode}: {detail}")
    return completed.stdout


BackendOptions = Mapping[str, Any]
