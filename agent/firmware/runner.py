"""One run of one update job in the worker thread: from its saved phase to its end or the reboot.

The flow is `machine.TRANSITIONS`; this module holds the actions. Each phase has one action
(`_STEPS`): it does the I/O of that phase and returns the `Event` it found, and `_apply` is the
only place that moves the job: it asks `machine.advance` for the row, saves the new phase, then
queues its status, as the owner of the job (`Ownership`): once a new request has revoked this
run's token, every save and status of it raises NotOwner and the run ends without a trace.

Safety, step by step (each is safe to repeat after a crash):

1. the target slot is marked bad just before its first byte is written, never earlier: a request
   refused by policy, or one whose download fails before any byte, leaves the bootloader alone;
2. the image streams into the slot, hashed as it arrives; the durable offset is checkpointed;
3. VERIFYING: the signature over the streamed digest, then the slot read back past the page
   cache; together they are this run's `Proof`. A resumed job gathers its proof again;
4. VERIFIED: installDateTime and the install gate (L01.FR.06, InstallScheduled while closed,
   L01.FR.34);
5. INSTALLING: the integrator's image check (its refusal is InstallVerificationFailed after
   Installing, as TC_L_08_CS expects); `arming_refusal` is asked, under the ownership lock,
   right before `arm_trial` — the one place the trial is armed; InstallRebooting is confirmed
   (L01.FR.15), then the reboot;
6. after the reboot: from the target → health → commit → Installed; from the old slot → the
   bootloader fell back → InstallationFailed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping

from agent import crashpoints
from agent.config import Config
from agent.durable import StateWriteError
from agent.firmware import certs, signature
from agent.firmware.charger import Charger
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import DownloadCancelled, FirmwareError
from agent.firmware.job import Job, JobStore, NotOwner
from agent.firmware.machine import (
    Event,
    Phase,
    Proof,
    Resume,
    advance,
    arming_refusal,
    entry_status,
    resume,
)
from agent.firmware.reporting import Reporter
from agent.firmware.staging import Stager
from agent.logfields import fields
from agent.ocpp import v16
from agent.slots.base import BackendError, BootBackend, SlotHealth

LOG = logging.getLogger(__name__)
Status = v16.FirmwareStatus

STATE_RETRY_MAX = 60.0
# Phases in which a trial may be armed (or booted): a failure there must undo it.
ARMED_OR_AFTER = frozenset(
    {Phase.INSTALLING, Phase.REBOOTING, Phase.TRIAL}
)  # seconds between tries, at most, while the state dir is unwritable
SECURITY_EVENT_FOR: Mapping[Status, v16.SecurityEvent] = {
    Status.INVALID_SIGNATURE: v16.SecurityEvent.INVALID_FIRMWARE_SIGNATURE,  # L01.FR.03
    Status.INSTALLED: v16.SecurityEvent.FIRMWARE_UPDATED,
}


class Cancelled(Exception):
    """The job was cancelled (a new request) or the daemon is stopping."""


class _ArmRefused(Exception):
    """`arming_refusal` said no: a bug somewhere before; the job fails, nothing is armed."""


@dataclasses.dataclass
class Context:
    """What a job run needs from the daemon; shared by the updater and its workers."""

    config: Config
    reporter: Reporter
    backend: BootBackend
    clock: TrustedClock
    store: JobStore
    stager: Stager
    charger: Charger
    wait_delivered: Callable[[str, float], bool]
    accepted: threading.Event = dataclasses.field(default_factory=threading.Event)

    def now(self) -> float:
        """The trusted time (system or CSMS), or the system clock when neither is trusted."""
        try:
            return self.clock.read().now.timestamp()
        except FirmwareError:
            return time.time()


# What an action hands back: the event, a reason for a failure, and what to do once the
# transition is saved and its status queued (given the status's outbox id).
After = Callable[[str | None], None]


@dataclasses.dataclass(frozen=True)
class Found:
    event: Event
    reason: str | None = None
    after: After | None = None


class JobRun:
    """One worker's run of one job, with the token that lets it write the job."""

    def __init__(self, ctx: Context, job: Job, token: int, cancel: threading.Event) -> None:
        self.ctx, self.job, self.token, self.cancel = ctx, job, token, cancel
        self._proof: Proof | None = None  # never persisted: every run proves the slot itself
        self._checked = False  # the image check accepted the proven slot in this run
        self._first: Resume | None = None  # how this run continues a saved job, if it does
        self._uncounted = False  # a restart not yet counted by the crash-loop breaker

    # --- the run --------------------------------------------------------------------------

    def run(self, resumed: bool) -> None:
        """The worker thread's body. When the state dir cannot be written (full, read-only)
        the job pauses and tries again, 1 s later, then doubling up to STATE_RETRY_MAX, as if
        the daemon had restarted: every step is safe to repeat, what is on disk is whole."""
        wait = 1.0
        self._uncounted = resumed  # a daemon start that continues the job counts, once
        while True:
            try:
                self._run_once(resumed)
                return
            except StateWriteError as exc:
                LOG.error(
                    "update %s paused in phase %s: %s; trying again in %.0f s",
                    self.job.request_id,
                    self.job.phase,
                    exc,
                    wait,
                )
                if self.cancel.wait(wait):
                    LOG.info("update %s stopped in phase %s", self.job.request_id, self.job.phase)
                    return
                wait, resumed = min(2 * wait, STATE_RETRY_MAX), True
                self._proof, self._checked = None, False  # as after a restart: prove again

    def _run_once(self, resumed: bool) -> None:
        job = self.job
        try:
            self._reconcile()
            if resumed and job.finished:
                self._reboot_back_if_pending()
            if resumed and not job.finished:
                self._first = resume(job.phase, new_boot=self._new_boot())
                if self._uncounted:
                    self._count_resume()
                LOG.info("update %s in phase %s: %s", job.request_id, job.phase, self._first)
            self._drive()
        except (Cancelled, NotOwner) as exc:
            LOG.info("update %s stopped in phase %s (%s)", job.request_id, job.phase, exc)
        except StateWriteError:
            raise
        except Exception as exc:  # a bug or an unexpected failure: fail the job, keep running
            LOG.exception("update %s failed unexpectedly", job.request_id)
            if not job.finished:
                with contextlib.suppress(NotOwner):  # replaced meanwhile: not ours to report
                    self._apply(Found(Event.INTERNAL_ERROR, f"internal error: {exc}"))

    def _reboot_back_if_pending(self) -> None:
        """A failed trial's way back is not a phase: after a restart (SIGTERM or a crash while
        the gate was closed), running from the abandoned target means it is still due."""
        job = self.job
        if job.outcome == Status.INSTALLED.value or job.target is None:
            return
        if self.ctx.backend.observe().booted != job.target:
            return
        LOG.warning("update %s: still running the abandoned slot %s", job.request_id, job.target)
        outcome = self._queued(Status(job.outcome)) if job.outcome else None
        self._back_to_old_slot(job.error or "the trial failed")(outcome)

    def _drive(self) -> None:
        while not self.job.finished:
            if self.job.cancelled is not None:  # saved by Updater.cancel: ends the job here
                found: Found | None = Found(Event.CANCELLED, self.job.cancelled)
            else:
                found = _STEPS[self.job.phase](self)
            if found is None:
                return  # the reboot is issued: what follows happens in the next boot
            self._apply(found)
            self._first = None

    def _apply(self, found: Found) -> str | None:
        """The one place a job changes phase: saved, then its status queued, as the owner.
        Returns the status's outbox id (None for a phase that announces nothing)."""
        job = self.job
        row = advance(job.phase, found.event)
        after = found.after
        if (
            row.target is Phase.FINISHED
            and row.status is not Status.INSTALLED
            and job.phase in ARMED_OR_AFTER
            and after is None
        ):
            after = self._back_to_old_slot(found.reason or str(found.event))
        with self.ctx.store.ownership.holding(self.token):
            before = (job.phase, job.outcome, job.error)
            job.phase = row.target
            if row.target is Phase.FINISHED:
                assert row.status is not None
                job.outcome, job.error = row.status.value, found.reason
            elif found.reason:
                job.error = found.reason
            try:
                self.ctx.store.save(job, self.token)
            except StateWriteError:
                job.phase, job.outcome, job.error = before  # memory says what the disk says
                raise
            unique_id = self._announce(row.status, found.reason) if row.status else None
        extra = fields(request_id=job.request_id, phase=job.phase.value, outcome=job.outcome)
        why = f" ({found.reason})" if found.reason else ""
        if job.finished:
            level = logging.INFO if row.status is Status.INSTALLED else logging.WARNING
            LOG.log(level, "update %s finished: %s%s", job.request_id, row.status, why, extra=extra)
        else:
            LOG.info(
                "update %s: %s -> %s%s", job.request_id, found.event, row.target, why, extra=extra
            )
        if after is not None:
            after(unique_id)
        return unique_id

    def _announce(self, status: Status, tech_info: str | None = None) -> str:
        event = SECURITY_EVENT_FOR.get(status)
        return self.ctx.reporter.status(status, self.job.request_id, event, tech_info)

    def _reconcile(self) -> None:
        """Send the saved phase's status if a crash lost it between save and report."""
        job = self.job
        expected = Status(job.outcome) if job.finished and job.outcome else None
        if not job.finished:
            expected = entry_status(job.phase)
        if expected is None:
            return
        if self.ctx.reporter.last() != (expected, job.request_id):
            with self.ctx.store.ownership.holding(self.token):
                self._announce(expected, job.error if job.finished else None)

    def _count_resume(self) -> None:
        """Every continued run counts; a job that keeps coming back is given up (Mender's
        state-store counter). Planned steps (download attempts, phases) never count."""
        job = self.job
        job.resumes += 1
        try:
            self._checkpoint()
        except StateWriteError:
            job.resumes -= 1  # not saved, not counted: a full disk must not trip the breaker
            raise
        self._uncounted = False
        LOG.info(
            "update %s: restart %d (given up at %d)",
            job.request_id,
            job.resumes,
            self.ctx.config.health.max_transitions,
        )
        if job.resumes < self.ctx.config.health.max_transitions:
            return
        why = f"gave up after {job.resumes} restarts of this update"
        after = None
        if job.phase in (Phase.REBOOTING, Phase.TRIAL):
            after = self._back_to_old_slot(why)
        self._apply(Found(Event.GAVE_UP, why, after))
        raise Cancelled(why)

    def _checkpoint(self) -> None:
        """A resume point inside a phase: saved, but not a transition."""
        self.ctx.store.save(self.job, self.token, transition=False)

    def _new_boot(self) -> bool:
        """Did the machine boot since the job was last saved in its phase? The boot id saved
        when the reboot was issued, else the one recorded with the last transition."""
        job = self.job
        saved = job.boot_id or (job.history[-1][1] if job.history else None)
        return saved is not None and self.ctx.charger.boot_id() != saved

    def _stop_if_cancelled(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")

    def _wait_until(self, epoch: float) -> None:
        while (remaining := epoch - self.ctx.now()) > 0:
            if self.cancel.wait(min(remaining, 30.0)):
                raise Cancelled("cancelled while waiting for the time")

    # --- the actions, one per phase -------------------------------------------------------

    def _wait_for_retrieve_time(self) -> Found:
        self._wait_until(self.job.retrieve_at)  # DownloadScheduled was announced (L01.FR.13)
        self.job.attempt = 1
        return Found(Event.RETRIEVE_TIME)

    def _download(self) -> Found:
        """One attempt; retries + 1 of them, retryInterval apart, resuming across them."""
        job = self.job
        if job.target is None:
            observation = self.ctx.backend.observe()
            job.source, job.target = observation.booted, observation.other_than(observation.booted)
            self._checkpoint()
        try:
            result = self.ctx.stager.download(
                job, self.cancel, on_checkpoint=self._checkpoint, before_first_byte=self._mark_bad
            )
        except DownloadCancelled as exc:
            raise Cancelled("cancelled during the download") from exc
        except FirmwareError as exc:
            if job.attempt >= job.retries + 1 or not exc.retryable:
                return Found(Event.DOWNLOAD_FAILED, exc.message)
            LOG.warning("download attempt %d/%d failed: %s", job.attempt, job.retries + 1, exc)
            job.error = exc.message
            self._checkpoint()
            if self.cancel.wait(job.retry_interval):
                raise Cancelled("cancelled between attempts") from exc
            job.attempt += 1
            return Found(Event.ATTEMPT_FAILED)
        job.digest, job.size, job.error = result.digest.hex(), result.size, None
        return Found(Event.DOWNLOADED)

    def _mark_bad(self) -> None:
        """Before the slot's first byte: a half-written slot must never boot."""
        target = self.job.target
        assert target is not None
        with self.ctx.store.ownership.holding(self.token):
            if self.ctx.backend.observe().health.get(target) is not SlotHealth.BAD:
                self.ctx.backend.mark_bad(target)

    def _verify(self) -> Found:
        """Signature over the streamed digest (L01.FR.04), then the slot read back."""
        refusal = self._prove()
        if refusal is not None:
            return refusal
        return Found(Event.SLOT_PROVEN)

    def _prove(self) -> Found | None:
        """Gather this run's Proof; the event that ends the job when it cannot be had."""
        job = self.job
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
            if job.phase is Phase.VERIFYING:
                return Found(Event.SIGNATURE_INVALID, exc.message)
            return Found(Event.SLOT_REFUSED, f"signature no longer verifies: {exc.message}")
        LOG.info("update %s: signature verified (%s)", job.request_id, algorithm)
        try:
            slot_digest = self.ctx.stager.read_back(job, self.cancel)
        except DownloadCancelled as exc:
            raise Cancelled("cancelled during the read-back") from exc
        except FirmwareError as exc:
            return Found(Event.SLOT_REFUSED, exc.message)
        self._proof = Proof(self.token, job.digest, slot_digest)
        if slot_digest != job.digest:
            return Found(
                Event.SLOT_REFUSED,
                f"slot {job.target} reads back as {slot_digest[:16]}…, "
                f"the verified image is {job.digest[:16]}…",
            )
        return None

    def _proven(self) -> Found | None:
        """This run's proof, gathered again in a resumed run; the refusal when it fails."""
        return self._prove() if self._proof is None else None

    def _check(self) -> Found | None:
        """Proof, then the integrator's image check on the slot: part of the installation
        (Installing, then InstallVerificationFailed on a refusal: TC_L_08_CS)."""
        refusal = self._proven()
        if refusal is not None:
            return refusal
        if not self._checked:
            ok, reason = self.ctx.charger.check_image(self._image_facts(), self.cancel)
            self._stop_if_cancelled()
            if not ok:
                return Found(Event.SLOT_REFUSED, reason)
            self._checked = True
        return None

    def _image_facts(self) -> dict[str, str]:
        """What the image check is told, as OCPP_FW_* environment variables (no URL: it may
        carry credentials)."""
        job = self.job
        assert job.target is not None
        return {
            "OCPP_FW_SLOT": str(self.ctx.backend.slots[job.target]),
            "OCPP_FW_SLOT_NAME": job.target,
            "OCPP_FW_IMAGE_SIZE": str(job.size),
            "OCPP_FW_IMAGE_SHA256": job.digest or "",
            "OCPP_FW_RUNNING_VERSION": self.ctx.config.identity.current_firmware_version() or "",
            "OCPP_FW_REQUEST_ID": str(job.request_id),
        }

    def _schedule_install(self) -> Found:
        """VERIFIED: install now or say why not yet (L01.FR.16, .34)."""
        refusal = self._proven()
        if refusal is not None:
            return refusal
        if self.job.install_at is not None and self.job.install_at > self.ctx.now():
            return Found(Event.INSTALL_DEFERRED)
        if not self._gate_open():
            return Found(Event.INSTALL_DEFERRED)
        return Found(Event.INSTALL_STARTED)

    def _wait_to_install(self) -> Found:
        """INSTALL_SCHEDULED: until installDateTime and an open gate (L01.FR.06, .17)."""
        refusal = self._proven()
        if refusal is not None:
            return refusal
        self._wait_until(self.job.install_at or 0.0)
        while not self._gate_open():
            if self.cancel.wait(self.ctx.config.firmware.gate_poll_interval):
                raise Cancelled("cancelled while the install gate was closed")
        return Found(Event.INSTALL_STARTED)

    def _gate_open(self) -> bool:
        open_now = self.ctx.charger.may_install(self.cancel)
        self._stop_if_cancelled()
        return open_now

    def _install(self) -> Found | None:
        """INSTALLING: arm the one-shot trial of the proven slot, then InstallRebooting."""
        job = self.job
        assert job.target is not None
        if self._first is Resume.JUDGE_BOOT:
            if job.boot_id is not None or self.ctx.backend.observe().booted == job.target:
                # The arming began in an earlier boot and REBOOTING was not saved (a power
                # cut): the trial itself, or the bootloader fell back from it. Arming the
                # same image again could try a bad image once per power cut. (Running from
                # the target with no boot id: a job an earlier release armed.) The boot id
                # stays: until the move is saved, a retry must judge again.
                return self._judge_boot()
            self._first = Resume.PROVE_THEN_INSTALL  # the cut came before the arming began
        refusal = self._check()
        if refusal is not None:
            return refusal
        # The image check (or a resume) may have taken minutes since the gate was asked: a
        # session may have started meanwhile, so it is asked again right before arming.
        while not self._gate_open():
            if self.cancel.wait(self.ctx.config.firmware.gate_poll_interval):
                raise Cancelled("cancelled while the install gate was closed")
        crashpoints.hold("arm", self.cancel)  # tests: a slow bootloader before the write
        with self.ctx.store.ownership.holding(self.token):
            self._stop_if_cancelled()
            why_not = arming_refusal(self._proof, self.token, job.phase)
            if why_not is not None:
                raise _ArmRefused(why_not)
            # Saved before the bootloader is touched: after a power cut from here on, the
            # next boot is judged (trial or fallback), never armed again (`RESUME`).
            job.boot_id = self.ctx.charger.boot_id()
            self._checkpoint()
            crashpoints.reached("arming recorded")  # tests: the one window a boot cannot judge
            try:
                self.ctx.backend.arm_trial(job.target)  # the only call that arms a slot
            except BackendError as exc:
                return Found(Event.ARM_FAILED, f"cannot arm the trial: {exc}")
            unique_id = self._apply(Found(Event.TRIAL_ARMED))
        # L01.FR.15: the CSMS hears InstallRebooting before we go (or it timed out).
        self._await_delivery(unique_id)
        self._reboot()
        return None

    def _rebooting(self) -> Found | None:
        """REBOOTING: the same boot reboots again; a new boot judges what came up."""
        if not self._new_boot():
            # Restarted before the machine went down: the CSMS still hears InstallRebooting
            # first (L01.FR.15), whether it was re-sent or was still queued.
            self._await_delivery(self._queued(Status.INSTALL_REBOOTING))
            self._reboot()
            return None
        return self._judge_boot()

    def _judge_boot(self) -> Found:
        job = self.job
        observation = self.ctx.backend.observe()
        if observation.booted != job.target:
            why = f"rolled back: booted slot {observation.booted}, not {job.target}"
            if job.phase is Phase.INSTALLING:
                why += " (the power was lost while arming the trial or during the trial boot)"
            self._mark_target_bad_after_rollback()
            return Found(Event.FELL_BACK, why)
        LOG.info("update %s: booted slot %s on trial", job.request_id, job.target)
        return Found(Event.BOOTED_TARGET)

    def _trial(self) -> Found:
        """TRIAL: running from the target. Health, then commit; otherwise back to the old slot."""
        job = self.job
        assert job.target is not None
        observation = self.ctx.backend.observe()
        if observation.booted != job.target:
            self._mark_target_bad_after_rollback()
            return Found(
                Event.FELL_BACK, f"rolled back: booted slot {observation.booted}, not {job.target}"
            )
        if not observation.trial_active and observation.primary == job.target:
            LOG.info("update %s: slot %s was already committed", job.request_id, job.target)
            return Found(Event.COMMITTED)  # e.g. by RAUC
        deadline = time.monotonic() + self.ctx.config.health.deadline
        while not self.ctx.accepted.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
            self._stop_if_cancelled()
            if time.monotonic() >= deadline:
                break
        if not self.ctx.accepted.is_set():
            why = "trial failed: no BootNotification Accepted before the deadline"
            return Found(Event.TRIAL_FAILED, why, self._back_to_old_slot(why))
        LOG.info("update %s: the CSMS accepted the trial boot", job.request_id)
        ok, reason = self.ctx.charger.healthy()
        if not ok:
            why = f"trial failed: {reason}"
            return Found(Event.TRIAL_FAILED, why, self._back_to_old_slot(why))
        LOG.info("update %s: health checks passed", job.request_id)
        try:
            self.ctx.backend.commit(job.target)
        except BackendError as exc:
            why = f"trial failed: commit failed: {exc}"
            return Found(Event.TRIAL_FAILED, why, self._back_to_old_slot(why))
        LOG.info("update %s: committed slot %s", job.request_id, job.target)
        return Found(Event.COMMITTED)

    def _back_to_old_slot(self, why: str) -> After:
        """The trial is given up (or an armed one undone): the target is marked bad now, so
        the old slot is what boots; when running from the target, the reboot back follows
        once the CSMS was told (as before InstallRebooting) and the install gate allows it."""
        target = self.job.target
        assert target is not None
        try:
            self.ctx.backend.abandon_trial(target)
        except BackendError as exc:
            LOG.error("cannot abandon the trial of %s: %s", target, exc)

        def reboot_back(unique_id: str | None) -> None:
            if self.ctx.backend.observe().booted != target:
                return  # still on the old slot (armed, not booted): disarmed, nothing to undo
            LOG.warning("update %s: back to the old slot (%s)", self.job.request_id, why)
            self._await_delivery(unique_id)
            while not self._gate_open():
                if self.cancel.wait(self.ctx.config.firmware.gate_poll_interval):
                    raise Cancelled("cancelled while the install gate was closed")
            self._reboot(into="the old slot")

        return reboot_back

    def _mark_target_bad_after_rollback(self) -> None:
        assert self.job.target is not None
        try:
            self.ctx.backend.mark_bad(self.job.target)
        except BackendError as exc:
            LOG.error("cannot mark %s bad after the rollback: %s", self.job.target, exc)

    def _queued(self, status: Status) -> str | None:
        """This job's `status` while the outbox still holds it undelivered."""
        return self.ctx.reporter.undelivered(status, self.job.request_id)

    def _await_delivery(self, unique_id: str | None) -> None:
        """Until the CSMS answered a status we are about to reboot after, or it timed out;
        nothing to wait for when it is not queued (None). Waited in slices: a SIGTERM
        meanwhile must not hold the shutdown (the saved phase redoes the reboot on start)."""
        if not unique_id:
            return
        deadline = time.monotonic() + 2 * self.ctx.config.csms.call_timeout
        while not self.ctx.wait_delivered(unique_id, 0.1):
            self._stop_if_cancelled()
            if time.monotonic() > deadline:
                LOG.warning("the CSMS did not confirm the status in time; rebooting anyway")
                return

    def _reboot(self, into: str = "the new slot") -> None:
        argv = list(self.ctx.config.firmware.reboot_command)
        argument = self.ctx.backend.reboot_argument()
        if argument:
            argv.append(argument)
        LOG.warning("rebooting into %s: %s", into, " ".join(argv))
        self.ctx.charger.reboot(argv)


# The action of each phase. FINISHED has none: `_drive` stops there.
_STEPS: Mapping[Phase, Callable[[JobRun], Found | None]] = {
    Phase.DOWNLOAD_SCHEDULED: JobRun._wait_for_retrieve_time,
    Phase.DOWNLOADING: JobRun._download,
    Phase.VERIFYING: JobRun._verify,
    Phase.VERIFIED: JobRun._schedule_install,
    Phase.INSTALL_SCHEDULED: JobRun._wait_to_install,
    Phase.INSTALLING: JobRun._install,
    Phase.REBOOTING: JobRun._rebooting,
    Phase.TRIAL: JobRun._trial,
}
