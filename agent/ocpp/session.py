"""OCPP-J session logic: routing, one outstanding CALL, registration and heartbeat.

The session does no I/O of its own. The daemon's loop feeds it transport events (`connected`,
`receive`, `disconnected`) and calls `poll()`, which does whatever is due and says how long the
loop may sleep. That keeps every protocol rule testable without sockets and keeps a single thread
in charge of the protocol state. What differs between 1.6, 2.0.1 and 2.1 comes from its
`Dialect`.

Rules enforced here (OCPP 1.6 §4.2, OCPP-J 1.6 §4, §5.4):
- nothing but BootNotification (and triggered messages while Pending) before Accepted; while
  Rejected, nothing is sent or answered until `interval` has passed;
- at most one CALL from the agent outstanding, with a timeout; incoming CALLs are answered
  meanwhile; a CALLRESULT for an unknown id is logged and ignored;
- BootNotification once per daemon start, not after a mere reconnect;
- durable outbox entries are sent in order; a CALLERROR or timeout is retried with back-off;
- a handler may answer later (`Deferred`): the loop goes on meanwhile, and the answer goes out
  only on the connection the CALL came on.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.ocpp.dialect import V16, Dialect
from agent.ocpp.errors import InternalError, OcppError
from agent.ocpp.messages import (
    Call,
    CallError,
    CallResult,
    CallResultError,
    FrameError,
    Send,
    unpack,
)
from agent.ocpp.outbox import Outbox
from agent.ocpp.v16 import RegistrationStatus
from agent.ocpp.validate import from_wire, to_wire

LOG = logging.getLogger(__name__)

Handler = Callable[[Any], Any]
AfterHook = Callable[[Any, Any], None]
ResultHook = Callable[[Any], None]

BOOT_NOTIFICATION, HEARTBEAT = "BootNotification", "Heartbeat"  # the same in every version
RETRY_MIN, RETRY_MAX = 5.0, 300.0
REGISTRATION_RETRY_DEFAULT = 60


class Deferred:
    """A handler's promise to answer its CALL later, when work done elsewhere (another thread)
    is over: the loop thread is not held meanwhile.

    `answer(produce)` is called on the loop thread. If the CALL can still be answered (the
    connection it came on is up), `produce()` makes the conf (and whatever it decides takes
    effect only then), the CALLRESULT goes out and the route's after-hook runs, as for an
    answer made at once. Otherwise `produce` is never called: nothing is decided for a CALL
    whose answer can no longer be sent. `then(convert)` maps the conf before it is sent."""

    def __init__(self) -> None:
        self._finish: Callable[[Callable[[], Any]], None] | None = None
        self._converts: list[Callable[[Any], Any]] = []
        self.done = False

    def then(self, convert: Callable[[Any], Any]) -> Deferred:
        self._converts.append(convert)
        return self

    def answer(self, produce: Callable[[], Any]) -> None:
        if self.done:
            return
        self.done = True
        if self._finish is None:
            LOG.error("a deferred answer that no CALL awaits: dropped")
            return
        converts = list(self._converts)

        def made() -> Any:
            conf = produce()
            for convert in converts:
                conf = convert(conf)
            return conf

        self._finish(made)


class Registration(enum.StrEnum):
    UNREGISTERED = "unregistered"
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclasses.dataclass
class _Outgoing:
    action: str
    payload: dict[str, Any]
    unique_id: str
    durable: bool = False
    on_result: ResultHook | None = None


@dataclasses.dataclass
class _Route:
    request_type: type[Any]
    handler: Handler
    after: AfterHook | None


class Session:
    """The charge point's side of one OCPP-J conversation, across reconnects."""

    def __init__(
        self,
        outbox: Outbox,
        boot_request: Callable[[], Any],
        *,
        dialect: Dialect = V16,
        call_timeout: float = 30.0,
        heartbeat_interval: int = 300,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        own_registration: bool = True,
    ) -> None:
        self._outbox = outbox
        self._dialect = dialect
        self._boot_request = boot_request
        self._call_timeout = call_timeout
        self.heartbeat_interval = heartbeat_interval
        self._now = monotonic
        self._wall = wall_clock
        self._new_id = new_id
        # False in sidecar mode: the charger's stack sends BootNotification and Heartbeat; the
        # session learns the registration from the answers it forwards (`adopt_boot`).
        self._own_registration = own_registration
        self._routes: dict[str, _Route] = {}
        self._send: Callable[[str], None] | None = None
        self._live: deque[_Outgoing] = deque()
        self._outstanding: _Outgoing | None = None
        self._outstanding_deadline = 0.0
        self._boot_due: float | None = None  # when to (re)send BootNotification
        self._heartbeat_due: float | None = None
        self._silent_until = 0.0  # Rejected: no sending, no answering before this
        self._outbox_retry_at = 0.0
        self._outbox_backoff = RETRY_MIN
        self._accepted_hooks: list[Callable[[], None]] = []
        self._link = 0  # counts connections: a deferred answer goes only to its own
        self.registration = Registration.UNREGISTERED
        self.csms_offset: float | None = None  # CSMS currentTime minus our wall clock, seconds

    # --- wiring -----------------------------------------------------------------------------

    def route(self, action: str, handler: Handler, after: AfterHook | None = None) -> None:
        """Handle incoming `action`: `handler(request) -> conf`; `after` runs once conf is sent."""
        self._routes[str(action)] = _Route(self._dialect.incoming[action], handler, after)

    def on_accepted(self, hook: Callable[[], None]) -> None:
        """Run `hook` each time the CSMS accepts our BootNotification."""
        self._accepted_hooks.append(hook)

    @property
    def connected(self) -> bool:
        return self._send is not None

    @property
    def outstanding(self) -> bool:
        """A CALL of ours awaits its answer."""
        return self._outstanding is not None

    @property
    def accepted(self) -> bool:
        return self.registration is Registration.ACCEPTED

    def csms_now(self) -> datetime.datetime | None:
        """The CSMS's clock, from the offset measured at the last BootNotification/Heartbeat."""
        if self.csms_offset is None:
            return None
        return datetime.datetime.fromtimestamp(self._wall() + self.csms_offset, datetime.UTC)

    # --- transport events -------------------------------------------------------------------

    def connected_with(self, send: Callable[[str], None]) -> None:
        self._send = send
        self._link += 1
        if not self._own_registration:
            return
        if self.registration is not Registration.ACCEPTED:
            self._boot_due = self._now()  # a new daemon run, or never accepted: register now
        elif self._heartbeat_due is None:
            self._heartbeat_due = self._now() + self.heartbeat_interval

    def disconnected(self) -> None:
        self._send = None
        self._link += 1
        if self._outstanding is not None:
            # The answer can no longer come; outbox entries stay queued and are resent.
            LOG.info("connection lost with %s outstanding", self._outstanding.action)
            self._outstanding = None
        self._live.clear()

    def receive(self, text: str | bytes) -> None:
        """One websocket text message from the CSMS."""
        try:
            frame = unpack(text, ocpp21=self._dialect.ocpp21_frames)
        except FrameError as exc:
            LOG.warning("malformed frame from the CSMS: %s", exc)
            if exc.answer is not None and not self._silenced():
                answer = exc.answer
                code = self._dialect.rpc_code(answer.code)
                self._transmit(dataclasses.replace(answer, code=code).to_json())
            return
        if frame is None:
            LOG.warning("ignoring a frame of unknown message type")
        elif isinstance(frame, Call):
            self._on_call(frame)
        elif isinstance(frame, CallResult):
            self._on_result(frame)
        elif isinstance(frame, CallError):
            self._on_error(frame)
        elif isinstance(frame, CallResultError):
            # 2.1: the CSMS could not process one of our answers. Informational only; the
            # CALL it answered was handled, and nothing may answer this frame.
            LOG.warning(
                "the CSMS could not process our answer %r: %s %s",
                frame.unique_id,
                frame.code,
                frame.description[:255],
            )
        elif isinstance(frame, Send):
            # 2.1: an unconfirmed message, never answered (part 4 §4.2.4); no SEND from a
            # CSMS concerns what the agent does. Debug only: a flood must not flood the log.
            LOG.debug("ignoring SEND %s %r", frame.action[:50], frame.unique_id)

    # --- outgoing ---------------------------------------------------------------------------

    def send_live(self, action: str, request: Any, on_result: ResultHook | None = None) -> None:
        """Queue a non-durable CALL (triggered messages, heartbeats), sent before the outbox.

        One of each action at most: a CALL of the same action still waiting takes the newer
        payload and answers both triggers, so a CSMS repeating a trigger cannot grow the queue."""
        for queued in self._live:
            if queued.action == action:
                queued.payload, queued.on_result = to_wire(request), on_result
                return
        self._live.append(_Outgoing(action, to_wire(request), self._new_id(), on_result=on_result))

    def poll(self) -> float:
        """Do what is due: time out the outstanding CALL, send the next one. Returns idle time."""
        now = self._now()
        if self._outstanding is not None and now >= self._outstanding_deadline:
            LOG.warning("no answer to %s within %ss", self._outstanding.action, self._call_timeout)
            self._failed(self._outstanding)
        if self._send is not None and self._outstanding is None and now >= self._silent_until:
            self._send_next(now)
        return max(0.0, min(self._deadlines(), default=3600.0) - self._now())

    def _deadlines(self) -> list[float]:
        if self._send is None:
            return []
        if self._outstanding is not None:
            return [self._outstanding_deadline]
        due = [d for d in (self._boot_due, self._heartbeat_due) if d is not None]
        if self.accepted and len(self._outbox):
            due.append(self._outbox_retry_at)
        if self._live and self.registration in (Registration.PENDING, Registration.ACCEPTED):
            due.append(self._silent_until)  # sendable now; before registration only the boot
        return due

    def _send_next(self, now: float) -> None:
        if self._boot_due is not None and now >= self._boot_due:
            self._boot_due = None
            request = self._boot_request()
            self._start(_Outgoing(BOOT_NOTIFICATION, to_wire(request), self._new_id()))
            return
        if self.registration in (Registration.UNREGISTERED, Registration.REJECTED):
            return
        if self._live:  # triggered messages may go out while Pending (OCPP 1.6 §4.2)
            self._start(self._live.popleft())
            return
        if not self.accepted:
            return
        head = self._outbox.head()
        if head is not None and now >= self._outbox_retry_at:
            self._start(_Outgoing(head.action, head.payload, head.unique_id, durable=True))
            return
        if self._heartbeat_due is not None and now >= self._heartbeat_due:
            self._heartbeat_due = now + self.heartbeat_interval
            self._start(_Outgoing(HEARTBEAT, {}, self._new_id()))

    def _start(self, outgoing: _Outgoing) -> None:
        self._outstanding = outgoing
        self._outstanding_deadline = self._now() + self._call_timeout
        call = Call(outgoing.unique_id, outgoing.action, outgoing.payload)
        self._transmit(call.to_json())

    def _transmit(self, text: str) -> None:
        if self._send is None:
            return
        try:
            self._send(text)
        except Exception as exc:  # the transport reports the loss; we stop using it now
            LOG.warning("send failed: %s", exc)
            self.disconnected()

    # --- incoming CALLs ---------------------------------------------------------------------

    def _silenced(self) -> bool:
        """Rejected and `interval` not yet passed: answer nothing (OCPP 1.6 §4.2)."""
        return self.registration is Registration.REJECTED and self._now() < self._silent_until

    def _on_call(self, call: Call) -> None:
        if self._silenced():
            LOG.info("registration rejected: not answering %s", call.action)
            return
        route = self._routes.get(call.action)
        if route is None:
            self._reply(call, _raising(self._dialect.unhandled(call.action)), None)
            return
        parsed: list[Any] = []

        def handle() -> Any:
            parsed.append(from_wire(route.request_type, self._dialect.clean(call.payload)))
            return route.handler(parsed[0])

        self._reply(call, handle, route, parsed)

    def _reply(
        self,
        call: Call,
        produce: Callable[[], Any],
        route: _Route | None,
        parsed: list[Any] | None = None,
    ) -> None:
        """Answer `call` with what `produce()` makes (a conf, or a Deferred to answer later),
        a CALLERROR when it raises; then the route's after-hook with the request `produce`
        parsed into `parsed`."""
        try:
            conf = produce()
            if isinstance(conf, Deferred):
                link = self._link
                conf._finish = lambda later: self._answer_later(call, later, route, parsed, link)
                return
            reply = CallResult(call.unique_id, to_wire(conf))
        except OcppError as exc:
            code = self._dialect.rpc_code(exc.code)
            LOG.warning("answering %s with %s: %s", call.action, code, exc.description)
            answer = CallError(call.unique_id, code, exc.description, exc.details)
            self._transmit(answer.to_json())
            return
        except Exception:
            LOG.exception("handler for %s failed", call.action)
            error = InternalError("the charge point failed to process the request")
            self._transmit(CallError.answering(call.unique_id, error).to_json())
            return
        self._transmit(reply.to_json())
        if route is not None and route.after is not None and parsed:
            try:
                route.after(parsed[0], conf)
            except Exception:
                LOG.exception("after-hook for %s failed", call.action)

    def _answer_later(
        self,
        call: Call,
        produce: Callable[[], Any],
        route: _Route | None,
        parsed: list[Any] | None,
        link: int,
    ) -> None:
        """A deferred answer is ready (loop thread): sent, unless its connection is gone."""
        if link != self._link or self._send is None:
            LOG.warning("not answering %s %r: its connection is gone", call.action, call.unique_id)
            return
        self._reply(call, produce, route, parsed)

    # --- answers to our CALLs ---------------------------------------------------------------

    def _take_outstanding(self, unique_id: str) -> _Outgoing | None:
        if self._outstanding is None or self._outstanding.unique_id != unique_id:
            LOG.warning("ignoring an answer to unknown message id %r", unique_id)
            return None
        outgoing, self._outstanding = self._outstanding, None
        return outgoing

    def _on_result(self, result: CallResult) -> None:
        outgoing = self._take_outstanding(result.unique_id)
        if outgoing is None:
            return
        # An outbox entry queued under another version's config has no type here: its answer
        # is taken as is rather than retried forever.
        response_type = self._dialect.responses.get(outgoing.action)
        try:
            payload = self._dialect.clean(result.payload)
            conf = payload if response_type is None else from_wire(response_type, payload)
        except OcppError as exc:
            LOG.warning("invalid %s.conf from the CSMS: %s", outgoing.action, exc.description)
            self._failed(outgoing)
            return
        if outgoing.durable:
            self._outbox.acknowledge(outgoing.unique_id)
            self._outbox_backoff = RETRY_MIN
        if outgoing.action == BOOT_NOTIFICATION:
            self._registered(conf)
        elif outgoing.action == HEARTBEAT:
            self._measure_offset(conf.current_time)
        if outgoing.on_result is not None:
            outgoing.on_result(conf)

    def _on_error(self, error: CallError) -> None:
        outgoing = self._take_outstanding(error.unique_id)
        if outgoing is not None:
            LOG.warning(
                "CSMS answered %s with %s %s", outgoing.action, error.code, error.description
            )
            self._failed(outgoing)

    def _failed(self, outgoing: _Outgoing) -> None:
        """A CALLERROR, an invalid answer or a timeout: retry what must not be lost."""
        self._outstanding = None
        now = self._now()
        if outgoing.durable:
            self._outbox_retry_at = now + self._outbox_backoff
            self._outbox_backoff = min(self._outbox_backoff * 2, RETRY_MAX)
        elif outgoing.action == BOOT_NOTIFICATION and not self.accepted:
            self._boot_due = now + self._outbox_backoff
            self._outbox_backoff = min(self._outbox_backoff * 2, RETRY_MAX)

    def _registered(self, conf: Any) -> None:
        """`conf`: the BootNotification answer of either version (status, currentTime,
        interval: the same fields and words in 1.6 and 2.0.1)."""
        self._measure_offset(conf.current_time)
        now = self._now()
        LOG.info("BootNotification %s, interval %ss", conf.status, conf.interval)
        if conf.status is RegistrationStatus.ACCEPTED:
            self.registration = Registration.ACCEPTED
            if conf.interval > 0:
                self.heartbeat_interval = conf.interval
            self._heartbeat_due = now + self.heartbeat_interval
            self._outbox_retry_at = now
            self._outbox_backoff = RETRY_MIN  # boot failures must not delay the first retry
            for hook in self._accepted_hooks:
                hook()
            return
        retry = conf.interval if conf.interval > 0 else REGISTRATION_RETRY_DEFAULT
        self._boot_due = now + retry
        if conf.status is RegistrationStatus.PENDING:
            self.registration = Registration.PENDING
        else:
            self.registration = Registration.REJECTED
            self._silent_until = now + retry

    def _measure_offset(self, csms_time: datetime.datetime) -> None:
        self.csms_offset = csms_time.timestamp() - self._wall()

    # --- sidecar mode: the registration is the charging stack's ---------------------------

    def adopt_boot(self, conf: Any) -> None:
        """The CSMS answered the stack's BootNotification: its registration is ours too."""
        self._registered(conf)
        self._boot_due = self._heartbeat_due = None

    def assume_accepted(self) -> None:
        """The CSMS answered one of the stack's CALLs after our restart without the stack
        booting again: it evidently accepts this charge point. The on-accepted hooks (the
        trial boot's health signal) wait for a real BootNotification.conf."""
        if self.registration is Registration.UNREGISTERED:
            LOG.info("the CSMS answers the charging stack: taking the registration as accepted")
            self.registration = Registration.ACCEPTED
            self._outbox_retry_at = self._now()

    def register_again(self) -> None:
        """The next connection is to another CSMS (a new network profile, B10): the station
        registers first, as after a start; nothing else is sent before that."""
        self.registration = Registration.UNREGISTERED
        self._boot_due = self._heartbeat_due = None

    def request_boot_notification(self) -> None:
        """A triggered BootNotification (ExtendedTriggerMessage / TriggerMessage)."""
        self._boot_due = self._now()


def _raising(error: Exception) -> Callable[[], Any]:
    def produce() -> Any:
        raise error

    return produce
