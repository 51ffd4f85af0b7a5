"""The OCPP 1.6 vocabulary the agent speaks: actions, enums and one dataclass per payload.

Enums hold the exact wire spelling. Payload dataclasses name their wire keys explicitly with
`wire()` (no camelCase guessing); `agent.ocpp.validate` turns a wire dict into one of these, or
into the right CALLERROR. The schemas follow the OCA security white paper (Ed. 2/3) and the core
1.6 JSON schemas: every object has additionalProperties false.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any

MISSING: Any = dataclasses.MISSING


def wire(name: str, *, max_length: int | None = None, default: Any = MISSING) -> Any:
    """A payload field: its wire key, an optional maximum string length, optional default."""
    metadata = {"wire": name, "max_length": max_length}
    return dataclasses.field(default=default, metadata=metadata)


class Action(enum.StrEnum):
    # charge point → central system
    BOOT_NOTIFICATION = "BootNotification"
    HEARTBEAT = "Heartbeat"
    SIGNED_FIRMWARE_STATUS_NOTIFICATION = "SignedFirmwareStatusNotification"
    SECURITY_EVENT_NOTIFICATION = "SecurityEventNotification"
    # central system → charge point
    SIGNED_UPDATE_FIRMWARE = "SignedUpdateFirmware"
    EXTENDED_TRIGGER_MESSAGE = "ExtendedTriggerMessage"
    TRIGGER_MESSAGE = "TriggerMessage"
    UPDATE_FIRMWARE = "UpdateFirmware"


# Every other OCPP 1.6 action (core and security extension). The agent recognises them and
# answers NotSupported; a name outside this set and `Action` is answered NotImplemented.
OTHER_KNOWN_ACTIONS = frozenset(
    {
        "Authorize", "CancelReservation", "CertificateSigned", "ChangeAvailability",
        "ChangeConfiguration", "ClearCache", "ClearChargingProfile", "DataTransfer",
        "DeleteCertificate", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
        "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics",
        "GetInstalledCertificateIds", "GetLocalListVersion", "GetLog", "InstallCertificate",
        "LogStatusNotification", "MeterValues", "RemoteStartTransaction",
        "RemoteStopTransaction", "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile",
        "SignCertificate", "StartTransaction", "StatusNotification", "StopTransaction",
        "UnlockConnector",
    }
)  # fmt: skip


class RegistrationStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    PENDING = "Pending"
    REJECTED = "Rejected"


class FirmwareStatus(enum.StrEnum):
    """SignedFirmwareStatusNotification statuses (white paper §6.8)."""

    DOWNLOADED = "Downloaded"
    DOWNLOAD_FAILED = "DownloadFailed"
    DOWNLOADING = "Downloading"
    DOWNLOAD_SCHEDULED = "DownloadScheduled"
    DOWNLOAD_PAUSED = "DownloadPaused"
    IDLE = "Idle"  # only in a triggered notification
    INSTALLATION_FAILED = "InstallationFailed"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    INSTALL_REBOOTING = "InstallRebooting"
    INSTALL_SCHEDULED = "InstallScheduled"
    INSTALL_VERIFICATION_FAILED = "InstallVerificationFailed"
    INVALID_SIGNATURE = "InvalidSignature"
    SIGNATURE_VERIFIED = "SignatureVerified"


class UpdateFirmwareStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    ACCEPTED_CANCELED = "AcceptedCanceled"
    INVALID_CERTIFICATE = "InvalidCertificate"
    REVOKED_CERTIFICATE = "RevokedCertificate"


class TriggerStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    NOT_IMPLEMENTED = "NotImplemented"


class ExtendedTrigger(enum.StrEnum):
    BOOT_NOTIFICATION = "BootNotification"
    LOG_STATUS_NOTIFICATION = "LogStatusNotification"
    FIRMWARE_STATUS_NOTIFICATION = "FirmwareStatusNotification"
    HEARTBEAT = "Heartbeat"
    METER_VALUES = "MeterValues"
    SIGN_CHARGE_POINT_CERTIFICATE = "SignChargePointCertificate"
    STATUS_NOTIFICATION = "StatusNotification"


class CoreTrigger(enum.StrEnum):
    BOOT_NOTIFICATION = "BootNotification"
    DIAGNOSTICS_STATUS_NOTIFICATION = "DiagnosticsStatusNotification"
    FIRMWARE_STATUS_NOTIFICATION = "FirmwareStatusNotification"
    HEARTBEAT = "Heartbeat"
    METER_VALUES = "MeterValues"
    STATUS_NOTIFICATION = "StatusNotification"


class SecurityEvent(enum.StrEnum):
    """White paper §8 event types the agent raises."""

    FIRMWARE_UPDATED = "FirmwareUpdated"
    INVALID_FIRMWARE_SIGNATURE = "InvalidFirmwareSignature"
    INVALID_FIRMWARE_SIGNING_CERTIFICATE = "InvalidFirmwareSigningCertificate"
    INVALID_CENTRAL_SYSTEM_CERTIFICATE = "InvalidCentralSystemCertificate"
    STARTUP_OF_THE_DEVICE = "StartupOfTheDevice"


# --- payloads -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BootNotificationReq:
    charge_point_vendor: str = wire("chargePointVendor", max_length=20)
    charge_point_model: str = wire("chargePointModel", max_length=20)
    charge_point_serial_number: str | None = wire(
        "chargePointSerialNumber", max_length=25, default=None
    )
    charge_box_serial_number: str | None = wire(
        "chargeBoxSerialNumber", max_length=25, default=None
    )
    firmware_version: str | None = wire("firmwareVersion", max_length=50, default=None)
    iccid: str | None = wire("iccid", max_length=20, default=None)
    imsi: str | None = wire("imsi", max_length=20, default=None)
    meter_type: str | None = wire("meterType", max_length=25, default=None)
    meter_serial_number: str | None = wire("meterSerialNumber", max_length=25, default=None)


@dataclasses.dataclass(frozen=True)
class BootNotificationConf:
    status: RegistrationStatus = wire("status")
    current_time: datetime.datetime = wire("currentTime")
    interval: int = wire("interval")


@dataclasses.dataclass(frozen=True)
class HeartbeatReq:
    pass


@dataclasses.dataclass(frozen=True)
class HeartbeatConf:
    current_time: datetime.datetime = wire("currentTime")


@dataclasses.dataclass(frozen=True)
class Firmware:
    location: str = wire("location", max_length=512)
    retrieve_date_time: datetime.datetime = wire("retrieveDateTime")
    # The schema's maxLength 5500 is enforced by the certificate check instead, so an oversize
    # certificate is answered InvalidCertificate with the security event (L01.FR.24/.02), as
    # every other unusable certificate is, rather than by a bare CALLERROR.
    signing_certificate: str = wire("signingCertificate")
    signature: str = wire("signature", max_length=800)
    install_date_time: datetime.datetime | None = wire("installDateTime", default=None)


@dataclasses.dataclass(frozen=True)
class SignedUpdateFirmwareReq:
    request_id: int = wire("requestId")
    firmware: Firmware = wire("firmware")
    retries: int | None = wire("retries", default=None)
    retry_interval: int | None = wire("retryInterval", default=None)


@dataclasses.dataclass(frozen=True)
class SignedUpdateFirmwareConf:
    status: UpdateFirmwareStatus = wire("status")


@dataclasses.dataclass(frozen=True)
class SignedFirmwareStatusNotificationReq:
    status: FirmwareStatus = wire("status")
    request_id: int | None = wire("requestId", default=None)


@dataclasses.dataclass(frozen=True)
class SecurityEventNotificationReq:
    type: str = wire("type", max_length=50)
    timestamp: datetime.datetime = wire("timestamp")
    tech_info: str | None = wire("techInfo", max_length=255, default=None)


@dataclasses.dataclass(frozen=True)
class ExtendedTriggerMessageReq:
    requested_message: ExtendedTrigger = wire("requestedMessage")
    connector_id: int | None = wire("connectorId", default=None)


@dataclasses.dataclass(frozen=True)
class TriggerMessageReq:
    requested_message: CoreTrigger = wire("requestedMessage")
    connector_id: int | None = wire("connectorId", default=None)


@dataclasses.dataclass(frozen=True)
class TriggerMessageConf:
    status: TriggerStatus = wire("status")


@dataclasses.dataclass(frozen=True)
class EmptyConf:
    """`{}`: the answer to Heartbeat-less notifications (status and security notifications)."""


# The payload type of each incoming CALL the agent handles.
INCOMING_REQUESTS: dict[Action, type[Any]] = {
    Action.SIGNED_UPDATE_FIRMWARE: SignedUpdateFirmwareReq,
    Action.EXTENDED_TRIGGER_MESSAGE: ExtendedTriggerMessageReq,
    Action.TRIGGER_MESSAGE: TriggerMessageReq,
}

# The response type of each CALL the agent sends.
RESPONSES: dict[Action, type[Any]] = {
    Action.BOOT_NOTIFICATION: BootNotificationConf,
    Action.HEARTBEAT: HeartbeatConf,
    Action.SIGNED_FIRMWARE_STATUS_NOTIFICATION: EmptyConf,
    Action.SECURITY_EVENT_NOTIFICATION: EmptyConf,
}
