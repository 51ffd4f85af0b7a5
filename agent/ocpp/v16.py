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


def wire(
    name: str,
    *,
    max_length: int | None = None,
    min_items: int = 0,
    max_items: int | None = None,
    default: Any = MISSING,
) -> Any:
    """A payload field: its wire key, an optional maximum string length (of each item, for
    an array), the bounds on an array's items, an optional default."""
    metadata = {
        "wire": name,
        "max_length": max_length,
        "min_items": min_items,
        "max_items": max_items,
    }
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
    # the connection's keys and certificates (sidecar mode and direct 1.6)
    CHANGE_CONFIGURATION = "ChangeConfiguration"
    GET_CONFIGURATION = "GetConfiguration"
    INSTALL_CERTIFICATE = "InstallCertificate"
    GET_INSTALLED_CERTIFICATE_IDS = "GetInstalledCertificateIds"
    DELETE_CERTIFICATE = "DeleteCertificate"
    CERTIFICATE_SIGNED = "CertificateSigned"
    SIGN_CERTIFICATE = "SignCertificate"  # charge point → central system


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
    RECONFIGURATION_OF_SECURITY_PARAMETERS = "ReconfigurationOfSecurityParameters"
    INVALID_CHARGE_POINT_CERTIFICATE = "InvalidChargePointCertificate"


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


# --- the connection's configuration keys and certificate management (white paper A01, A05,
# M03-M05), owned by the agent in sidecar mode -----------------------------------------------


class ConfigurationStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    REBOOT_REQUIRED = "RebootRequired"
    NOT_SUPPORTED = "NotSupported"


@dataclasses.dataclass(frozen=True)
class ChangeConfigurationReq:
    key: str = wire("key", max_length=50)
    value: str = wire("value", max_length=500)


@dataclasses.dataclass(frozen=True)
class ChangeConfigurationConf:
    status: ConfigurationStatus = wire("status")


# GetConfiguration.req's keys, at most (the schema has no bound; the core key
# GetConfigurationMaxKeys says it): one more is CALLERROR OccurenceConstraintViolation, 1.6's
# error for an array with too many items (1.6 has no "TooMany" status to answer with).
GET_CONFIGURATION_MAX_KEYS = 100


@dataclasses.dataclass(frozen=True)
class GetConfigurationReq:
    key: list[str] | None = wire(
        "key", max_length=50, max_items=GET_CONFIGURATION_MAX_KEYS, default=None
    )


@dataclasses.dataclass(frozen=True)
class GetConfigurationConf:
    # Wire dicts of KeyValue ({key, readonly, value?}); to_wire passes lists through.
    configuration_key: list[dict[str, Any]] | None = wire("configurationKey", default=None)
    unknown_key: list[str] | None = wire("unknownKey", default=None)


class CertificateUse(enum.StrEnum):
    CENTRAL_SYSTEM_ROOT = "CentralSystemRootCertificate"
    MANUFACTURER_ROOT = "ManufacturerRootCertificate"


class CertificateStatus(enum.StrEnum):
    """InstallCertificate.conf (white paper §6.3)."""

    ACCEPTED = "Accepted"
    FAILED = "Failed"
    REJECTED = "Rejected"


class HashAlgorithm(enum.StrEnum):
    SHA256 = "SHA256"
    SHA384 = "SHA384"
    SHA512 = "SHA512"


@dataclasses.dataclass(frozen=True)
class CertificateHashData:
    hash_algorithm: HashAlgorithm = wire("hashAlgorithm")
    issuer_name_hash: str = wire("issuerNameHash", max_length=128)
    issuer_key_hash: str = wire("issuerKeyHash", max_length=128)
    serial_number: str = wire("serialNumber", max_length=40)


@dataclasses.dataclass(frozen=True)
class InstallCertificateReq:
    certificate_type: CertificateUse = wire("certificateType")
    # The schema's maxLength 5500 is the store's to enforce: too long is Rejected (M05.FR.06).
    certificate: str = wire("certificate")


@dataclasses.dataclass(frozen=True)
class InstallCertificateConf:
    status: CertificateStatus = wire("status")


class GetInstalledCertificateStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    NOT_FOUND = "NotFound"


@dataclasses.dataclass(frozen=True)
class GetInstalledCertificateIdsReq:
    certificate_type: CertificateUse = wire("certificateType")


@dataclasses.dataclass(frozen=True)
class GetInstalledCertificateIdsConf:
    status: GetInstalledCertificateStatus = wire("status")
    # Wire dicts of CertificateHashData (to_wire passes a list through as it is).
    certificate_hash_data: list[dict[str, str]] | None = wire("certificateHashData", default=None)


class DeleteCertificateStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    FAILED = "Failed"
    NOT_FOUND = "NotFound"


@dataclasses.dataclass(frozen=True)
class DeleteCertificateReq:
    certificate_hash_data: CertificateHashData = wire("certificateHashData")


@dataclasses.dataclass(frozen=True)
class DeleteCertificateConf:
    status: DeleteCertificateStatus = wire("status")


class GenericStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"


@dataclasses.dataclass(frozen=True)
class SignCertificateReq:
    csr: str = wire("csr", max_length=5500)


@dataclasses.dataclass(frozen=True)
class SignCertificateConf:
    status: GenericStatus = wire("status")


@dataclasses.dataclass(frozen=True)
class CertificateSignedReq:
    # maxLength 10000 (CertificateSignedMaxChainSize) is checked by the handler: Rejected.
    certificate_chain: str = wire("certificateChain")


@dataclasses.dataclass(frozen=True)
class CertificateSignedConf:
    status: GenericStatus = wire("status")


INCOMING_REQUESTS.update(
    {
        Action.CHANGE_CONFIGURATION: ChangeConfigurationReq,
        Action.GET_CONFIGURATION: GetConfigurationReq,
        Action.INSTALL_CERTIFICATE: InstallCertificateReq,
        Action.GET_INSTALLED_CERTIFICATE_IDS: GetInstalledCertificateIdsReq,
        Action.DELETE_CERTIFICATE: DeleteCertificateReq,
        Action.CERTIFICATE_SIGNED: CertificateSignedReq,
    }
)
RESPONSES[Action.SIGN_CERTIFICATE] = SignCertificateConf
