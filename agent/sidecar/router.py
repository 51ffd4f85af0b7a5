"""Who gets each frame in sidecar mode: the CSMS, the charger's stack, or the agent's session.

Rules (issue 13, mode 1):
- Every frame the router does not handle itself is forwarded unchanged, byte for byte, and
  in order, both ways.
- The agent handles SignedUpdateFirmware, TriggerMessage/ExtendedTriggerMessage for a
  firmware status, and (when configured to refuse it) the legacy UpdateFirmware; everything
  else from the CSMS goes to the stack.
- The charge point side has at most one CALL in flight to the CSMS (OCPP-J §4.1.1): a CALL
  from the stack waits behind one of the agent's and the other way round. Answers are routed
  to the owner of that one CALL, so the stack's and the agent's message ids cannot be
  confused even when equal. Answers to the CSMS never wait behind a CALL: they go at once,
  and what they trigger (a reconnect, the network priority) runs only after.
- What the router learns on the way: the CSMS's answer to the stack's BootNotification is
  the session's registration (and the trial boot's "CSMS accepted" signal); the stack's
  transaction messages say whether a charging session runs (the install gate). Which
  messages those are, and which CSMS CALLs are the agent's, differ per OCPP version: one
  `Traffic` value per version says so (1.6: StartTransaction/StopTransaction; 2.0.1 and 2.1:
  TransactionEvent Started/Ended, UpdateFirmware and TriggerMessage handled by the 2.x
  adapter). 2.1's CALLRESULTERROR and SEND frames pass through both ways.
- The stack away: CSMS CALLs meant for it are answered with CALLERROR InternalError
  ("charging stack not connected"), and so are those it had not answered when it left, and
  one arriving while it leaves DOWNLINK_LIMIT unanswered (it is dropped).
- The connection's keys and certificates are the agent's (`agent.security.handlers`): a
  ChangeConfiguration of one of its keys, InstallCertificate, GetInstalledCertificateIds,
  DeleteCertificate, CertificateSigned and ExtendedTriggerMessage SignChargePointCertificate
  never reach the stack. A GetConfiguration naming only the agent's keys is
  answered by the agent; any other goes to the stack without the agent's keys, and the stack's
  answer comes back with them merged in (and any of them the stack reported taken out).
- In 2.0.1 and 2.1 the certificates are shared by type (`agent.security.handlers2x`): the CSMS
  and manufacturer roots and the ChargingStationCertificate are the agent's, the ISO 15118
  types the stack's. InstallCertificate and CertificateSigned go by their type, DeleteCertificate
  by whether the agent holds that hash, TriggerMessage SignChargingStationCertificate is the
  agent's; a GetInstalledCertificateIds naming only the agent's types is the agent's, only the
  stack's the stack's, and one naming both or none goes to the stack and comes back with the
  agent's roots merged in (a `Merge`; the agent's alone while the stack is away).
- 2.x: the connection's variables and network profiles are the agent's
  (`agent.security.profile2x`): SetNetworkProfile never reaches the stack; a GetVariables or
  SetVariables naming only the agent's variables is answered by the agent, one naming both is
  split (`agent.sidecar.split`) and answered in the request's order. Reset stays the stack's;
  when the stack accepts it, the agent applies the network priority (B10); when it schedules
  it, once the stack's link next drops while the CSMS's is up (the stack going down for it).
- 2.x GetBaseReport FullInventory/ConfigurationInventory (B07) lists the agent's variables
  too: the stack reports first; its last NotifyReport for that requestId (tbc false) goes on
  with tbc true, and the agent's NotifyReport follows it (seqNo after the stack's, the last
  with tbc false). The stack answering EmptyResultSet or NotSupported, away, or gone before
  answering: the answer is Accepted and the agent's report is the whole report (seqNo 0).
  SummaryInventory (availability and problems) holds none of the agent's variables, and
  GetReport (by component or criteria) stays the stack's alone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeGuard

from agent.ocpp import v16, v201
from agent.ocpp.devicemodel import DeviceModel
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
from agent.ocpp.session import Session
from agent.ocpp.validate import from_wire
from agent.security.handlers import SecurityHandlers
from agent.security.handlers2x import SIGN_TRIGGER, CertificateHandlers2x
from agent.sidecar.split import Merge, StackAnswer, split_variables

LOG = logging.getLogger(__name__)
# Frames from the stack and the agent waiting for the one in-flight CALL to be answered. A
# well-behaved stack has one CALL and a few answers here; more means it is flooding us.
UPLINK_LIMIT = 64
# CSMS CALLs forwarded to the stack and not yet answered (answered for it if it leaves).
DOWNLINK_LIMIT = 64
FIRMWARE_TRIGGERS = frozenset({"FirmwareStatusNotification"})
CERTIFICATE_ACTIONS = frozenset(
    {
        v16.Action.INSTALL_CERTIFICATE,
        v16.Action.GET_INSTALLED_CERTIFICATE_IDS,
        v16.Action.DELETE_CERTIFICATE,
        v16.Action.CERTIFICATE_SIGNED,
    }
)
GET_CONFIGURATION_MAX_KEYS = v16.GET_CONFIGURATION_MAX_KEYS  # the same bound as direct mode
STACK_AWAY = "the charging stack is not connected to the charge point's OCPP sidecar"
STACK_LEFT = "the charging stack disconnected before answering"
# GetBaseReports the stack accepted whose last NotifyReport the agent's report follows; a
# CSMS asks for one at a time, a few cover one it gave up on.
REPORTS_PENDING = 4

SendText = Callable[[str], None]
# CSMS CALL ids the agent answered itself, remembered so that a 2.1 CALLRESULTERROR about
# one of those answers reaches the agent's session and not the stack.
ANSWERED_MEMORY = 16
# A transaction id: 1.6's integer, 2.x's string.
TransactionId = int | str


@dataclasses.dataclass(frozen=True)
class Step:
    """What one of the stack's CALLs (or the CSMS's answer to it) says about its transactions:
    `starting` (1.6: the id comes with the answer), `started` or `ended` transaction `id`."""

    kind: str
    id: TransactionId | None = None


@dataclasses.dataclass(frozen=True)
class Traffic:
    """One OCPP version's words for what the router handles or learns."""

    firmware_update: str  # the CSMS's CALL that starts a secure update: always the agent's
    legacy_update: str | None  # 1.6's unsigned UpdateFirmware: the agent's when refused
    triggers: frozenset[str]  # CALLs that may ask for a firmware status
    learn_call: Callable[[Call], Step | None]
    learn_answer: Callable[[str, dict[str, Any]], Step | None]
    # 2.x, the connection's (with a device model given): CALLs that are the agent's, CALLs
    # split between the agent and the stack, and the stack's CALL whose acceptance applies
    # the network priority.
    network: frozenset[str] = frozenset()
    variables: frozenset[str] = frozenset()
    reset: str | None = None
    # The connection's keys and certificates, given the version's handlers (`agent.security`):
    # a CALL that is the agent's alone, the CALL merging the agent's keys into the stack's
    # answer (1.6's GetConfiguration), and one merging the agent's certificates (2.x).
    security_call: Callable[[Call, Any], bool] = lambda call, security: False
    configuration: str | None = None
    certificates: Callable[[Call, Any], Merge | None] = lambda call, security: None
    # 2.x: the CSMS's CALL asking for a report and the stack's CALLs carrying it (B07).
    base_report: str | None = None
    notify_report: str | None = None


