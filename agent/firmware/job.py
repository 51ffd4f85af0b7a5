"""The update job: everything needed to continue an update after a kill -9 or a power cut.

The job is saved (atomically, through `agent.durable`) before each side effect it leads to, so
on start the daemon knows what it intended and can reconcile that with what the bootloader and
the slot say. Phase names are an on-disk API: never rename or reuse one; an unknown value takes
the safe path (the job is abandoned and reported as failed). Each save counts a transition; a
job that keeps coming back (a crash loop) is given up past `max_transitions`.

Where a phase continues after a restart (`RESUME`):

    phase               same boot (daemon restart)        new boot (reboot, power cut)
    download-scheduled  wait for retrieveDateTime          same
    downloading         resume at the durable offset       same (the target is still marked bad)
    verifying           verify the persisted digest        same
    verified            read back, wait for the gate       same
    install-scheduled   wait for installDateTime           same
    installing          gate, arm the trial again          same (arming is idempotent)
    rebooting           reboot again                       trial boot or rollback: ask `observe()`
    trial               health checks                      trial boot or rollback: ask `observe()`
    finished            nothing                            nothing
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import FirmwareConfig
from agent.durable import StateFileError, StateWriteError, atomic_write_json, read_json
from agent.ocpp import v16

LOG = logging.getLogger(__name__)
FORMAT_VERSION = 1
JOB_FILE = "job.json"
MAX_HISTORY = 64


class Phase(enum.StrEnum):
    DOWNLOAD_SCHEDULED = "download-scheduled"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    INSTALL_SCHEDULED = "install-scheduled"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    TRIAL = "trial"
    FINISHED = "finished"


# Until the reboot is issued a job can be cancelled by a new request (L01.FR.26); after it,
# the new image is on its way to being booted and the answer is Rejected (L01.FR.27).
CANCELLABLE = frozenset(
    {
        Phase.DOWNLOAD_SCHEDULED,
        Phase.DOWNLOADING,
        Phase.VERIFYING,
        Phase.VERIFIED,
        Phase.INSTALL_SCHEDULED,
        Phase.INSTALLING,
    }
)
AFTER_REBOOT = frozenset({Phase.REBOOTING, Phase.TRIAL})


# The status each phase announces when it is entered; `_reconcile` re-sends a lost one.
ENTRY_STATUS: dict[Phase, v16.FirmwareStatus | None] = {
    Phase.DOWNLOAD_SCHEDULED: v16.FirmwareStatus.DOWNLOAD_SCHEDULED,
    Phase.DOWNLOADING: v16.FirmwareStatus.DOWNLOADING,
    Phase.VERIFYING: v16.FirmwareStatus.DOWNLOADED,
    Phase.VERIFIED: v16.FirmwareStatus.SIGNATURE_VERIFIED,
    Phase.INSTALL_SCHEDULED: v16.FirmwareStatus.INSTALL_SCHEDULED,
    Phase.INSTALLING: v16.FirmwareStatus.INSTALLING,
    Phase.REBOOTING: v16.FirmwareStatus.INSTALL_REBOOTING,
    Phase.TRIAL: None,
    Phase.FINISHED: None,
}
SECURITY_EVENT_FOR: dict[v16.FirmwareStatus, v16.SecurityEvent] = {
    v16.FirmwareStatus.INVALID_SIGNATURE: v16.SecurityEvent.INVALID_FIRMWARE_SIGNATURE,
    v16.FirmwareStatus.INSTALLED: v16.SecurityEvent.FIRMWARE_UPDATED,
}


@dataclasses.dataclass
class Job:
    request_id: int
    location: str
    retrieve_at: float  # epoch seconds
    install_at: float | None
    retries: int  # retries after the first attempt (absent in the request: config default)
    retry_interval: int
    signing_certificate: str
    signature: str
    phase: Phase = Phase.DOWNLOAD_SCHEDULED
    attempt: int = 0  # download attempts started
    offset: int = 0  # image bytes durable in the target slot
    validator: str | None = None  # ETag / Last-Modified of the file being resumed
    total: int | None = None
    digest: str | None = None  # SHA-256 (hex) of the whole image, once downloaded
    size: int | None = None
    source: str | None = None  # the slot running when the job started
    target: str | None = None  # the slot being written
    boot_id: str | None = None  # kernel boot id when the reboot was issued
    transitions: int = 0
    outcome: str | None = None  # the terminal FirmwareStatus, once finished
    # [phase, boot id, time] at each transition: the evidence for "which boot did what".
    history: list[list[Any]] = dataclasses.field(default_factory=list)
    error: str | None = None
    created: float = dataclasses.field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @classmethod
    def from_request(
        cls, request: v16.SignedUpdateFirmwareReq, defaults: FirmwareConfig, now: float
    ) -> Job:
        """A job in its first phase: scheduled when retrieveDateTime is ahead of `now`.
        `retries`/`retryInterval` absent from the request take the configured defaults."""
        firmware = request.firmware
        later = firmware.retrieve_date_time.timestamp() > now
        return cls(
            phase=Phase.DOWNLOAD_SCHEDULED if later else Phase.DOWNLOADING,
            attempt=0 if later else 1,
            request_id=request.request_id,
            location=firmware.location,
            retrieve_at=firmware.retrieve_date_time.timestamp(),
            install_at=firmware.install_date_time.timestamp()
            if firmware.install_date_time
            else None,
            retries=max(
                0, request.retries if request.retries is not None else defaults.default_retries
            ),
            retry_interval=max(
                0,
                request.retry_interval
                if request.retry_interval is not None
                else defaults.default_retry_interval,
            ),
            signing_certificate=firmware.signing_certificate,
            signature=firmware.signature,
        )

    def to_document(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["phase"] = self.phase.value
        return {"version": FORMAT_VERSION, "job": document}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Job:
        fields = dict(document["job"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise StateFileError(f"unknown job fields {sorted(unknown)}")
        fields["phase"] = Phase(fields["phase"])  # ValueError for an unknown phase name
        return cls(**fields)


class JobStore:
    """Load and save the one current job in the state dir.

    Two generations: each transition first keeps the previous document as `job.json.prev`, so
    even a medium that tears the newest write leaves a usable job to reconcile from."""

    def __init__(self, state_dir: Path, boot_id: Callable[[], str] = lambda: "unknown") -> None:
        self.path = state_dir / JOB_FILE
        self.previous = state_dir / (JOB_FILE + ".prev")
        self._boot_id = boot_id

    def load(self) -> Job | None:
        """The saved job (or its previous generation); None when there is none. An unusable
        file is moved aside, never lost."""
        for path in (self.path, self.previous):
            try:
                document = read_json(path, version=FORMAT_VERSION)
                if document is None:
                    continue
                job = Job.from_document(document)
            except (StateFileError, KeyError, TypeError, ValueError) as exc:
                broken = path.with_name(f"{path.name}.broken-{int(time.time())}")
                path.rename(broken)
                LOG.error("job file unusable, moved to %s: %s", broken, exc)
                continue
            return job
        return None

    def save(self, job: Job, *, transition: bool = True) -> None:
        """Persist `job`. A transition is counted (the crash-loop breaker reads the count) and
        recorded with the boot id; a download checkpoint is neither."""
        counted = (job.transitions, job.history)
        if transition:
            job.transitions += 1
            job.history = [
                *job.history[-(MAX_HISTORY - 1) :],
                [job.phase.value, self._boot_id(), time.time()],
            ]
        try:
            if transition:
                # The current generation becomes the previous one by a rename, made durable by
                # the directory fsync of the write below. A cut between the two leaves only
                # job.json.prev, which `load` falls back to.
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path, self.previous)
            atomic_write_json(self.path, job.to_document())
        except OSError as exc:
            # Not saved, so not counted: retries on a full disk must not trip the breaker.
            job.transitions, job.history = counted
            if isinstance(exc, StateWriteError):
                raise
            raise StateWriteError(exc.errno, f"cannot keep {self.path}: {exc.strerror}") from exc
