"""OCPP 2.0.1 and 2.1 direct mode: the thin adapter between a 2.x session and the firmware core.

The core (Updater, JobRun, Reporter) takes and answers the one request shape it always had,
`v16.SignedUpdateFirmwareReq` / `.Conf` (the 1.6 Security Extension's copy of 2.0.1 L01, field
for field). This adapter converts UpdateFirmware to it and the answer back, adding `statusInfo`;
it answers TriggerMessage, and builds the BootNotification with its reason. The agent is the
station's only OCPP client here, so it registers the station itself. 2.0.1 and 2.1 differ only
in a few limits and in 2.1's `statusInfo` on the notification: the `Dialect`'s payload types
carry that, so nothing here asks which version it speaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.config import Config, IdentityConfig
from agent.firmware.reporting import StatusCall
from agent.firmware.updater import Updater
from agent.ocpp import v16, v201
from agent.ocpp.devicemodel import DeviceModel, Owned, Settings, Sources, owned_variables
from agent.ocpp.session import Deferred, Session
from agent.ocpp.validate import to_wire
from agent.service.availability import Availability
from agent.service.public_reason import public_reason, reason_code

LOG = logging.getLogger(__name__)
# Job phases (machine.Phase values) in which this boot is the update's reboot.
UPDATE_REBOOT_PHASES = frozenset({"rebooting", "trial"})
_REASONS = {
    v16.UpdateFirmwareStatus.REJECTED: "Rejected",
    v16.UpdateFirmwareStatus.INVALID_CERTIFICATE: "InvalidCertificate",
    v16.UpdateFirmwareStatus.REVOKED_CERTIFICATE: "RevokedCertificate",
}


def failure_info(status: v16.FirmwareStatus, reason: str | None) -> v201.StatusInfo | None:
    """Why a failure status happened, for 2.1's notification; None for any other status."""
    code = reason_code(status, reason)
    if code is None:
        return None
    # What went wrong, not the core's words: they name slots, files and allowed_hosts.
    return v201.StatusInfo(reason_code=code, additional_info=public_reason(status, reason))


