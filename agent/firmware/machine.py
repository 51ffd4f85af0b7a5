"""The update as one pure state machine: phases, the events that move them, and the rules.

Everything an update can do is in `TRANSITIONS`: read it top to bottom and you have the whole
flow of L01. `advance()` is the only way a job changes phase, and it refuses a move the table
does not have. Actions (download, verify, read back, arm, reboot, judge the trial) do I/O in
`runner.py` and return an `Event`; none of them writes the phase.

Two rules live here as code, because the product's one promise rests on them:

* **Arming needs proof** (`arming_refusal`): the trial is armed only when, in this run of this
  job, the signature was verified over a digest and the slot, read back past the page cache,
  hashed to that same digest. Proofs are never persisted, so a job resumed in any phase before
  the trial proves the slot again (`RESUME`).
* **Finished is final**: no row leaves FINISHED, so a request gets exactly one terminal status.

This module does no I/O and imports nothing from the daemon; tests drive it directly.
"""

# The transition table is aligned in columns, one row a line: wider than the line limit.
# ruff: noqa: E501
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from agent.ocpp.v16 import FirmwareStatus as Status


class Phase(enum.StrEnum):
    """Where a job is. The values are an on-disk API: never rename or reuse one."""

    DOWNLOAD_SCHEDULED = "download-scheduled"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"  # signature over the streamed digest, then the slot read back
    VERIFIED = "verified"  # signature good and the slot holds it: the image check runs
    INSTALL_SCHEDULED = "install-scheduled"  # waiting for installDateTime or the install gate
    INSTALLING = "installing"  # the trial is being armed
    REBOOTING = "rebooting"  # armed; the reboot is issued
    TRIAL = "trial"  # running from the new slot, not yet committed
    FINISHED = "finished"


class Event(enum.StrEnum):
    """What an action found out."""

    RETRIEVE_TIME = "retrieve-time"  # retrieveDateTime reached
    ATTEMPT_FAILED = "attempt-failed"  # a retryable download failure, attempts left
    DOWNLOAD_FAILED = "download-failed"  # not retryable, or the last attempt
    DOWNLOADED = "downloaded"  # the whole image is in the slot, digest known
    SIGNATURE_INVALID = "signature-invalid"
    SLOT_PROVEN = "slot-proven"  # signature valid and the slot reads back as that digest
    SLOT_REFUSED = "slot-refused"  # read-back mismatch, or the image check said no
    INSTALL_DEFERRED = "install-deferred"  # installDateTime ahead, or the gate closed
    INSTALL_STARTED = "install-started"  # time reached, gate open, slot proven
    TRIAL_ARMED = "trial-armed"
    ARM_FAILED = "arm-failed"
    BOOTED_TARGET = "booted-target"  # the running system came from the new slot
    FELL_BACK = "fell-back"  # the bootloader booted the old slot (power cut, hang, watchdog)
    COMMITTED = "committed"  # healthy trial, committed (or the bootloader already had)
    TRIAL_FAILED = "trial-failed"  # health failed in the trial; the old slot comes back
    CANCELLED = "cancelled"  # the charger's own stack cancelled it (local API), before arming
    GAVE_UP = "gave-up"  # the crash-loop breaker: too many restarts of this job
    INTERNAL_ERROR = "internal-error"  # a bug or an unexpected failure


@dataclasses.dataclass(frozen=True)
class Row:
    sources: frozenset[Phase]
    event: Event
    target: Phase
    status: Status | None  # what the CSMS is told on entering (for FINISHED: the outcome)
    why: str  # the requirement the row implements


def _row(sources: str, event: Event, target: Phase, status: Status | None, why: str) -> Row:
    return Row(frozenset(Phase(s) for s in sources.split()), event, target, status, why)


P, E, S = Phase, Event, Status
_BEFORE_REBOOT = "download-scheduled downloading verifying verified install-scheduled installing"
_PROVABLE = "verifying verified install-scheduled installing"

