"""The update job: everything needed to continue an update after a kill -9 or a power cut.

The job is saved (atomically, through `agent.durable`) before each side effect it leads to, so
on start the daemon knows what it intended and can reconcile that with what the bootloader and
the slot say. Its phases and how they move are in `machine.py`; what a saved phase does on
resume is `machine.RESUME`.

Only the owner writes the job: `Ownership` hands out one token per worker run, a new request
revokes the old one, and `JobStore.save` refuses a revoked token. So a worker that is still
winding down after a cancel can never write the job file or queue a status for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent import crashpoints
from agent.config import FirmwareConfig
from agent.durable import StateFileError, StateWriteError, atomic_write_json, read_json
from agent.firmware.machine import Phase
from agent.ocpp import v16

LOG = logging.getLogger(__name__)
FORMAT_VERSION = 1
JOB_FILE = "job.json"
MAX_HISTORY = 64


# Bounds on what a request may ask: the schema allows any integer, a charger does not.
MAX_RETRIES = 100
MAX_RETRY_INTERVAL = 24 * 3600  # seconds


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
    boot_id: str | None = None  # kernel boot id of the boot that armed the trial (saved first)
    transitions: int = 0  # saved phase changes (the history's length, unbounded)
    resumes: int = 0  # daemon starts that continued this job: the crash-loop breaker's count
    outcome: str | None = None  # the terminal FirmwareStatus, once finished
    # [phase, boot id, time] at each transition: the evidence for "which boot did what".
    history: list[list[Any]] = dataclasses.field(default_factory=list)
    error: str | None = None
    cancelled: str | None = None  # why the charger's stack cancelled it (local API), if it did
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
        retries = request.retries if request.retries is not None else defaults.default_retries
        interval = (
            request.retry_interval
            if request.retry_interval is not None
            else defaults.default_retry_interval
        )
        return cls(
            phase=Phase.DOWNLOAD_SCHEDULED if later else Phase.DOWNLOADING,
            attempt=0 if later else 1,
            request_id=request.request_id,
            location=firmware.location,
            retrieve_at=firmware.retrieve_date_time.timestamp(),
            install_at=firmware.install_date_time.timestamp()
            if firmware.install_date_time
            else None,
            retries=_bounded(request.request_id, "retries", retries, MAX_RETRIES),
            retry_interval=_bounded(
                request.request_id, "retryInterval", interval, MAX_RETRY_INTERVAL
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


def _bounded(request_id: int, name: str, value: int, most: int) -> int:
    if 0 <= value <= most:
        return value
    kept = min(max(value, 0), most)
    LOG.warning("request %s: %s %s is out of range, using %s", request_id, name, value, kept)
    return kept


class NotOwner(Exception):
    """A save or a status from a worker whose ownership was revoked (its job was replaced)."""


class Ownership:
    """Who may write the job and queue its statuses: one token at a time.

    `claim()` revokes every earlier token; `holding(token)` is held around each save and status
    (and around arming), so a revocation waits for a write in progress and every later write of
    the old token raises NotOwner. Re-entrant: arming saves while holding it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._current = 0

    def claim(self) -> int:
        with self._lock:
            self._current += 1
            return self._current

    @contextlib.contextmanager
    def holding(self, token: int) -> Iterator[None]:
        with self._lock:
            if token != self._current:
                raise NotOwner(f"token {token} was revoked (current {self._current})")
            yield

    @property
    def lock(self) -> threading.RLock:
        """Held to decide something no owner may change meanwhile (cancellable? armed?)."""
        return self._lock


class JobStore:
    """Load and save the one current job in the state dir.

    Two generations: each transition first keeps the previous document as `job.json.prev`, so
    even a medium that tears the newest write leaves a usable job to reconcile from. Every save
    names its owner's token and is refused once that token is revoked."""

    def __init__(
        self,
        state_dir: Path,
        boot_id: Callable[[], str] = lambda: "unknown",
        ownership: Ownership | None = None,
    ) -> None:
        self.path = state_dir / JOB_FILE
        self.previous = state_dir / (JOB_FILE + ".prev")
        self._boot_id = boot_id
        self.ownership = ownership or Ownership()

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

    def save(self, job: Job, token: int, *, transition: bool = True) -> None:
        """Persist `job` for the owner of `token` (NotOwner once revoked). A transition is
        recorded with the boot id; a download checkpoint is not."""
        with self.ownership.holding(token):
            self._save(job, transition=transition)

    def _save(self, job: Job, *, transition: bool) -> None:
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
                try:
                    os.replace(self.path, self.previous)
                except FileNotFoundError:
                    pass  # the first save of a job after none
                else:
                    crashpoints.reached("job kept as the previous generation")
            atomic_write_json(self.path, job.to_document())
        except OSError as exc:
            # Not saved, so not counted: retries on a full disk must not trip the breaker.
            job.transitions, job.history = counted
            if isinstance(exc, StateWriteError):
                raise
            raise StateWriteError(exc.errno, f"cannot keep {self.path}: {exc.strerror}") from exc