def _v16_call(call: Call) -> Step | None:
    if call.action == "StartTransaction":
        return Step("starting")
    if call.action == "StopTransaction":
        return Step("ended", call.payload.get("transactionId"))
    return None


def _v16_answer(action: str, payload: dict[str, Any]) -> Step | None:
    if action == "StartTransaction":
        return Step("started", payload.get("transactionId"))
    return None


def _v2x_call(call: Call) -> Step | None:
    """TransactionEvent carries its id from the start; an Updated one the agent never saw
    start (the agent restarted mid-session) counts as running too."""
    if call.action != "TransactionEvent":
        return None
    info = call.payload.get("transactionInfo")
    transaction = info.get("transactionId") if isinstance(info, dict) else None
    event = call.payload.get("eventType")
    if event in ("Started", "Updated"):
        return Step("started", transaction)
    if event == "Ended":
        return Step("ended", transaction)
    return None


def _nothing(action: str, payload: dict[str, Any]) -> Step | None:
    return None


def _v16_security(call: Call, security: SecurityHandlers) -> bool:
    """1.6: every certificate message, the certificate trigger and the agent's keys."""
    if call.action in CERTIFICATE_ACTIONS:
        return True
    if call.action == v16.Action.EXTENDED_TRIGGER_MESSAGE:
        wanted = call.payload.get("requestedMessage")
        return bool(wanted == v16.ExtendedTrigger.SIGN_CHARGE_POINT_CERTIFICATE)
    if call.action == v16.Action.CHANGE_CONFIGURATION:
        return security.owns(call.payload.get("key"))
    return False