def firmware_status_call(payloads: v201.Payloads) -> StatusCall:
    """The Reporter's status hook for 2.x: FirmwareStatusNotification (with statusInfo for a
    failure where the version has it)."""

    def call(
        status: v16.FirmwareStatus, request_id: int | None, reason: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        info = failure_info(status, reason)
        request = payloads.status_notification.of(status, request_id, info)
        return v201.Action.FIRMWARE_STATUS_NOTIFICATION.value, to_wire(request)

    return call


def boot_reason(job_phase: str | None) -> v201.BootReason:
    """FirmwareUpdate when the job on disk says this boot is the update's reboot."""
    if job_phase in UPDATE_REBOOT_PHASES:
        return v201.BootReason.FIRMWARE_UPDATE
    return v201.BootReason.POWER_UP


def to_core(request: v201.UpdateFirmwareRequest) -> v16.SignedUpdateFirmwareReq | None:
    """The core's request, or None when the certificate or signature is missing."""
    firmware = request.firmware
    if firmware.signing_certificate is None or firmware.signature is None:
        return None
    return v16.SignedUpdateFirmwareReq(
        request_id=request.request_id,
        firmware=v16.Firmware(
            location=firmware.location,
            retrieve_date_time=firmware.retrieve_date_time,
            signing_certificate=firmware.signing_certificate,
            signature=firmware.signature,
            install_date_time=firmware.install_date_time,
        ),
        retries=request.retries,
        retry_interval=request.retry_interval,
    )


def direct_device_model(
    config: Config,
    session: Session,
    settings: Settings,
    connection: list[Owned] | None = None,
    after_set: Callable[[], None] = lambda: None,
) -> DeviceModel:
    """The device model of direct mode, its values read from where they live. A report goes
    out once, not through the durable outbox: a CSMS that refuses NotifyReport must not hold
    up the firmware statuses queued behind it (it can ask for the report again). `connection`:
    the variables of the CSMS connection (`agent.security.profile2x`), which replace the
    table's own SecurityProfile; `after_set` runs once a SetVariables answer is out."""

    def set_heartbeat(seconds: int) -> None:
        session.heartbeat_interval = seconds  # handlers run on the loop's thread

    sources = Sources(
        allowed_schemes=config.firmware.allowed_schemes,
        security_profile=config.csms.security_profile,
        heartbeat=lambda: session.heartbeat_interval,
        set_heartbeat=set_heartbeat,
        settings=settings,
    )
    variables = owned_variables(sources) + (connection or [])
    return DeviceModel(variables, session.send_live, after_set)


class V2xAdapter:
    """Routes a 2.x session's firmware and trigger CALLs to the shared core."""

    def __init__(
        self,
        identity: IdentityConfig,
        session: Session,
        updater: Updater,
        reason: v201.BootReason,
        payloads: v201.Payloads,
        device: DeviceModel | None = None,
        availability: Availability | None = None,
    ) -> None:
        self.identity = identity
        self.session = session
        self.updater = updater
        self.reason = reason
        self.payloads = payloads
        session.route(v201.Action.UPDATE_FIRMWARE, self.on_update, self.after_update)
        session.route(v201.Action.TRIGGER_MESSAGE, self.on_trigger, self.after_trigger)
        if device is not None:  # the station's device model (B05-B07), direct mode
            session.route("GetVariables", device.get_variables)
            session.route("SetVariables", device.set_variables, device.after_set_variables)
            session.route("GetBaseReport", device.base_report, device.after_base_report)
        if availability is not None:  # each connector after each accepted boot
            session.on_accepted(availability.report_all)
        self._triggers: dict[str, tuple[Callable[[], v201.TriggerStatus], Callable[[], None]]] = {}
        self._refusals: dict[str, Callable[[], tuple[str, str] | None]] = {}

    def add_trigger(
        self,
        name: str,
        accept: Callable[[], v201.TriggerStatus],
        send: Callable[[], None],
        refusal: Callable[[], tuple[str, str] | None] = lambda: None,
    ) -> None:
        """Another part's trigger (by wire name): `accept()` answers it, `send()` follows the
        answer when Accepted (SignChargingStationCertificate: `agent.security.handlers2x`);
        `refusal()` is the statusInfo (reasonCode, public words) of a Rejected one."""
        self._triggers[name] = (accept, send)
        self._refusals[name] = refusal

    def boot_request(self) -> v201.BootNotificationRequest:
        identity = self.identity
        modem = None
        if identity.iccid or identity.imsi:
            modem = v201.Modem(iccid=identity.iccid, imsi=identity.imsi)
        station = v201.ChargingStation(
            model=identity.model,
            vendor_name=identity.vendor,
            serial_number=identity.serial_number,
            firmware_version=identity.current_firmware_version(),
            modem=modem,
        )
        return v201.BootNotificationRequest(charging_station=station, reason=self.reason)

    # --- UpdateFirmware ---------------------------------------------------------------------

    def on_update(
        self, request: v201.UpdateFirmwareRequest
    ) -> v201.UpdateFirmwareResponse | Deferred:
        """The core's answer in this version's words; later (a `Deferred`) when the core
        checks the certificate online, so that the loop thread is not held meanwhile."""
        answer, info = self.payloads.update_firmware_response, self.payloads.status_info
        core = to_core(request)
        if core is None:
            # TC_L_18_CS: a secure update needs both; answered, never a CALLERROR.
            missing = "signingCertificate" if request.firmware.signing_certificate is None else ""
            missing = missing or "signature"
            LOG.warning("refusing request %s: no %s", request.request_id, missing)
            return answer(
                status=v201.UpdateFirmwareStatus.REJECTED,
                status_info=info.of("MissingParam", f"{missing} is required"),
            )

        def worded(conf: v16.SignedUpdateFirmwareConf) -> v201.UpdateFirmwareResponse:
            reason = _REASONS.get(conf.status)
            return answer(
                status=conf.status, status_info=info.of(reason) if reason is not None else None
            )

        conf = self.updater.on_call(core)
        return conf.then(worded) if isinstance(conf, Deferred) else worded(conf)

    def after_update(
        self, request: v201.UpdateFirmwareRequest, conf: v201.UpdateFirmwareResponse
    ) -> None:
        core = to_core(request)
        if core is not None:
            self.updater.after_request(core, v16.SignedUpdateFirmwareConf(status=conf.status))

    # --- TriggerMessage ---------------------------------------------------------------------

    def on_trigger(self, request: v201.TriggerMessageRequest) -> v201.TriggerMessageResponse:
        wanted = request.requested_message.value
        status = v201.TriggerStatus.ACCEPTED
        if wanted in self._triggers:
            status = self._triggers[wanted][0]()
            refusal = self._refusals[wanted]() if status is v201.TriggerStatus.REJECTED else None
            if refusal is not None:
                info = self.payloads.status_info.of(*refusal)
                return self.payloads.trigger_message_response(status=status, status_info=info)
        elif wanted == _BOOT and self.session.accepted:
            status = v201.TriggerStatus.REJECTED  # F06.FR.17: already accepted
        elif wanted not in _TRIGGERABLE:
            status = v201.TriggerStatus.NOT_IMPLEMENTED
        return self.payloads.trigger_message_response(status=status)

    def after_trigger(
        self, request: v201.TriggerMessageRequest, conf: v201.TriggerMessageResponse
    ) -> None:
        """The answer went out first; now the triggered message (F06.FR.04)."""
        if conf.status is not v201.TriggerStatus.ACCEPTED:
            return
        wanted = request.requested_message.value
        if wanted in self._triggers:
            self._triggers[wanted][1]()
        elif wanted == _STATUS:
            last = self.updater.reporter.triggered()  # Idle, or the last status (L01.FR.28/.29)
            notification = self.payloads.status_notification.of(last.status, last.request_id)
            self.session.send_live(v201.Action.FIRMWARE_STATUS_NOTIFICATION, notification)
        elif wanted == _HEARTBEAT:
            self.session.send_live(v201.Action.HEARTBEAT, v201.HeartbeatRequest())
        elif wanted == _BOOT:
            self.reason = v201.BootReason.TRIGGERED
            self.session.request_boot_notification()


# By wire name: 2.1 has its own (longer) trigger enum with the same words.
_BOOT = v201.MessageTrigger.BOOT_NOTIFICATION.value
_HEARTBEAT = v201.MessageTrigger.HEARTBEAT.value
_STATUS = v201.MessageTrigger.FIRMWARE_STATUS_NOTIFICATION.value
_TRIGGERABLE = frozenset({_BOOT, _HEARTBEAT, _STATUS})