# fmt: off
TRANSITIONS: tuple[Row, ...] = (
    #     from                                event                to                    status announced                why
    _row("download-scheduled",               E.RETRIEVE_TIME,     P.DOWNLOADING,        S.DOWNLOADING,                  "L01.FR.13 wait for retrieveDateTime"),
    _row("downloading",                      E.ATTEMPT_FAILED,    P.DOWNLOADING,        S.DOWNLOADING,                  "retries + 1 attempts; a Downloading each"),
    _row("downloading",                      E.DOWNLOAD_FAILED,   P.FINISHED,           S.DOWNLOAD_FAILED,              "failed all attempts (2.0.1 L01.FR.30)"),
    _row("downloading",                      E.DOWNLOADED,        P.VERIFYING,          S.DOWNLOADED,                   "L01.FR.01 every new state"),
    _row("verifying",                        E.SIGNATURE_INVALID, P.FINISHED,           S.INVALID_SIGNATURE,            "L01.FR.03 + InvalidFirmwareSignature"),
    _row("verifying",                        E.SLOT_PROVEN,       P.VERIFIED,           S.SIGNATURE_VERIFIED,           "L01.FR.04 whole file; slot read back"),
    _row(_PROVABLE,                          E.SLOT_REFUSED,      P.FINISHED,           S.INSTALL_VERIFICATION_FAILED,  "slot or image check refused (§6.8)"),
    _row("verified",                         E.INSTALL_DEFERRED,  P.INSTALL_SCHEDULED,  S.INSTALL_SCHEDULED,            "L01.FR.16 installDateTime, L01.FR.34 gate"),
    _row("verified install-scheduled",       E.INSTALL_STARTED,   P.INSTALLING,         S.INSTALLING,                   "L01.FR.05/17, gate L01.FR.06"),
    _row("installing",                       E.TRIAL_ARMED,       P.REBOOTING,          S.INSTALL_REBOOTING,            "L01.FR.15 told before the reboot"),
    _row("installing",                       E.ARM_FAILED,        P.FINISHED,           S.INSTALLATION_FAILED,          "cannot arm (§6.8)"),
    _row("installing rebooting",             E.BOOTED_TARGET,     P.TRIAL,              None,                           "trial boot of the new slot"),
    _row("installing rebooting trial",       E.FELL_BACK,         P.FINISHED,           S.INSTALLATION_FAILED,          "bootloader fell back (§6.8)"),
    _row("trial",                            E.COMMITTED,         P.FINISHED,           S.INSTALLED,                    "L01.FR.10 + FirmwareUpdated (§8)"),
    _row("trial",                            E.TRIAL_FAILED,      P.FINISHED,           S.INSTALLATION_FAILED,          "unhealthy trial, old slot (§6.8)"),
    _row("download-scheduled downloading",   E.CANCELLED,         P.FINISHED,           S.DOWNLOAD_FAILED,              "cancelled by the charger's stack"),
    _row(_PROVABLE,                          E.CANCELLED,         P.FINISHED,           S.INSTALLATION_FAILED,          "cancelled by the charger's stack"),
    _row("download-scheduled downloading",   E.GAVE_UP,           P.FINISHED,           S.DOWNLOAD_FAILED,              "crash-loop breaker"),
    _row(_PROVABLE + " rebooting trial",     E.GAVE_UP,           P.FINISHED,           S.INSTALLATION_FAILED,          "crash-loop breaker; old slot"),
    _row(_BEFORE_REBOOT + " rebooting trial", E.INTERNAL_ERROR,   P.FINISHED,           S.INSTALLATION_FAILED,          "never stuck: a bug fails the job"),
)
# fmt: on

_TABLE: Mapping[tuple[Phase, Event], Row] = {
    (source, row.event): row for row in TRANSITIONS for source in row.sources
}
if len(_TABLE) != sum(len(row.sources) for row in TRANSITIONS):  # pragma: no cover
    raise AssertionError("two rows for one (phase, event)")

# A new request may cancel a job until its trial is armed (L01.FR.26); after that the new
# image is on its way to being booted and a new request is Rejected (L01.FR.27).
CANCELLABLE = frozenset(Phase(s) for s in _BEFORE_REBOOT.split())
TERMINAL = frozenset(row.status for row in TRANSITIONS if row.target is Phase.FINISHED)