def _v2x_security(call: Call, certificates: CertificateHandlers2x) -> bool:
    """2.x: the agent's certificate types, its hashes, its certificate's trigger; every
    other type (ISO 15118) is the stack's."""
    payload = call.payload
    if call.action == "InstallCertificate":
        return certificates.owns_type(payload.get("certificateType"))
    if call.action == "CertificateSigned":
        return certificates.owns_signed(payload)
    if call.action == "DeleteCertificate":
        return certificates.holds(payload.get("certificateHashData"))
    if call.action == "TriggerMessage":
        return bool(payload.get("requestedMessage") == SIGN_TRIGGER)
    if call.action == "GetInstalledCertificateIds":
        types = _certificate_types(payload)
        return bool(types) and all(certificates.owns_type(t) for t in types or [])
    return False


def _v2x_certificates(call: Call, certificates: CertificateHandlers2x) -> Merge | None:
    """GetInstalledCertificateIds naming the stack's types and the agent's, or none: the
    stack's answer with the agent's roots merged in, the agent's alone without the stack.
    Naming only the stack's types (or malformed) it is the stack's alone."""
    if call.action != "GetInstalledCertificateIds":
        return None
    types = _certificate_types(call.payload)
    if types is _MALFORMED or (types and not any(certificates.owns_type(t) for t in types)):
        return None

    def merge(answer: StackAnswer) -> str | None:
        if isinstance(answer, CallError):
            return None  # passes as it is
        if isinstance(answer, str):  # the stack away or gone: the agent's part alone
            return CallResult(call.unique_id, certificates.ids_answer(types)).to_json()
        merged = _merged_certificate_ids(answer.payload, certificates, types)
        return CallResult(answer.unique_id, merged).to_json()

    return Merge(merge)


V16_TRAFFIC = Traffic(
    firmware_update=v16.Action.SIGNED_UPDATE_FIRMWARE,
    legacy_update=v16.Action.UPDATE_FIRMWARE,
    triggers=frozenset({v16.Action.TRIGGER_MESSAGE, v16.Action.EXTENDED_TRIGGER_MESSAGE}),
    learn_call=_v16_call,
    learn_answer=_v16_answer,
    security_call=_v16_security,
    configuration=v16.Action.GET_CONFIGURATION,
)
V2X_TRAFFIC = Traffic(
    firmware_update="UpdateFirmware",
    legacy_update=None,
    triggers=frozenset({"TriggerMessage"}),
    learn_call=_v2x_call,
    learn_answer=_nothing,
    network=frozenset({"SetNetworkProfile"}),
    variables=frozenset({"GetVariables", "SetVariables"}),
    reset="Reset",
    security_call=_v2x_security,
    certificates=_v2x_certificates,
    base_report="GetBaseReport",
    notify_report="NotifyReport",
)
TRAFFIC = {"1.6": V16_TRAFFIC, "2.0.1": V2X_TRAFFIC, "2.1": V2X_TRAFFIC}


