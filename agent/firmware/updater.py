"""Runs signed firmware updates (L01): request → download → verify → stage → reboot → report.

`Updater` is called from the daemon's loop thread (`on_request`, `after_request`,
`csms_accepted`, `snapshot`) and runs the job's long steps in one worker thread. Every phase
change is saved (job.py) before its status is reported, and on start the job continues where
the saved phase says; a status whose report was lost to a crash is sent again (`_reconcile`).

Order of the install, and why (each step is safe to repeat after a crash):
1. mark the target slot bad before its first byte is written (a half-written slot never boots);
2. stream it, hashing as it arrives; checkpoint the durable offset for resume;
3. verify the signature over the streamed digest (no second pass), then read the slot back
   bypassing the page cache and compare;
4. wait for the install gate (never interrupt a charging session, L01.FR.06);
5. arm a one-shot trial of the target (the primary slot is unchanged), report InstallRebooting
   and wait for its CALLRESULT (L01.FR.15), then reboot;
6. after the reboot: running from the target → health checks → commit → Installed +
   FirmwareUpdated; back on the old slot → the bootloader fell back → InstallationFailed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.config import Config
from agent.firmware import certs, signature
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected, DownloadCancelled, FirmwareError
from agent.firmware.job import (
    AFTER_REBOOT,
    CANCELLABLE,
    ENTRY_STATUS,
    SECURITY_EVENT_FOR,
    Job,
    JobStore,
    Phase,
)
from agent.firmware.reporting import Reporter
from agent.firmware.staging import Stager
from agent.ocpp import v16
from agent.service.systemd import fields
from agent.slots.base import BackendError, BootBackend, SerializedBackend, SlotHealth

LOG = logging.getLogger(__name__)
Status = v16.FirmwareStatus


class Cancelled(Exception):
    """The job was cancelled (a new request) or the daemon is stopping."""


class Updater:
    def __init__(
        self,
        config: Config,
        reporter: Reporter,
        backend: BootBackend,
        clock: TrustedClock,
        *,
        wait_delivered: Callable[[str, float], bool],
        boot_id: Callable[[], str],
        run_reboot: Callable[[Sequence[str]], None],
        may_disturb: Callable[[], bool],
        healthy: Callable[[], tuple[bool, str]],
    ) -> None:
        self.config = config
        self.reporter = reporter
        self.backend: BootBackend = SerializedBackend(backend)  # called from several threads
        self.clock = clock
        self.store = JobStore(config.state_dir, boot_id)
        self.stager = Stager(config, backend)
        self._wait_delivered = wait_delivered
        self._boot_id = boot_id
        self._run_reboot = run_reboot
        self._may_disturb = may_disturb
        self._healthy = healthy
        self._accepted = threading.Event()
        self._job: Job | None = self.store.load()
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        # Held while deciding "still cancellable?" and while arming + saving `rebooting`, so a
        # new request cannot cancel a job whose trial is already armed (L01.FR.26/.27), and
        # while the per-boot confirm decides and commits (it must not undo an armed trial).
        self._arming = threading.Lock()

    # --- loop-thread API --------------------------------------------------------------------

    def start(self) -> None:
        """Continue a saved job (after a restart or a reboot). A finished one is spawned too:
        its outcome may have been saved but not yet reported when the power went."""
        problems = self.backend_problems()
        if problems:  # shown by `status` too; updates are refused until they are fixed
            LOG.error("boot-slot backend %s: %s", self.backend.name, "; ".join(problems))
        if self._job is not None:
            LOG.info("continuing update %s in phase %s", self._job.request_id, self._job.phase)
            self._spawn(self._job, resumed=True)
        if not problems and self.backend.capabilities().confirm_each_boot:
            threading.Thread(target=self._confirm_boot, name="confirm-boot", daemon=True).start()

    def _confirm_boot(self) -> None:
        """RAUC's U-Boot and GRUB scripts count every boot and fall back from a slot nobody
        confirms: confirm a healthy boot that is not a trial (a trial is the job's to decide).
        The CSMS is not waited for: an offline charger must keep its committed slot."""
        try:
            observation = self.backend.observe()
            if observation.trial_active:
                return
            ok, reason = self._healthy()
            if not ok:
                LOG.error("not confirming slot %s: %s", observation.booted, reason)
                return
            # Under the arming lock: committing the running slot puts it first again, which
            # would undo a trial armed meanwhile or before a daemon restart in this boot.
            with self._arming:
                observation = self.backend.observe()
                armed = [
                    slot
                    for slot, health in observation.health.items()
                    if health is SlotHealth.TRIAL and slot != observation.booted
                ]
                if observation.trial_active or armed:
                    LOG.info("not confirming slot %s: a trial is armed", observation.booted)
                    return
                self.backend.commit(observation.booted)
            LOG.info("confirmed the boot of slot %s", observation.booted)
        except BackendError as exc:
            LOG.error("cannot confirm the booted slot: %s", exc)

    def stop(self) -> None:
        """SIGTERM: stop the worker; the saved job continues at the next start."""
        self._cancel.set()
        if self._worker is not None:
            self._worker.join(timeout=10)

    def csms_accepted(self) -> None:
        self._accepted.set()

    def on_request(self, request: v16.SignedUpdateFirmwareReq) -> v16.SignedUpdateFirmwareConf:
        """Check the signing certificate first (L01.FR.23), then accept, cancel or refuse."""
        answer = v16.UpdateFirmwareStatus
        try:
            roots = certs.load_roots(self.config.firmware.manufacturer_roots)
            crls = certs.load_crls(self.config.firmware.crl_dir)
            certs.check_signing_certificate(
                request.firmware.signing_certificate, roots, crls, self.clock
            )
        except CertificateRejected as exc:
            # L01.FR.02: sent although the event table calls it non-critical.
            self.reporter.security_event(
                v16.SecurityEvent.INVALID_FIRMWARE_SIGNING_CERTIFICATE, exc.tech_info
            )
            LOG.warning("request %s: %s", request.request_id, exc.tech_info)
            status = answer(exc.status or answer.INVALID_CERTIFICATE)
            return v16.SignedUpdateFirmwareConf(status=status)
        problems = self.backend_problems()
        if problems:
            LOG.error("refusing request %s: %s", request.request_id, "; ".join(problems))
            return v16.SignedUpdateFirmwareConf(status=answer.REJECTED)
        status = answer.ACCEPTED
        current = self._job
        if current is not None and not current.finished:
            with self._arming:
                if current.phase not in CANCELLABLE:  # the reboot is under way (L01.FR.27)
                    return v16.SignedUpdateFirmwareConf(status=answer.REJECTED)
                self._cancel.set()
            LOG.info("request %s cancels update %s", request.request_id, current.request_id)
            self._cancel_worker()
            status = answer.ACCEPTED_CANCELED
        job = Job.from_request(request, self.config.firmware, now=self._now())
        self.store.save(job)  # durable before the CSMS hears Accepted
        self._job = job
        return v16.SignedUpdateFirmwareConf(status=status)

    def after_request(
        self, request: v16.SignedUpdateFirmwareReq, conf: v16.SignedUpdateFirmwareConf
    ) -> None:
        """The .conf is out; only now do statuses follow (answer first, L01 CP-REQ-8)."""
        accepted = (v16.UpdateFirmwareStatus.ACCEPTED, v16.UpdateFirmwareStatus.ACCEPTED_CANCELED)
        job = self._job
        if job is not None and job.request_id == request.request_id and conf.status in accepted:
            self._spawn(job)

    def backend_problems(self) -> list[str]:
        try:
            return self.backend.self_check()
        except BackendError as exc:
            return [str(exc)]

    def snapshot(self) -> dict[str, Any] | None:
        job = self._job
        if job is None:
            return None
        out: dict[str, Any] = {"request_id": job.request_id, "phase": job.phase.value}
        if job.outcome:
            out["outcome"] = job.outcome
        if job.error:
            out["error"] = job.error
        out.update(self.stager.progress(job))
        return out

    # --- the worker -------------------------------------------------------------------------

    def _cancel_worker(self) -> None:
        self._cancel.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
            if self._worker.is_alive():
                LOG.error("the cancelled update did not stop within 5 s")
        self._cancel = threading.Event()

    def _spawn(self, job: Job, resumed: bool = False) -> None:
        cancel = self._cancel
        self._worker = threading.Thread(
            target=self._run,
            args=(job, cancel, resumed),
            name=f"update-{job.request_id}",
            daemon=True,
        )
        self._worker.start()

    def _run(self, job: Job, cancel: threading.Event, resumed: bool) -> None:
        try:
            self._reconcile(job)
            self._drive(job, cancel, resumed)
        except Cancelled:
            LOG.info("update %s stopped in phase %s", job.request_id, job.phase)
        except Exception as exc:  # a bug or an unexpected failure: fail the job, keep running
            LOG.exception("update %s failed unexpectedly", job.request_id)
            self._finish(job, Status.INSTALLATION_FAILED, f"internal error: {exc}")

    def _reconcile(self, job: Job) -> None:
        """Send the saved phase's status if a crash lost it between save and report."""
        expected = job.outcome if job.finished else ENTRY_STATUS[job.phase]
        if expected is None:
            return
        if self.reporter.last() != (Status(expected), job.request_id):
            self._announce(job, Status(expected))

    def _announce(self, job: Job, status: Status, tech_info: str | None = None) -> str:
        event = SECURITY_EVENT_FOR.get(status)
        return self.reporter.status(status, job.request_id, event, tech_info)

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
        self.store.save(job, transition=False)

    def _save(self, job: Job) -> None:
        if job.transitions >= self.config.health.max_transitions and not job.finished:
            raise _LoopDetected(f"gave up after {job.transitions} saved transitions")
        self.store.save(job)

    def _finish(self, job: Job, outcome: Status, error: str | None = None) -> None:
        job.phase, job.outcome, job.error = Phase.FINISHED, outcome.value, error
        self.store.save(job)
        self._announce(job, outcome, error)
        LOG.log(
            logging.INFO if outcome is Status.INSTALLED else logging.WARNING,
            "update %s finished: %s%s",
            job.request_id,
            outcome,
            f" ({error})" if error else "",
            extra=fields(request_id=job.request_id, phase="finished", outcome=outcome.value),
        )

    def _wait_until(self, epoch: float, cancel: threading.Event) -> None:
        while (remaining := epoch - self._now()) > 0:
            if cancel.wait(min(remaining, 30.0)):
                raise Cancelled()

    def _now(self) -> float:
        try:
            return self.clock.read().now.timestamp()
        except FirmwareError:
            return time.time()

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
            if not self._read_back(job):
                return
            if job.install_at is not None and job.install_at > self._now():
                self._enter(job, Phase.INSTALL_SCHEDULED)  # L01.FR.16
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
            observation = self.backend.observe()
            target = observation.other_than(observation.booted)
            self.backend.mark_bad(target)  # before the first byte; idempotent if we crash here
            job.source, job.target = observation.booted, target
            self._save(job)
        attempts = job.retries + 1
        while True:
            try:
                result = self.stager.download(
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
                self.config.firmware.signature_algorithms,
            )
        except FirmwareError as exc:
            self._finish(job, Status.INVALID_SIGNATURE, exc.message)  # + event, L01.FR.03
            return False
        LOG.info("update %s: signature verified (%s)", job.request_id, algorithm)
        self._enter(job, Phase.VERIFIED)
        return True

    def _read_back(self, job: Job) -> bool:
        try:
            self.stager.read_back(job)
        except FirmwareError as exc:
            self._finish(job, Status.INSTALL_VERIFICATION_FAILED, exc.message)
            return False
        return True

    def _install(self, job: Job, cancel: threading.Event) -> None:
        """Gate, arm the trial, InstallRebooting confirmed, reboot."""
        assert job.target is not None
        if job.phase is Phase.INSTALLING and self.backend.observe().booted == job.target:
            # The trial was armed and booted before REBOOTING was saved (a power cut).
            job.phase, job.boot_id = Phase.TRIAL, None
            self._save(job)
            self._after_reboot(job, cancel)
            return
        while not self._may_disturb():  # L01.FR.06: never interrupt a charging session
            if cancel.wait(self.config.firmware.gate_poll_interval):
                raise Cancelled()
        if job.phase is not Phase.INSTALLING:
            self._enter(job, Phase.INSTALLING)
        with self._arming:
            if cancel.is_set():
                raise Cancelled()
            try:
                self.backend.arm_trial(job.target)
            except BackendError as exc:
                self._finish(job, Status.INSTALLATION_FAILED, f"cannot arm the trial: {exc}")
                return
            job.boot_id = self._boot_id()
            job.phase = Phase.REBOOTING
            self._save(job)
        unique_id = self._announce(job, Status.INSTALL_REBOOTING)
        # L01.FR.15: the CSMS hears InstallRebooting before we go (or it timed out). Waited in
        # slices: a SIGTERM meanwhile must not hold the shutdown (the reboot is redone on start).
        deadline = time.monotonic() + 2 * self.config.csms.call_timeout
        while not self._wait_delivered(unique_id, 0.1):
            if cancel.is_set():
                raise Cancelled()
            if time.monotonic() > deadline:
                LOG.warning("InstallRebooting not confirmed in time; rebooting anyway")
                break
        self._reboot()

    def _reboot(self) -> None:
        argv = list(self.config.firmware.reboot_command)
        argument = self.backend.reboot_argument()
        if argument:
            argv.append(argument)
        LOG.warning("rebooting into the new slot: %s", " ".join(argv))
        self._run_reboot(argv)

    def _after_reboot(self, job: Job, cancel: threading.Event) -> None:
        """Decide from the bootloader's evidence: trial of the target, or a fallback."""
        assert job.target is not None
        if self._boot_id() == job.boot_id:
            if job.phase is Phase.REBOOTING:  # restarted before the machine went down
                self._reboot()
            return
        observation = self.backend.observe()
        if observation.booted != job.target:
            self._rolled_back(job, f"booted slot {observation.booted}, not {job.target}")
            return
        if job.phase is Phase.REBOOTING:
            job.phase = Phase.TRIAL
            self._save(job)
        if not observation.trial_active and observation.primary == job.target:
            self._finish(job, Status.INSTALLED)  # already committed (e.g. by RAUC)
            return
        deadline = time.monotonic() + self.config.health.deadline
        if not self._accepted.wait(max(0.0, deadline - time.monotonic())):
            self._abandon(job, "no BootNotification Accepted before the deadline", cancel)
            return
        ok, reason = self._healthy()
        if not ok:
            self._abandon(job, reason, cancel)
            return
        try:
            self.backend.commit(job.target)
        except BackendError as exc:
            self._abandon(job, f"commit failed: {exc}", cancel)
            return
        self._finish(job, Status.INSTALLED)

    def _rolled_back(self, job: Job, why: str) -> None:
        assert job.target is not None
        try:
            self.backend.mark_bad(job.target)
        except BackendError as exc:
            LOG.error("cannot mark %s bad after the rollback: %s", job.target, exc)
        self._finish(job, Status.INSTALLATION_FAILED, f"rolled back: {why}")

    def _abandon(self, job: Job, why: str, cancel: threading.Event) -> None:
        """Health failed in the trial boot: the old slot comes back at the next boot."""
        assert job.target is not None
        try:
            self.backend.abandon_trial(job.target)
        except BackendError as exc:
            LOG.error("cannot abandon the trial of %s: %s", job.target, exc)
        self._finish(job, Status.INSTALLATION_FAILED, f"trial failed: {why}")
        while not self._may_disturb():  # the way back waits for the gate too
            if cancel.wait(self.config.firmware.gate_poll_interval):
                raise Cancelled()
        self._reboot()


class _LoopDetected(Exception):
    """The job was saved too often: something keeps restarting it."""
