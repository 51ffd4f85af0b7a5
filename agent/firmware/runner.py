"""One update job, run in the worker thread from its saved phase to its end (or the reboot).

Every phase change is saved (job.py) before its status is reported, and a status whose report
was lost to a power cut is sent again on resume (`_reconcile`). The order of the install, and
why (each step is safe to repeat after a crash):

1. mark the target slot bad before its first byte is written (a half-written slot never boots);
2. stream it, hashing as it arrives; checkpoint the durable offset for resume;
3. verify the signature over the streamed digest (no second pass), then read the slot back
   bypassing the page cache and compare, and run the integrator's image check (version,
   hardware) on the slot;
4. wait for the install gate (never interrupt a charging session, L01.FR.06), reporting
   InstallScheduled while it is closed (L01.FR.34); a job resumed while waiting to install
   reads the slot back again first;
5. arm a one-shot trial of the target (the primary slot is unchanged), report InstallRebooting
   and wait for its CALLRESULT (L01.FR.15), then reboot;
6. after the reboot: running from the target → health checks → commit → Installed +
   FirmwareUpdated; back on the old slot → the bootloader fell back → InstallationFailed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from agent.config import Config
from agent.durable import StateWriteError
from agent.firmware import certs, signature
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import DownloadCancelled, FirmwareError
from agent.firmware.job import AFTER_REBOOT, ENTRY_STATUS, SECURITY_EVENT_FOR, Job, JobStore, Phase
from agent.firmware.reporting import Reporter
from agent.firmware.staging import Stager
from agent.ocpp import v16
from agent.service.systemd import fields
from agent.slots.base import BackendError, BootBackend

LOG = logging.getLogger(__name__)
Status = v16.FirmwareStatus


STATE_RETRY_MAX = 60.0  # seconds between tries, at most, while the state dir is unwritable


class Cancelled(Exception):
    """The job was cancelled (a new request) or the daemon is stopping."""


@dataclasses.dataclass
class Context:
    """What a job run needs from the daemon; shared by the updater and its worker."""

    config: Config
    reporter: Reporter
    backend: BootBackend
    clock: TrustedClock
    store: JobStore
    stager: Stager
    wait_delivered: Callable[[str, float], bool]
    boot_id: Callable[[], str]
    run_reboot: Callable[[Sequence[str]], None]
    may_disturb: Callable[[], bool]
    check_image: Callable[[Mapping[str, str]], tuple[bool, str]]
    healthy: Callable[[], tuple[bool, str]]
    accepted: threading.Event = dataclasses.field(default_factory=threading.Event)
    # Held while deciding "still cancellable?" and while arming + saving `rebooting`, so a
    # new request cannot cancel a job whose trial is already armed (L01.FR.26/.27), and
    # while the per-boot confirm decides and commits (it must not undo an armed trial).
    arming: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def now(self) -> float:
        """The trusted time (system or CSMS), or the system clock when neither is trusted."""
        try:
            return self.clock.read().now.timestamp()
        except FirmwareError:
            return time.time()


class JobRunner:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, job: Job, cancel: threading.Event, resumed: bool) -> None:
        """The worker thread's body: the job from its saved phase to its end or the reboot.

        When the state dir cannot be written (full, read-only) the job pauses and tries again,
        1 s later, then doubling up to STATE_RETRY_MAX, as if the daemon had restarted: every
        step is safe to repeat, and what is on disk is a whole earlier state."""
        wait = 1.0
        while True:
            try:
                self._run_once(job, cancel, resumed)
                return
            except StateWriteError as exc:
                LOG.error(
                    "update %s paused in phase %s: %s; trying again in %.0f s",
                    job.request_id,
                    job.phase,
                    exc,
                    wait,
                )
                if cancel.wait(wait):
                    LOG.info("update %s stopped in phase %s", job.request_id, job.phase)
                    return
                wait, resumed = min(2 * wait, STATE_RETRY_MAX), True

    def _run_once(self, job: Job, cancel: threading.Event, resumed: bool) -> None:
        try:
            self._reconcile(job)
            self._drive(job, cancel, resumed)
        except Cancelled:
            LOG.info("update %s stopped in phase %s", job.request_id, job.phase)
        except StateWriteError:
            raise
        except Exception as exc:  # a bug or an unexpected failure: fail the job, keep running
            LOG.exception("update %s failed unexpectedly", job.request_id)
            self._finish(job, Status.INSTALLATION_FAILED, f"internal error: {exc}")

    def _reconcile(self, job: Job) -> None:
        """Send the saved phase's status if a crash lost it between save and report."""
        expected = job.outcome if job.finished else ENTRY_STATUS[job.phase]
        if expected is None:
            return
        if self.ctx.reporter.last() != (Status(expected), job.request_id):
            self._announce(job, Status(expected))

    def _announce(self, job: Job, status: Status, tech_info: str | None = None) -> str:
        event = SECURITY_EVENT_FOR.get(status)
        return self.ctx.reporter.status(status, job.request_id, event, tech_info)

    def _enter(self, job: Job, phase: Phase) -> None:
        """Save the new phase, then report its status (a lost report is re-sent on resume)."""
        job.phase = phase
        self._save(job)
        status = ENTRY_STATUS[phase]
        if status is not None:
            self._announce(job, status)
        LOG.info(
            "update %s: %s",
            job.request_id,
            phase,
            extra=fields(request_id=job.request_id, phase=phase.value),
        )

    def _checkpoint(self, job: Job) -> None:
        """A resume point inside a phase: saved, but not a transition."""
        self.ctx.store.save(job, transition=False)

    def _save(self, job: Job) -> None:
        if job.transitions >= self.ctx.config.health.max_transitions and not job.finished:
            raise _LoopDetected(f"gave up after {job.transitions} saved transitions")
        self.ctx.store.save(job)

    def _finish(self, job: Job, outcome: Status, error: str | None = None) -> str:
        """Save the outcome, then queue it; returns the outbox id of the status."""
        job.phase, job.outcome, job.error = Phase.FINISHED, outcome.value, error
        self.ctx.store.save(job)
        unique_id = self._announce(job, outcome, error)
        LOG.log(
            logging.INFO if outcome is Status.INSTALLED else logging.WARNING,
            "update %s finished: %s%s",
            job.request_id,
            outcome,
            f" ({error})" if error else "",
            extra=fields(request_id=job.request_id, phase="finished", outcome=outcome.value),
        )
        return unique_id

    def _wait_until(self, epoch: float, cancel: threading.Event) -> None:
        while (remaining := epoch - self.ctx.now()) > 0:
            if cancel.wait(min(remaining, 30.0)):
                raise Cancelled()

    def _drive(self, job: Job, cancel: threading.Event, resumed: bool) -> None:
        """Run the job from its saved phase to the end (or to the reboot)."""
        try:
            if resumed and not job.finished:
                self._save(job)  # a resume counts: a daemon that keeps dying hits the breaker
            self._steps(job, cancel)
        except _LoopDetected as exc:
            LOG.error("update %s: %s", job.request_id, exc)
            if job.phase in AFTER_REBOOT:
                self._abandon(job, str(exc), cancel)  # back to the old slot
                return
            failed = Status.DOWNLOAD_FAILED if job.digest is None else Status.INSTALLATION_FAILED
            self._finish(job, failed, str(exc))

    def _steps(self, job: Job, cancel: threading.Event) -> None:
        if job.phase is Phase.DOWNLOAD_SCHEDULED:  # announced by _reconcile (L01.FR.13)
            self._wait_until(job.retrieve_at, cancel)
            job.attempt = 1
            self._enter(job, Phase.DOWNLOADING)
        if job.phase is Phase.DOWNLOADING and not self._download(job, cancel):
            return
        if job.phase is Phase.VERIFYING and not self._verify_signature(job):
            return
        if job.phase is Phase.VERIFIED:
            if not self._prove_slot(job):
                return
            if job.install_at is not None and job.install_at > self.ctx.now():
                self._enter(job, Phase.INSTALL_SCHEDULED)  # L01.FR.16
        elif job.phase is Phase.INSTALL_SCHEDULED and not self._prove_slot(job):
            return  # resumed while waiting: the slot is proven on the medium again first
        if job.phase is Phase.INSTALL_SCHEDULED:
            self._wait_until(job.install_at or 0.0, cancel)
        if job.phase in (Phase.VERIFIED, Phase.INSTALL_SCHEDULED, Phase.INSTALLING):
            self._install(job, cancel)
            return  # the reboot is issued; what follows happens in the next boot
        if job.phase in AFTER_REBOOT:
            self._after_reboot(job, cancel)

    def _download(self, job: Job, cancel: threading.Event) -> bool:
        """Up to retries + 1 attempts, retryInterval apart; resume across attempts."""
        if job.target is None:
            observation = self.ctx.backend.observe()
            target = observation.other_than(observation.booted)
            self.ctx.backend.mark_bad(target)  # before the first byte; idempotent if we crash here
            job.source, job.target = observation.booted, target
            self._save(job)
        attempts = job.retries + 1
        while True:
            try:
                result = self.ctx.stager.download(
                    job, cancel, on_checkpoint=lambda: self._checkpoint(job)
                )
            except DownloadCancelled as exc:
                raise Cancelled() from exc
            except FirmwareError as exc:
                job.error = exc.message
                if job.attempt >= attempts or not exc.retryable:
                    self._finish(job, Status.DOWNLOAD_FAILED, exc.message)
                    return False
                LOG.warning("download attempt %d/%d failed: %s", job.attempt, attempts, exc)
                self._save(job)
                if cancel.wait(job.retry_interval):
                    raise Cancelled() from exc
                job.attempt += 1
                self._enter(job, Phase.DOWNLOADING)
                continue
            job.digest, job.size, job.error = result.digest.hex(), result.size, None
            self._enter(job, Phase.VERIFYING)
            return True

    def _verify_signature(self, job: Job) -> bool:
        assert job.digest is not None
        try:
            certificate = certs.parse_certificates(job.signing_certificate.encode())[0]
            algorithm = signature.verify_digest(
                bytes.fromhex(job.digest),
                job.signature,
                certificate,
                self.ctx.config.firmware.signature_algorithms,
            )
        except FirmwareError as exc:
            self._finish(job, Status.INVALID_SIGNATURE, exc.message)  # + event, L01.FR.03
            return False
        LOG.info("update %s: signature verified (%s)", job.request_id, algorithm)
        self._enter(job, Phase.VERIFIED)
        return True

    def _prove_slot(self, job: Job) -> bool:
        """The slot holds the image as streamed (read back past the page cache) and the
        integrator's image check (version, hardware) accepts it; otherwise
        InstallVerificationFailed and nothing is armed."""
        try:
            self.ctx.stager.read_back(job)
        except FirmwareError as exc:
            self._finish(job, Status.INSTALL_VERIFICATION_FAILED, exc.message)
            return False
        ok, reason = self.ctx.check_image(self._image_facts(job))
        if not ok:
            self._finish(job, Status.INSTALL_VERIFICATION_FAILED, reason)
            return False
        return True

    def _image_facts(self, job: Job) -> dict[str, str]:
        """What the image check is told, as OCPP_FW_* environment variables (no URL: it may
        carry credentials)."""
        assert job.target is not None
        return {
            "OCPP_FW_SLOT": str(self.ctx.backend.slots[job.target]),
            "OCPP_FW_SLOT_NAME": job.target,
            "OCPP_FW_IMAGE_SIZE": str(job.size),
            "OCPP_FW_IMAGE_SHA256": job.digest or "",
            "OCPP_FW_RUNNING_VERSION": self.ctx.config.identity.current_firmware_version() or "",
            "OCPP_FW_REQUEST_ID": str(job.request_id),
        }

    def _install(self, job: Job, cancel: threading.Event) -> None:
        """Gate, arm the trial, InstallRebooting confirmed, reboot."""
        assert job.target is not None
        if job.phase is Phase.INSTALLING and self.ctx.backend.observe().booted == job.target:
            # The trial was armed and booted before REBOOTING was saved (a power cut).
            job.phase, job.boot_id = Phase.TRIAL, None
            self._save(job)
            self._after_reboot(job, cancel)
            return

        def announce_waiting() -> None:
            if job.phase is Phase.VERIFIED:
                self._enter(job, Phase.INSTALL_SCHEDULED)  # L01.FR.34: why nothing happens

        self._wait_for_gate(cancel, while_closed=announce_waiting)  # L01.FR.06
        if job.phase is not Phase.INSTALLING:
            self._enter(job, Phase.INSTALLING)
        with self.ctx.arming:
            if cancel.is_set():
                raise Cancelled()
            try:
                self.ctx.backend.arm_trial(job.target)
            except BackendError as exc:
                self._finish(job, Status.INSTALLATION_FAILED, f"cannot arm the trial: {exc}")
                return
            job.boot_id = self.ctx.boot_id()
            job.phase = Phase.REBOOTING
            self._save(job)
        # L01.FR.15: the CSMS hears InstallRebooting before we go (or it timed out).
        self._await_delivery(self._announce(job, Status.INSTALL_REBOOTING), cancel)
        self._reboot()

    def _wait_for_gate(
        self, cancel: threading.Event, while_closed: Callable[[], None] | None = None
    ) -> None:
        """Until the install gate opens: never interrupt a charging session (L01.FR.06).
        `while_closed` runs at each closed poll."""
        while not self.ctx.may_disturb():
            if while_closed is not None:
                while_closed()
            if cancel.wait(self.ctx.config.firmware.gate_poll_interval):
                raise Cancelled()

    def _await_delivery(self, unique_id: str, cancel: threading.Event) -> None:
        """Until the CSMS answered a status we are about to reboot after, or it timed out.
        Waited in slices: a SIGTERM meanwhile must not hold the shutdown (the saved phase
        redoes the reboot on start)."""
        deadline = time.monotonic() + 2 * self.ctx.config.csms.call_timeout
        while not self.ctx.wait_delivered(unique_id, 0.1):
            if cancel.is_set():
                raise Cancelled()
            if time.monotonic() > deadline:
                LOG.warning("the CSMS did not confirm the status in time; rebooting anyway")
                return

    def _reboot(self) -> None:
        argv = list(self.ctx.config.firmware.reboot_command)
        argument = self.ctx.backend.reboot_argument()
        if argument:
            argv.append(argument)
        LOG.warning("rebooting into the new slot: %s", " ".join(argv))
        self.ctx.run_reboot(argv)

    def _after_reboot(self, job: Job, cancel: threading.Event) -> None:
        """Decide from the bootloader's evidence: trial of the target, or a fallback."""
        assert job.target is not None
        if self.ctx.boot_id() == job.boot_id:
            if job.phase is Phase.REBOOTING:  # restarted before the machine went down
                self._reboot()
            return
        observation = self.ctx.backend.observe()
        if observation.booted != job.target:
            self._rolled_back(job, f"booted slot {observation.booted}, not {job.target}")
            return
        if job.phase is Phase.REBOOTING:
            job.phase = Phase.TRIAL
            self._save(job)
        if not observation.trial_active and observation.primary == job.target:
            self._finish(job, Status.INSTALLED)  # already committed (e.g. by RAUC)
            return
        deadline = time.monotonic() + self.ctx.config.health.deadline
        if not self.ctx.accepted.wait(max(0.0, deadline - time.monotonic())):
            self._abandon(job, "no BootNotification Accepted before the deadline", cancel)
            return
        ok, reason = self.ctx.healthy()
        if not ok:
            self._abandon(job, reason, cancel)
            return
        try:
            self.ctx.backend.commit(job.target)
        except BackendError as exc:
            self._abandon(job, f"commit failed: {exc}", cancel)
            return
        self._finish(job, Status.INSTALLED)

    def _rolled_back(self, job: Job, why: str) -> None:
        assert job.target is not None
        try:
            self.ctx.backend.mark_bad(job.target)
        except BackendError as exc:
            LOG.error("cannot mark %s bad after the rollback: %s", job.target, exc)
        self._finish(job, Status.INSTALLATION_FAILED, f"rolled back: {why}")

    def _abandon(self, job: Job, why: str, cancel: threading.Event) -> None:
        """Health failed in the trial boot: the old slot comes back at the next boot."""
        assert job.target is not None
        try:
            self.ctx.backend.abandon_trial(job.target)
        except BackendError as exc:
            LOG.error("cannot abandon the trial of %s: %s", job.target, exc)
        unique_id = self._finish(job, Status.INSTALLATION_FAILED, f"trial failed: {why}")
        self._await_delivery(unique_id, cancel)  # told before the reboot, as InstallRebooting
        self._wait_for_gate(cancel)  # the way back waits for the gate too
        self._reboot()


class _LoopDetected(Exception):
    """The job was saved too often: something keeps restarting it."""