class Router:
    """Runs on the daemon's loop thread; the transports are given as send functions."""

    def __init__(
        self,
        session: Session,
        send_csms: SendText,
        send_stack: SendText,
        drop_stack: Callable[[], None],
        *,
        refuse_update_firmware: bool = True,
        call_timeout: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        security: SecurityHandlers | CertificateHandlers2x | None = None,
        dialect: Dialect = V16,
        device: DeviceModel | None = None,
        on_reset: Callable[[], object] = lambda: None,
    ) -> None:
        self._session = session
        self._dialect = dialect
        self._traffic = TRAFFIC[dialect.version]
        self._answered: deque[str] = deque(maxlen=ANSWERED_MEMORY)
        self._send_csms = send_csms
        self._send_stack = send_stack
        self._drop_stack = drop_stack
        self._refuse_update_firmware = refuse_update_firmware
        self._call_timeout = call_timeout
        self._now = monotonic
        self.csms_up = False
        self.stack_up = False
        self._uplink: deque[tuple[str, str, Any]] = deque()  # (owner, text, parsed frame)
        self._in_flight: tuple[str, str, str] | None = None  # (owner, unique id, action)
        self._in_flight_deadline = 0.0
        self._to_stack: dict[str, str] = {}  # CSMS CALL ids awaiting the stack's answer
        self._security = security
        self._device = device  # 2.x: the agent's variables (the connection's)
        self._on_reset = on_reset
        self._reset_scheduled = False  # the stack answered Reset `Scheduled`: not yet reset
        # CSMS CALLs forwarded to the stack whose answer the agent completes (its keys in a
        # GetConfiguration, its entries in a Get/SetVariables).
        self._merge: dict[str, Merge] = {}
        # requestId: reportBase of the stack's reports the agent's report completes.
        self._reports: dict[int, v201.ReportBase] = {}
        self._transactions: dict[TransactionId, None] = {}  # in the order they started
        self._starting = False  # a StartTransaction awaits its transactionId
        self._lock = threading.Lock()

    # --- what others ask --------------------------------------------------------------------

    def transactions_running(self) -> list[TransactionId]:
        """Transactions the stack started and has not stopped, -1 for a StartTransaction still
        awaiting its id (read from the worker thread)."""
        with self._lock:
            return list(self._transactions) + ([-1] if self._starting else [])

    # --- the CSMS link ----------------------------------------------------------------------

    def csms_connected(self) -> None:
        self.csms_up = True
        self._session.connected_with(self.from_agent)

    def csms_disconnected(self) -> None:
        """The stack must see its own link drop: it keeps and resends what it had in flight."""
        self.csms_up = False
        self._session.disconnected()
        self._uplink.clear()
        self._land()
        self._to_stack.clear()
        self._merge.clear()
        self._reports.clear()
        if self.stack_up:
            self._drop_stack()

    def from_csms(self, text: str) -> None:
        try:
            frame = unpack(text, ocpp21=self._dialect.ocpp21_frames)
        except FrameError:
            frame = None
        if isinstance(frame, Call):
            self._csms_call(frame, text)
        elif isinstance(frame, CallResult | CallError):
            self._csms_answer(frame, text)
        elif isinstance(frame, CallResultError) and frame.unique_id in self._answered:
            self._session.receive(text)  # about an answer of the agent's: it logs it
        elif isinstance(frame, CallResultError | Send):
            self._csms_unanswered(text)
        else:  # malformed or unknown: the session answers or logs it as in direct mode
            self._session.receive(text)

    def _csms_unanswered(self, text: str) -> None:
        """2.1: a frame nobody answers (SEND, or a CALLRESULTERROR about one of the stack's
        answers) goes to the stack as it came, or nowhere when the stack is away."""
        if self.stack_up:
            self._to_stack_send(text)
        else:
            LOG.info("the charging stack is away: a frame for it dropped (never answered)")

    def _csms_call(self, call: Call, text: str) -> None:
        if self._ours(call):
            self._answered.append(call.unique_id)
            self._session.receive(text)
            return
        merge: Merge | None = None
        security = self._security
        if call.action == self._traffic.configuration and isinstance(security, SecurityHandlers):
            wanted = _configuration_keys(call.payload)
            if wanted is not None and wanted is not _MALFORMED:
                mine = [k for k in wanted if security.owns(k)]
                if mine and len(mine) == len(wanted):
                    self._answer_configuration(call, mine)
                    return
                if mine:
                    rest = [k for k in wanted if not security.owns(k)]
                    text = Call(call.unique_id, call.action, {"key": rest}).to_json()
                merge = self._configuration_merge(mine)
            elif wanted is None:
                merge = self._configuration_merge(None)
            else:  # malformed: the stack answers it; nothing of ours to add
                merge = self._configuration_merge([])
        elif call.action in self._traffic.variables and self._device is not None:
            split = split_variables(call, text, self._dialect, self._device)
            if split.who == "agent":
                self._answered.append(call.unique_id)
                self._session.receive(text)
                return
            if split.who == "both":
                assert split.text is not None
                text, merge = split.text, split.merge
        elif call.action == self._traffic.base_report and self._device is not None:
            merge = self._base_report_merge(call, self._device)
        elif security is not None:
            merge = self._traffic.certificates(call, security)
        why = None if self.stack_up else STACK_AWAY
        if self.stack_up and len(self._to_stack) >= DOWNLINK_LIMIT:
            # A split CALL has already applied the agent's part: answered like the others the
            # stack leaves (its part refused), so the after-action (a reconnect) follows too.
            LOG.warning("the charging stack leaves %d CALLs unanswered: dropped", DOWNLINK_LIMIT)
            self._drop_stack()
            why = STACK_LEFT
        if why is not None:
            answer = merge.merge(why) if merge is not None else None
            if answer is not None and merge is not None:  # the agent's part, the stack's refused
                LOG.warning("answering the stack's part of %s: %s", call.action, why)
                self._queue("agent", answer, unpack(answer))
                self._after(merge.after, call.action)
                return
            LOG.warning("answering %s with InternalError: %s", call.action, why)
            self._to_csms(CallError.answering(call.unique_id, InternalError(why)).to_json())
            return
        self._to_stack[call.unique_id] = call.action
        if merge is not None:
            self._merge[call.unique_id] = merge
        self._to_stack_send(text)

    def _ours(self, call: Call) -> bool:
        traffic = self._traffic
        if call.action == traffic.firmware_update:
            return True
        if self._security is not None and traffic.security_call(call, self._security):
            return True
        if self._device is not None and call.action in traffic.network:
            return True
        if call.action == traffic.legacy_update:
            return self._refuse_update_firmware
        if call.action in traffic.triggers:
            return call.payload.get("requestedMessage") in FIRMWARE_TRIGGERS
        return False

    def _csms_answer(self, answer: CallResult | CallError, text: str) -> None:
        flight = self._in_flight
        if flight is None or flight[1] != answer.unique_id:
            # Late (after a timeout) or unknown: the session logs and ignores it.
            self._session.receive(text)
            return
        owner, _, action = flight
        if owner == "stack" and isinstance(answer, CallResult):
            self._learn(action, answer.payload)
        self._land()
        if owner == "agent":
            self._session.receive(text)
        else:
            if self.stack_up:
                self._to_stack_send(text)
            else:
                LOG.info("dropping the answer to the stack's %s: the stack left", action)
        self._pump()

    # --- the stack link ---------------------------------------------------------------------

    def stack_connected(self) -> None:
        self.stack_up = True

    def stack_disconnected(self) -> None:
        self.stack_up = False
        self._uplink = deque(entry for entry in self._uplink if entry[0] == "agent")
        for unique_id, action in self._to_stack.items():
            merge = self._merge.get(unique_id)
            answer = merge.merge(STACK_LEFT) if merge is not None else None
            if answer is not None and merge is not None:
                LOG.warning("answering the stack's part of %s: %s", action, STACK_LEFT)
                self._queue("agent", answer, unpack(answer))
                self._after(merge.after, action)
                continue
            LOG.warning("answering %s with InternalError: %s", action, STACK_LEFT)
            self._to_csms(CallError.answering(unique_id, InternalError(STACK_LEFT)).to_json())
        self._to_stack.clear()
        self._merge.clear()
        self._reports.clear()  # its reports ended unfinished: the CSMS asks again
        self._pump()
        if self._reset_scheduled and self.csms_up:
            # The stack's link dropped on its own (not with the CSMS's, which the router cuts
            # itself): taken as its scheduled reset, which the agent's connection follows (B10).
            self._reset_scheduled = False
            self._after(self._on_reset, "a scheduled Reset")

    def from_stack(self, text: str) -> None:
        try:
            frame = unpack(text, ocpp21=self._dialect.ocpp21_frames)
        except FrameError as exc:
            frame = None
            LOG.warning("forwarding a malformed frame from the charging stack: %s", exc)
        known = not isinstance(frame, CallResult | CallError) or frame.unique_id in self._to_stack
        merge: Merge | None = None
        reset = False
        report: tuple[int, v201.ReportBase, int] | None = None
        if isinstance(frame, Call) and frame.action == self._traffic.notify_report:
            text, report = self._stack_report(frame, text)
        if not known:
            LOG.warning("the stack answers a CALL the CSMS did not send it; forwarded")
        elif isinstance(frame, CallResult | CallError):
            action = self._to_stack.pop(frame.unique_id)
            merge = self._merge.pop(frame.unique_id, None)
            if merge is not None:
                text = merge.merge(frame) or text
            status = frame.payload.get("status") if isinstance(frame, CallResult) else None
            reset = action == self._traffic.reset and status == "Accepted"
            if action == self._traffic.reset and status == "Scheduled":
                self._reset_scheduled = True  # applied when the stack goes down for it
        self._queue("stack", text, frame)  # an answer: handed to the CSMS's link at once
        if merge is not None:
            self._after(merge.after, "a split CALL")
        if reset:  # the stack resets the station: the agent's connection follows (B10)
            self._reset_scheduled = False
            self._after(self._on_reset, "Reset")
        if report is not None and self._device is not None:
            self._device.send_base_report(*report)  # queued behind the stack's last

    @staticmethod
    def _after(action: Callable[[], object], what: str) -> None:
        """What an answer the CSMS now has triggers (a reconnect, the network priority): a
        failure there is logged; it must not unwind the frame's handling (nor the daemon)."""
        try:
            action()
        except Exception:
            LOG.exception("what follows the answer to %s failed", what)

    # --- GetBaseReport: the stack's report, then the agent's (B07) ----------------------------

    def _base_report_merge(self, call: Call, device: DeviceModel) -> Merge | None:
        """A report listing the agent's variables: the stack's answer completed, or the
        agent's answer and report alone when the stack cannot give one."""
        request_id, word = call.payload.get("requestId"), call.payload.get("reportBase")
        if type(request_id) is not int or word not in set(v201.ReportBase):
            return None  # malformed: the stack answers it as it would without the agent
        base = v201.ReportBase(word)
        if not device.reports(base):
            return None  # SummaryInventory: none of the agent's variables
        alone = {"after": False}

        def merge(answer: StackAnswer) -> str | None:
            if isinstance(answer, CallError):
                return None
            status = answer.payload.get("status") if isinstance(answer, CallResult) else None
            if status == "Accepted":
                self._remember_report(request_id, base)
                return None
            if isinstance(answer, CallResult) and status not in ("EmptyResultSet", "NotSupported"):
                return None  # Rejected (or malformed) passes as it is
            alone["after"] = True
            return CallResult(call.unique_id, {"status": "Accepted"}).to_json()

        def after() -> None:
            if alone["after"]:
                device.send_base_report(request_id, base)

        return Merge(merge, after)

    def _remember_report(self, request_id: int, base: v201.ReportBase) -> None:
        self._reports.pop(request_id, None)
        while len(self._reports) >= REPORTS_PENDING:
            del self._reports[next(iter(self._reports))]  # the oldest: given up on
        self._reports[request_id] = base

    def _stack_report(
        self, call: Call, text: str
    ) -> tuple[str, tuple[int, v201.ReportBase, int] | None]:
        """The stack's NotifyReport; its last of a report the agent completes goes on with
        tbc true, and the agent's report (requestId, base, first seqNo) follows it."""
        payload = call.payload
        request_id, seq_no = payload.get("requestId"), payload.get("seqNo")
        if (
            type(request_id) is not int
            or request_id not in self._reports
            or payload.get("tbc", False) is not False
            or type(seq_no) is not int
        ):
            return text, None
        base = self._reports.pop(request_id)
        rewritten = Call(call.unique_id, call.action, {**payload, "tbc": True}).to_json()
        return rewritten, (request_id, base, seq_no + 1)

    # --- GetConfiguration: the stack's keys and the agent's ---------------------------------

    def _answer_configuration(self, call: Call, mine: list[str]) -> None:
        """Only the agent's keys asked for: the stack need not be asked (nor be there)."""
        assert isinstance(self._security, SecurityHandlers)  # 1.6's keys
        answer = CallResult(call.unique_id, {"configurationKey": self._security.key_values(mine)})
        self._queue("agent", answer.to_json(), answer)

    def _configuration_merge(self, mine: list[str] | None) -> Merge:
        """The agent's keys (None: all) completing the stack's GetConfiguration.conf."""

        def merge(answer: StackAnswer) -> str | None:
            if isinstance(answer, CallResult):
                return self._merged_configuration(answer, mine)
            return None  # a CALLERROR passes as it is; the stack away: InternalError

        return Merge(merge)

    def _merged_configuration(self, answer: CallResult, merge: list[str] | None) -> str:
        """The stack's GetConfiguration.conf with the agent's keys in, and none of the stack's
        own values for them (the stack no longer holds the connection they describe)."""
        assert isinstance(self._security, SecurityHandlers)  # 1.6's keys
        security = self._security
        payload = dict(answer.payload)
        theirs = payload.get("configurationKey", [])
        unknown = payload.get("unknownKey", [])
        if not isinstance(theirs, list) or not isinstance(unknown, list):
            return answer.to_json()  # malformed: forwarded as it is, the CSMS judges it
        kept = [kv for kv in theirs if not (isinstance(kv, dict) and security.owns(kv.get("key")))]
        payload["configurationKey"] = kept + security.key_values(merge)
        unknown = [key for key in unknown if not security.owns(key)]
        if unknown:
            payload["unknownKey"] = unknown
        else:
            payload.pop("unknownKey", None)
        return CallResult(answer.unique_id, payload).to_json()

    # --- the agent's own frames -------------------------------------------------------------

    def from_agent(self, text: str) -> None:
        """The session's send function: its CALLs and its answers to the CSMS's CALLs."""
        if not self.csms_up:
            raise ConnectionError("not connected")
        self._queue("agent", text, unpack(text))

    # --- the uplink ---------------------------------------------------------------------------

    def _queue(self, owner: str, text: str, frame: Any) -> None:
        if self.csms_up and isinstance(frame, CallResult | CallError | CallResultError):
            # An answer may go while a CALL is outstanding (OCPP-J §4.1.1 limits CALLs only):
            # sent at once, so whatever it triggers (a reconnect, a reset) comes after it.
            self._to_csms(text)
            return
        if owner == "agent" and isinstance(frame, Call):
            # The session sends one CALL at a time: a new one means it gave up on (and will
            # resend) any still waiting here, which must then not go out twice.
            self._uplink = deque(
                e for e in self._uplink if not (e[0] == "agent" and isinstance(e[2], Call))
            )
        if len(self._uplink) >= UPLINK_LIMIT and owner == "stack":
            LOG.warning("the charging stack sends faster than the CSMS answers: dropping it")
            self._drop_stack()
            return
        if len(self._uplink) >= 2 * UPLINK_LIMIT:  # the agent's answers to a flooding CSMS
            LOG.warning("the CSMS sends calls faster than it answers ours: an answer dropped")
            return
        self._uplink.append((owner, text, frame))
        self._pump()

    def poll(self) -> float:
        """Give up on a CALL the CSMS never answered, so the other side may send again."""
        if self._in_flight is not None:
            wait = self._in_flight_deadline - self._now()
            if wait > 0:
                return wait
            LOG.warning("no answer to the %s's %s; sending on", *self._in_flight[::2])
            self._land()
            self._pump()
        return 3600.0

    def _pump(self) -> None:
        while self._uplink and self.csms_up:
            owner, text, frame = self._uplink[0]
            if isinstance(frame, Call):
                if self._in_flight is not None:
                    return
                self._in_flight = (owner, frame.unique_id, frame.action)
                self._in_flight_deadline = self._now() + self._call_timeout * 2
                if owner == "stack":
                    self._learn_call(frame)
            self._uplink.popleft()
            self._to_csms(text)

    def _land(self) -> None:
        """The CALL in flight was answered or given up: the uplink may send the next one."""
        self._in_flight = None
        with self._lock:
            self._starting = False

    def _to_csms(self, text: str) -> None:
        try:
            self._send_csms(text)
        except Exception as exc:  # the transport reports the loss itself
            LOG.warning("sending to the CSMS failed: %s", exc)

    def _to_stack_send(self, text: str) -> None:
        try:
            self._send_stack(text)
        except Exception as exc:  # not reading, or gone: it reconnects and starts afresh
            LOG.warning("sending to the charging stack failed, dropping it: %s", exc)
            self._drop_stack()

    # --- learning from the stack's traffic ------------------------------------------------------

    def _learn_call(self, call: Call) -> None:
        self._step(self._traffic.learn_call(call))

    def _learn(self, action: str, payload: dict[str, Any]) -> None:
        if action == v16.Action.BOOT_NOTIFICATION:  # the same name in every version
            try:
                conf = from_wire(self._dialect.responses[action], self._dialect.clean(payload))
            except OcppError as exc:
                LOG.warning("invalid BootNotification.conf for the stack: %s", exc.description)
                return
            self._session.adopt_boot(conf)
            return
        self._step(self._traffic.learn_answer(action, payload))
        self._session.assume_accepted()

    def _step(self, step: Step | None) -> None:
        if step is None:
            return
        transaction = step.id
        with self._lock:
            if step.kind == "starting":
                self._starting = True
            elif step.kind == "ended":
                if _is_transaction_id(transaction) and transaction in self._transactions:
                    del self._transactions[transaction]
                    LOG.info("transaction %s stopped", transaction)
            elif (
                _is_transaction_id(transaction)
                and transaction not in self._transactions
                and len(self._transactions) < DOWNLINK_LIMIT
            ):
                self._transactions[transaction] = None
                LOG.info("transaction %s started: installs wait for it to stop", transaction)