class IllegalMove(Exception):
    """An event the table has no row for in this phase: a bug, never a CSMS's doing."""


def advance(phase: Phase, event: Event) -> Row:
    """The row that moves `phase` on `event`; IllegalMove when there is none."""
    row = _TABLE.get((phase, event))
    if row is None:
        raise IllegalMove(f"no move from {phase} on {event}")
    return row


# A job is born (from the request, not by a move) in one of these, announcing this status.
INITIAL: Mapping[Phase, Status] = {
    Phase.DOWNLOAD_SCHEDULED: Status.DOWNLOAD_SCHEDULED,  # L01.FR.13
    Phase.DOWNLOADING: Status.DOWNLOADING,
}


def entry_status(phase: Phase) -> Status | None:
    """The status a phase announces when it is entered (a lost one is re-sent on resume);
    None for FINISHED (its status is the job's outcome) and TRIAL (announces nothing)."""
    statuses = {row.status for row in TRANSITIONS if row.target is phase}
    statuses.add(INITIAL.get(phase))
    statuses.discard(None)
    return statuses.pop() if len(statuses) == 1 else None


# --- resuming ------------------------------------------------------------------------------


class Resume(enum.StrEnum):
    """What a job does first when the daemon starts with it saved in a phase."""

    WAIT_RETRIEVE = "wait for retrieveDateTime again"
    CONTINUE_DOWNLOAD = "resume the download at the durable offset (Range + If-Range)"
    PROVE_AGAIN = "verify the signature and read the slot back again"
    PROVE_THEN_INSTALL = "verify, read back and check the image again; then time, gate, arm"
    JUDGE_BOOT = "ask the bootloader which slot booted: the trial, or a fallback"
    REBOOT_AGAIN = "reboot again (the machine did not go down)"
    REPORT = "re-send the outcome if it was lost"


# phase -> (same boot: the daemon restarted, new boot: a reboot or a power cut)
RESUME: Mapping[Phase, tuple[Resume, Resume]] = {
    P.DOWNLOAD_SCHEDULED: (Resume.WAIT_RETRIEVE, Resume.WAIT_RETRIEVE),
    P.DOWNLOADING: (Resume.CONTINUE_DOWNLOAD, Resume.CONTINUE_DOWNLOAD),
    P.VERIFYING: (Resume.PROVE_AGAIN, Resume.PROVE_AGAIN),
    P.VERIFIED: (Resume.PROVE_THEN_INSTALL, Resume.PROVE_THEN_INSTALL),
    P.INSTALL_SCHEDULED: (Resume.PROVE_THEN_INSTALL, Resume.PROVE_THEN_INSTALL),
    # A new boot in `installing` after the arming began (`Job.boot_id` saved first) is judged
    # like one in `rebooting`: the trial itself, or a fallback from it — never armed twice.
    P.INSTALLING: (Resume.PROVE_THEN_INSTALL, Resume.JUDGE_BOOT),
    P.REBOOTING: (Resume.REBOOT_AGAIN, Resume.JUDGE_BOOT),
    P.TRIAL: (Resume.JUDGE_BOOT, Resume.JUDGE_BOOT),
    P.FINISHED: (Resume.REPORT, Resume.REPORT),
}


def resume(phase: Phase, new_boot: bool) -> Resume:
    return RESUME[phase][1 if new_boot else 0]


# --- the proof that arming needs -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Proof:
    """Evidence gathered in one run of one job: what was verified and what the slot holds."""

    owner: int  # the ownership token of the run that gathered it
    verified_digest: str  # SHA-256 (hex) the signature was verified over
    slot_digest: str  # SHA-256 (hex) of the slot as read back past the page cache


def arming_refusal(proof: Proof | None, owner: int, phase: Phase) -> str | None:
    """Why the trial must not be armed now; None when it may. The only gate before arming."""
    if phase is not Phase.INSTALLING:
        return f"arming in phase {phase}"
    if proof is None:
        return "no proof of the slot in this run"
    if proof.owner != owner:
        return "the proof belongs to another run"
    if proof.slot_digest != proof.verified_digest:
        return "the slot does not hold the verified image"
    return None
