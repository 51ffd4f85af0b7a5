"""API mode's parts put together for the daemon: the event log, the socket, the gate, the methods.

The API is one more source of requests for the one owner of the job: `start_update` is the
core's `Updater.on_request` (then `after_request`, as a session calls it once its CALLRESULT
is out), `get_status` is the Reporter's trigger answer, and the Reporter's statuses and
security events are queued in the event log instead of the OCPP outbox. Every method runs on
the daemon's loop thread (`post`), like a CALL from a CSMS.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from agent import __version__
from agent.api import protocol
from agent.api.events import EVENTS_FILE, EventLog
from agent.api.gate import HostGate
from agent.api.protocol import ApiError, Request
from agent.api.server import ApiServer, SocketError
from agent.config import Config, ConfigError
from agent.firmware.clock import CsmsTimeOffset
from agent.firmware.updater import CANCEL_DONE, CANCEL_NOT_RUNNING, CANCEL_TOO_LATE, Updater
from agent.ocpp import v16
from agent.slots.base import BootBackend

LOG = logging.getLogger(__name__)
TICK_INTERVAL = 1.0  # seconds between progress events, at most
PROGRESS_PHASES = frozenset({"downloading", "verifying"})
_ACCEPTED = (v16.UpdateFirmwareStatus.ACCEPTED, v16.UpdateFirmwareStatus.ACCEPTED_CANCELED)

Post = Callable[[Callable[[], None]], None]


class Api:
    def __init__(self, config: Config, post: Post) -> None:
        self._config = config
        self._post = post
        self.events = EventLog(config.state_dir / EVENTS_FILE, on_change=self._changed)
        self.server = ApiServer(
            config.api.socket,
            config.api.group,
            config.api.max_clients,
            self.events,
            self._dispatch,
        )
        self._offset = CsmsTimeOffset()  # CSMS time minus ours, from boot_accepted
        self._updater: Updater | None = None
        self._gate: HostGate | None = None
        self._boot_reason = "PowerUp"
        self._said_waiting: int | None = None
        self._said_progress: dict[str, Any] | None = None
        self._tick_due = 0.0

    # --- wiring (the daemon's constructor) ----------------------------------------------------

    def charger(self, backend: BootBackend) -> HostGate:
        self._gate = HostGate(self._config, backend, self._request_id)
        return self._gate

    def attach(self, updater: Updater, boot_reason: str) -> None:
        self._updater = updater
        self._boot_reason = boot_reason

    def csms_offset(self) -> float | None:
        """For the trusted clock: the host's CSMS time, as an offset to ours."""
        return self._offset()

    def start(self) -> None:
        try:
            self.server.start()
        except SocketError as exc:
            raise ConfigError(f"{self._config.source}: [api] socket: {exc}") from None

    def stop(self) -> None:
        self.server.stop()

    # --- the loop's turn ---------------------------------------------------------------------

    def tick(self) -> None:
        """About once a second: the gate and progress events (live, not journalled)."""
        now = time.monotonic()
        if now < self._tick_due:
            return
        self._tick_due = now + TICK_INTERVAL
        waiting = self._waiting()
        if waiting != self._said_waiting:
            self._said_waiting = waiting
            if waiting is not None:
                self.server.broadcast(_gate_event(waiting))
        progress = self._progress()
        if progress is not None and progress != self._said_progress:
            self.server.broadcast(progress)
        self._said_progress = progress

    def _progress(self) -> dict[str, Any] | None:
        snap = self._updater.snapshot() if self._updater is not None else None
        if not snap or snap.get("phase") not in PROGRESS_PHASES or "bytes_done" not in snap:
            return None
        eta = snap.get("eta")
        return {
            "event": "progress",
            "request_id": snap["request_id"],
            "phase": snap["phase"],
            "bytes_done": snap["bytes_done"],
            "bytes_total": snap.get("bytes_total"),
            "eta_s": round(eta, 1) if isinstance(eta, float) else None,
        }

    # --- requests ----------------------------------------------------------------------------

    def _changed(self) -> None:
        self.server.wake()

    def _dispatch(self, client: int, line: bytes) -> None:
        """The server thread's hand-off: answered on the loop thread, in order."""
        self._post(lambda: self._answer(client, line))

    def _answer(self, client: int, line: bytes) -> None:
        request_id: Any = None
        try:
            request = protocol.parse_request(line)
            request_id = request.id
            method = _METHODS.get(request.method)
            if method is None:
                raise ApiError(protocol.UNKNOWN_METHOD, f"no method {request.method!r}")
            result = method(self, client, request)
        except ApiError as exc:
            if request_id is None:
                request_id = protocol.request_id_of(line)
            self.server.reply(client, protocol.error_line(request_id, exc.code, str(exc)))
            return
        except Exception:  # a bug must not take the daemon's loop down
            LOG.exception("local API: request failed")
            # Fixed words: an exception's text can name files, which a host may pass on.
            line = protocol.error_line(request_id, protocol.INTERNAL, protocol.INTERNAL_MESSAGE)
            self.server.reply(client, line)
            return
        if result is not None:
            self.server.reply(client, {"id": request.id, "result": result})

    def _hello(self, client: int, request: Request) -> None:
        protocol.only(request.params, "api")
        version = protocol.integer(request.params, "api")
        if version != protocol.API_VERSION:
            raise ApiError(protocol.BAD_PARAMS, f"api: this agent speaks {protocol.API_VERSION}")
        result = {
            "api": protocol.API_VERSION,
            "agent_version": __version__,
            "boot_reason": self._boot_reason,
        }
        waiting = self._waiting()
        live = (_gate_event(waiting),) if waiting is not None else ()
        self.server.reply(client, {"id": request.id, "result": result}, subscribe=True, live=live)

    def _start_update(self, client: int, request: Request) -> dict[str, Any] | None:
        update = protocol.update_request(request.params)
        updater = self._require_updater()
        # Whatever this request causes waits for the host's CALLRESULT (response_sent); set
        # before the answer is known: an accepted request's cancel of the running one emits.
        seconds = self._config.api.response_timeout
        hold = self.server.hold(update.request_id, self.events.next_seq, seconds)
        try:
            conf = updater.on_request(update)
        except BaseException:
            self.server.drop_hold(hold)
            raise
        LOG.info("local API: start_update %s answered %s", update.request_id, conf.status)
        result = {"status": conf.status.value}
        if conf.status in _ACCEPTED:
            updater.after_request(update, conf)
            return result
        # Refused: what it caused (the certificate's security event) follows the answer at
        # once; a running update's events are not held until response_sent for it.
        self.server.reply(client, {"id": request.id, "result": result}, unhold=hold)
        return None

    def _response_sent(self, client: int, request: Request) -> dict[str, Any]:
        protocol.only(request.params, "request_id")
        request_id = protocol.integer(request.params, "request_id")
        assert request_id is not None
        self.server.release(request_id)
        return {}

    def _get_status(self, client: int, request: Request) -> dict[str, Any]:
        protocol.only(request.params)
        triggered = self._require_updater().reporter.triggered()
        result: dict[str, Any] = {"status": triggered.status.value}
        if triggered.request_id is not None:
            result["request_id"] = triggered.request_id
        return result

    def _allow_installation(self, client: int, request: Request) -> dict[str, Any]:
        protocol.only(request.params, "request_id")
        wanted = protocol.integer(request.params, "request_id", required=False)
        current = self._request_id()
        if current is None:
            raise ApiError(protocol.NO_UPDATE, "no update is known")
        if wanted is not None and wanted != current:
            raise ApiError(protocol.NO_UPDATE, f"the current update is {current}, not {wanted}")
        assert self._gate is not None
        self._gate.allow(current)
        return {"request_id": current}

    def _boot_accepted(self, client: int, request: Request) -> dict[str, Any]:
        protocol.only(request.params, "csms_time")
        csms_time = protocol.moment(request.params, "csms_time")
        if csms_time is not None:
            moment = datetime.datetime.fromtimestamp(csms_time, datetime.UTC)
            problem = self._offset.propose(moment, "local API boot_accepted csms_time")
            if problem is not None:  # nothing recorded: not the time, not the acceptance
                raise ApiError(
                    protocol.BAD_PARAMS,
                    f"csms_time: {problem}; nothing was recorded (send boot_accepted again, "
                    "without csms_time if the CSMS's clock is wrong)",
                )
        LOG.info("local API: the host's BootNotification was accepted by the CSMS")
        self._require_updater().csms_accepted()
        return {}

    def _get_boot_reason(self, client: int, request: Request) -> dict[str, Any]:
        protocol.only(request.params)
        return {"boot_reason": self._boot_reason}

    def _ack(self, client: int, request: Request) -> dict[str, Any]:
        protocol.only(request.params, "seq")
        seq = protocol.integer(request.params, "seq")
        assert seq is not None
        return {"acked": self.events.acknowledge_through(seq)}

    def _cancel(self, client: int, request: Request) -> dict[str, Any]:
        """The host cancels an update before its trial is armed: one terminal status follows
        as a `status` event (DownloadFailed or InstallationFailed, reason "cancelled by the
        host"). Refused once the arming began (L01.FR.27), as a new request would be."""
        protocol.only(request.params, "request_id", "reason")
        request_id = protocol.integer(request.params, "request_id")
        assert request_id is not None
        reason = request.params.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 200:
            raise ApiError(protocol.BAD_PARAMS, "reason must be a string of at most 200")
        why = f"cancelled by the host: {reason}" if reason else "cancelled by the host"
        answer = self._require_updater().cancel(request_id, why)
        if answer == CANCEL_DONE:
            return {"request_id": request_id}
        if answer == CANCEL_NOT_RUNNING:
            raise ApiError(protocol.NO_UPDATE, f"no update {request_id} is running")
        if answer == CANCEL_TOO_LATE:
            raise ApiError(protocol.TOO_LATE, f"update {request_id}: the trial is armed")
        raise ApiError(protocol.INTERNAL, f"update {request_id}: the cancel could not be saved")

    # --- helpers -----------------------------------------------------------------------------

    def _require_updater(self) -> Updater:
        assert self._updater is not None, "Api.attach was not called"
        return self._updater

    def _waiting(self) -> int | None:
        """The update waiting for allow_installation (not one replaced meanwhile)."""
        waiting = self._gate.waiting if self._gate is not None else None
        return waiting if waiting is not None and waiting == self._request_id() else None

    def _request_id(self) -> int | None:
        """The update the gate and allow_installation are about: the saved job's."""
        snap = self._updater.snapshot() if self._updater is not None else None
        request_id = snap.get("request_id") if snap else None
        return request_id if isinstance(request_id, int) else None


def _gate_event(request_id: int) -> dict[str, Any]:
    return {"event": "gate", "request_id": request_id, "waiting": "allow_installation"}


Method = Callable[[Api, int, Request], "dict[str, Any] | None"]
_METHODS: dict[str, Method] = {
    "hello": Api._hello,
    "start_update": Api._start_update,
    "response_sent": Api._response_sent,
    "get_status": Api._get_status,
    "allow_installation": Api._allow_installation,
    "boot_accepted": Api._boot_accepted,
    "get_boot_reason": Api._get_boot_reason,
    "ack": Api._ack,
    "cancel": Api._cancel,
}