def _is_transaction_id(value: Any) -> TypeGuard[TransactionId]:
    """1.6: an integer; 2.x: a string of at most 36 characters."""
    return type(value) is int or (isinstance(value, str) and 0 < len(value) <= 36)


_MALFORMED: list[str] = []


def _configuration_keys(payload: Any) -> list[str] | None:
    """GetConfiguration.req's `key` list (None: every key), or `_MALFORMED` when it breaks
    the schema (the stack then answers it as it would without the agent)."""
    if not isinstance(payload, dict) or set(payload) - {"key"}:
        return _MALFORMED
    keys = payload.get("key")
    if keys is None or keys == []:
        return None
    if (
        not isinstance(keys, list)
        or len(keys) > GET_CONFIGURATION_MAX_KEYS
        or not all(isinstance(k, str) and len(k) <= 50 for k in keys)
    ):
        return _MALFORMED
    return keys


def _certificate_types(payload: dict[str, Any]) -> list[str] | None:
    """GetInstalledCertificateIds' `certificateType` (None: every type), or `_MALFORMED` when
    it breaks the schema (the stack then answers it as it would without the agent)."""
    types = payload.get("certificateType")
    if types is None:
        return None
    if isinstance(types, list) and types and all(isinstance(t, str) for t in types):
        return types
    return _MALFORMED


def _merged_certificate_ids(
    answer: dict[str, Any], certificates: CertificateHandlers2x, types: list[str] | None
) -> dict[str, Any]:
    """The stack's GetInstalledCertificateIdsResponse with the agent's roots of `types` (None:
    all) in, and none of the stack's own of the agent's types (it no longer holds the
    connection or the firmware check they serve); NotFound only when neither has one."""
    theirs = answer.get("certificateHashDataChain", [])
    if not isinstance(theirs, list):
        return answer  # malformed: forwarded as it is, the CSMS judges it
    kept = [
        c
        for c in theirs
        if not (isinstance(c, dict) and certificates.owns_type(c.get("certificateType")))
    ]
    chains = kept + certificates.hash_chains(types)
    if len(chains) == len(theirs) and kept == theirs:
        return answer
    payload = {k: v for k, v in answer.items() if k not in ("certificateHashDataChain", "status")}
    if chains:
        payload.pop("statusInfo", None)  # the stack's reason for its NotFound
        return {"status": "Accepted", **payload, "certificateHashDataChain": chains}
    return {"status": "NotFound", **payload}
