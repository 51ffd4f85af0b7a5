"""Signed firmware updates (L01) as the daemon's loop sees them: accept, cancel, continue.

`Updater` is called from the daemon's loop thread (`on_call` or `on_request`,
`after_request`, `cancel`, `csms_accepted`, `snapshot`), which must never wait for seconds:
an online certificate check runs on a helper thread and its answer is deferred (`on_call`),
and an arming in progress is refused rather than waited for. It checks the signing
certificate before answering, keeps one job, and runs it in one worker thread
(`runner.JobRun`); on start it continues the saved job where its phase says. On backends that
count every boot it confirms healthy boots.

One owner at a time: a new request revokes the running worker's ownership token and sets its
cancel event *before* it is answered, so from then on the old worker can neither save the job
nor queue a status (the old requestId hears nothing more); the new worker waits for the old
one to be gone before it touches the slot.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.config import Config
from agent.durable import StateWriteError
from agent.firmware import certs
from agent.firmware.charger import Charger
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected
from agent.firmware.job import Job, JobStore
from agent.firmware.machine import CANCELLABLE, Phase
from agent.firmware.reporting import Reporter
from agent.firmware.runner import Context, JobRun
from agent.firmware.staging import Stager
from agent.ocpp import v16
from agent.ocpp.session import Deferred
from agent.ocpp.validate import format_datetime
from agent.slots.base import BackendError, BootBackend, SerializedBackend, SlotHealth

LOG = logging.getLogger(__name__)
Status = v16.FirmwareStatus
# Updater.cancel's answers.
CANCEL_DONE, CANCEL_NOT_RUNNING, CANCEL_TOO_LATE, CANCEL_NOT_SAVED = (
    "cancelled",
    "not running",
    "too late",
    "not saved",
)
LOCK_POLL = 0.05  # seconds between looks at an arming while the ownership lock is held


class Updater:
    def __init__(
        self,
        config: Config,
        reporter: Reporter,
        backend: BootBackend,
        clock: TrustedClock,
        charger: Charger,
        *,
        wait_delivered: Callable[[str, float], bool],
        post: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """`post` runs a task on the loop thread; without it every answer is made at once."""
        self.config = config
        self.reporter = reporter
        # Called from several threads: one call at a time.
        self.backend: BootBackend = (
            backend if isinstance(backend, SerializedBackend) else SerializedBackend(backend)
        )
        self.clock = clock
        self.store = JobStore(config.state_dir, charger.boot_id)
        self.stager = Stager(config, backend)
        self.ctx = Context(
            config,
            reporter,
            self.backend,
            clock,
            self.store,
            self.stager,
            charger,
            wait_delivered=wait_delivered,
        )
        self._cert_policy = certs.policy_from_config(config.firmware)
        self._job: Job | None = self.store.load()
        self.problems: list[str] = []  # the last self_check, shown by `status`
        self._cancel = threading.Event()  # the running worker's
        self._token = 0  # the running worker's ownership token
        self._worker: threading.Thread | None = None
        self._post = post
        self._checking = False  # a certificate check runs on its helper thread (on_call)

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
            ok, reason = self.ctx.charger.healthy()
            if not ok:
                LOG.error("not confirming slot %s: %s", observation.booted, reason)
                return
            # Under the ownership lock (held while arming): committing the running slot puts
            # it first again, which would undo a trial armed meanwhile or before a restart.
            with self.store.ownership.lock:
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
        self.ctx.accepted.set()

    def on_call(
        self, request: v16.SignedUpdateFirmwareReq
    ) -> v16.SignedUpdateFirmwareConf | Deferred:
        """`on_request` for a session, whose answer may come later: with online revocation
        checks (CRL, OCSP: up to a timeout each) the certificate is checked on a helper
        thread and the request decided on the loop thread once it is known, so the answer
        still reflects it (L01.FR.23/25) while the loop goes on (heartbeats, the sidecar, the
        API). Without them the check reads local files only and is answered at once."""
        if self._post is None or not (
            self._cert_policy.online_crl or self._cert_policy.online_ocsp
        ):
            return self.on_request(request)
        if self._checking:
            # One check at a time: a CSMS awaits our answer before its next CALL (OCPP-J
            # §4.1.1), so a second request meanwhile is one we cannot take on.
            LOG.warning("refusing request %s: a certificate check runs", request.request_id)
            return v16.SignedUpdateFirmwareConf(status=v16.UpdateFirmwareStatus.REJECTED)
        self._checking = True
        deferred = Deferred()
        post = self._post

        def check() -> None:
            try:
                refusal = self._check_certificate(request)
            except Exception as exc:  # a bug must still answer the CSMS
                LOG.exception("request %s: the certificate check failed", request.request_id)
                refusal = CertificateRejected(
                    certs.INVALID, f"the certificate check failed: {type(exc).__name__}"
                )

            def decide() -> v16.SignedUpdateFirmwareConf:
                if refusal is not None:
                    return self._refuse_certificate(request, refusal)
                return self._decide(request)

            def resume() -> None:
                self._checking = False
                deferred.answer(decide)

            post(resume)

        threading.Thread(target=check, name=f"cert-check-{request.request_id}", daemon=True).start()
        return deferred

    def on_request(self, request: v16.SignedUpdateFirmwareReq) -> v16.SignedUpdateFirmwareConf:
        """Check the signing certificate first (L01.FR.23), then accept, cancel or refuse."""
        refusal = self._check_certificate(request)
        if refusal is not None:
            return self._refuse_certificate(request, refusal)
        return self._decide(request)

    def _check_certificate(
        self, request: v16.SignedUpdateFirmwareReq
    ) -> CertificateRejected | None:
        """The signing certificate's check (any thread): None when it is accepted."""
        try:
            roots = certs.load_roots(self.config.firmware.manufacturer_roots, self._cert_policy)
            crls = certs.load_crls(self.config.firmware.crl_dir)
            certs.check_signing_certificate(
                request.firmware.signing_certificate,
                roots,
                crls,
                self.clock,
                pins=self.config.firmware.signing_key_pins,
                policy=self._cert_policy,
            )
        except CertificateRejected as exc:
            return exc
        return None

    def _refuse_certificate(
        self, request: v16.SignedUpdateFirmwareReq, exc: CertificateRejected
    ) -> v16.SignedUpdateFirmwareConf:
        answer = v16.UpdateFirmwareStatus
        # L01.FR.02: sent although the event table calls it non-critical.
        self.reporter.security_event(
            v16.SecurityEvent.INVALID_FIRMWARE_SIGNING_CERTIFICATE, exc.tech_info
        )
        LOG.warning("request %s: %s", request.request_id, exc.tech_info)
        return v16.SignedUpdateFirmwareConf(status=answer(exc.status or answer.INVALID_CERTIFICATE))

    def _decide(self, request: v16.SignedUpdateFirmwareReq) -> v16.SignedUpdateFirmwareConf:
        """A request whose certificate is good: accept, cancel the running update, or refuse."""
        answer = v16.UpdateFirmwareStatus
        status = answer.ACCEPTED
        current = self._job
        ownership = self.store.ownership
        if current is not None and current.finished and self._worker is not None:
            self._worker.join(1.0)  # a finished job's worker is about to end: let it
        # Decided under the ownership lock, which the worker holds while it arms: never waited
        # for then (the loop would stall for as long as the bootloader takes), as the arming
        # cannot be undone: the request is one we are unable to cancel for (L01.FR.27).
        if not self._lock_unless_arming(current):
            LOG.warning("refusing request %s: the trial is being armed", request.request_id)
            return v16.SignedUpdateFirmwareConf(status=answer.REJECTED)  # L01.FR.27
        try:
            # The self-check and the slot reads go through the backend, which an arming
            # holds too: asked only while no arming can begin.
            problems = self.backend_problems()
            if problems:
                LOG.error("refusing request %s: problem: %s", request.request_id, problems[0])
                return v16.SignedUpdateFirmwareConf(status=answer.REJECTED)
            running = self._running_an_abandoned_slot()
            if running is not None:
                LOG.error(
                    "refusing request %s: running slot %s, which a failed trial left marked "
                    "bad; the reboot back to the other slot is pending",
                    request.request_id,
                    running,
                )
                return v16.SignedUpdateFirmwareConf(status=answer.REJECTED)
            if current is not None and not current.finished:
                if not _cancellable(current):  # the trial is armed (L01.FR.27)
                    LOG.warning(
                        "refusing request %s: update %s is %s",
                        request.request_id,
                        current.request_id,
                        current.phase,
                    )
                    return v16.SignedUpdateFirmwareConf(status=answer.REJECTED)
                status = answer.ACCEPTED_CANCELED
            elif self._worker is not None and self._worker.is_alive():
                # A finished job's worker still runs: the way back to the old slot after a
                # failed trial. Writing the other slot now would overwrite the good one.
                LOG.warning("refusing request %s: a reboot is pending", request.request_id)
                return v16.SignedUpdateFirmwareConf(status=answer.REJECTED)
            token = ownership.claim()  # the old worker's saves and statuses end here
            self._cancel.set()
        finally:
            ownership.lock.release()
        if status is answer.ACCEPTED_CANCELED:
            assert current is not None
            LOG.info("request %s cancels update %s", request.request_id, current.request_id)
        job = Job.from_request(request, self.config.firmware, now=self.ctx.now())
        try:
            self.store.save(job, token)  # durable before the CSMS hears Accepted
        except StateWriteError as exc:
            LOG.error("refusing request %s: %s", request.request_id, exc)
            if current is not None and status is answer.ACCEPTED_CANCELED:
                self._spawn(current, resumed=True)  # not replaced after all: it goes on
            return v16.SignedUpdateFirmwareConf(status=answer.REJECTED)
        self._job, self._token = job, token
        return v16.SignedUpdateFirmwareConf(status=status)

    def cancel(self, request_id: int, why: str) -> str:
        """The charger's own stack cancels update `request_id` (local API): CANCEL_DONE when
        the job will end with one terminal status (DownloadFailed before the image is in the
        slot, InstallationFailed after), CANCEL_NOT_RUNNING when no such update runs,
        CANCEL_TOO_LATE once its trial is (being) armed, as for a new request (L01.FR.27).
        The cancel is saved before it is answered; a new worker ends the job."""
        ownership = self.store.ownership
        current = self._job
        if not self._lock_unless_arming(current):
            return CANCEL_TOO_LATE
        try:
            if current is None or current.request_id != request_id or current.finished:
                return CANCEL_NOT_RUNNING
            if not _cancellable(current):
                return CANCEL_TOO_LATE
            token = ownership.claim()  # the running worker's saves and statuses end here
            self._cancel.set()
            # A copy: the old worker may still touch its own object until it notices.
            job = dataclasses.replace(current, cancelled=why[:200] or "cancelled")
            try:
                self.store.save(job, token, transition=False)
            except StateWriteError as exc:
                LOG.error("cannot cancel update %s: %s", request_id, exc)
                self._spawn(current, resumed=True, token=token)  # it goes on as it was
                return CANCEL_NOT_SAVED
        finally:
            ownership.lock.release()
        LOG.warning("update %s cancelled by the charger: %s", request_id, job.cancelled)
        self._job = job
        self._spawn(job, token=token)
        return CANCEL_DONE

    def _lock_unless_arming(self, current: Job | None) -> bool:
        """Take the ownership lock, unless `current`'s arming began (False, the lock not
        taken). The loop thread never waits out an arming: the worker records the boot id
        under the lock before it touches the bootloader and holds the lock until the trial is
        armed, so a holder whose job has a boot id is arming, and a boot id, once there, is
        never taken back while the job runs. Other holders (a save, a status, the boot
        confirmation) hold it for one write, which is waited for."""
        lock = self.store.ownership.lock
        while not lock.acquire(timeout=LOCK_POLL):
            if current is not None and not current.finished and current.boot_id is not None:
                return False
        return True

    def after_request(
        self, request: v16.SignedUpdateFirmwareReq, conf: v16.SignedUpdateFirmwareConf
    ) -> None:
        """The .conf is out; only now do statuses follow (answer first, L01 CP-REQ-8)."""
        accepted = (v16.UpdateFirmwareStatus.ACCEPTED, v16.UpdateFirmwareStatus.ACCEPTED_CANCELED)
        job = self._job
        if job is not None and job.request_id == request.request_id and conf.status in accepted:
            self._spawn(job, token=self._token)

    def _running_an_abandoned_slot(self) -> str | None:
        """The booted slot, when the bootloader holds it bad: the other slot is the only good
        one and a download would overwrite it."""
        try:
            observation = self.backend.observe()
        except BackendError as exc:
            LOG.error("cannot read the boot slots: %s", exc)
            return None  # the self-check has already said why
        if observation.health.get(observation.booted) is SlotHealth.BAD:
            return observation.booted
        return None

    def backend_problems(self) -> list[str]:
        """Run the charger's self-check now (at start and for each request: it tries the slots,
        the boot environment and the tools where the daemon runs); `problems` keeps the last
        result for the published status."""
        problems = self.ctx.charger.problems()
        self.problems = problems
        return problems

    def snapshot(self) -> dict[str, Any] | None:
        job = self._job
        if job is None:
            return None
        out: dict[str, Any] = {"request_id": job.request_id, "phase": job.phase.value}
        if job.outcome:
            out["outcome"] = job.outcome
        if job.error:
            out["error"] = job.error
        waiting = _waiting_for(job, self.ctx.now())
        if waiting is not None:
            out["waiting_for"] = waiting
        out.update(self.stager.progress(job))
        return out

    # --- the worker -------------------------------------------------------------------------

    def _spawn(self, job: Job, resumed: bool = False, token: int | None = None) -> None:
        """Run `job` in a new worker, once the previous worker (cancelled) has ended."""
        if token is None:
            with self.store.ownership.lock:
                token = self.store.ownership.claim()
                self._cancel.set()
        self._token = token
        previous, cancel = self._worker, threading.Event()
        self._cancel = cancel
        run = JobRun(self.ctx, job, token, cancel)

        def work() -> None:
            if previous is not None and previous is not threading.current_thread():
                while previous.is_alive():
                    previous.join(5)
                    if previous.is_alive():
                        LOG.warning("update %s waits for the previous worker", job.request_id)
            run.run(resumed)

        self._worker = threading.Thread(target=work, name=f"update-{job.request_id}", daemon=True)
        self._worker.start()


def _cancellable(job: Job) -> bool:
    """Until its trial is armed (L01.FR.26/27). A job whose arming began in an earlier run
    (`Job.boot_id`, saved first) is not, until its worker has judged what booted: it may be
    running the trial, and a new download would go to the committed slot."""
    return job.phase in CANCELLABLE and job.boot_id is None


def _waiting_for(job: Job, now: float) -> str | None:
    """What a scheduled job waits for, in words for `ocpp-fw-agent status`."""
    if job.phase is Phase.DOWNLOAD_SCHEDULED:
        return f"retrieveDateTime {_when(job.retrieve_at)}"
    if job.phase is Phase.INSTALL_SCHEDULED:
        if job.install_at is not None and job.install_at > now:
            return f"installDateTime {_when(job.install_at)}"
        return "the install gate (a charging session is running)"
    return None


def _when(epoch: float) -> str:
    return format_datetime(datetime.datetime.fromtimestamp(epoch, datetime.UTC))
