"""The OCPP 2.0.1 vocabulary the agent speaks as the only OCPP client of a charging station.

Only what the firmware use case (L01) and registration need: BootNotification (with its
reason), Heartbeat, UpdateFirmware, FirmwareStatusNotification, SecurityEventNotification,
TriggerMessage. The firmware statuses and answer statuses are the same words as 1.6's security
extension (1.6 took L01 from 2.0.1), so the enums are shared with `v16`; the payloads are not.
`signingCertificate` and `signature` are optional in the 2.0.1 schema: a request without them
must be answered Rejected/InvalidCertificate (TC_L_18_CS), never a CALLERROR, so they are
optional here and the adapter refuses their absence.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, ClassVar

from agent.ocpp.errors import NotImplementedAction, OcppError, PropertyConstraintViolation
from agent.ocpp.v16 import (
    CertificateHashData,
    CertificateStatus,
    DeleteCertificateStatus,
    FirmwareStatus,
    GenericStatus,
    GetInstalledCertificateStatus,
    RegistrationStatus,
    TriggerStatus,
    UpdateFirmwareStatus,
    wire,
)

__all__ = ["FirmwareStatus", "RegistrationStatus", "TriggerStatus", "UpdateFirmwareStatus"]

SUBPROTOCOL = "ocpp2.0.1"
REASON_CODE_MAX, ADDITIONAL_INFO_MAX = 20, 512


class Action(enum.StrEnum):
    # charging station → CSMS
    BOOT_NOTIFICATION = "BootNotification"
    HEARTBEAT = "Heartbeat"
    FIRMWARE_STATUS_NOTIFICATION = "FirmwareStatusNotification"
    SECURITY_EVENT_NOTIFICATION = "SecurityEventNotification"
    # CSMS → charging station
    UPDATE_FIRMWARE = "UpdateFirmware"
    TRIGGER_MESSAGE = "TriggerMessage"


# OCPP-J 2.0.1 §4.3 spells two of the 1.6 codes differently; `validate` raises the 1.6 classes.
_RPC_CODES = {
    "FormationViolation": "FormatViolation",
    "OccurenceConstraintViolation": "OccurrenceConstraintViolation",
}
RPC_ERROR_CODES = frozenset(
    {
        "FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported",
        "NotImplemented", "NotSupported", "OccurrenceConstraintViolation",
        "PropertyConstraintViolation", "ProtocolError", "RpcFrameworkError", "SecurityError",
        "TypeConstraintViolation",
    }
)  # fmt: skip


def rpc_code(code: str) -> str:
    """The 2.0.1 spelling of a CALLERROR code raised with its 1.6 name."""
    return _RPC_CODES.get(code, code)


def unhandled(action: str) -> OcppError:
    """Every CSMS action but those routed: the agent does not implement it (OCPP-J 2.0.1 §4.3)."""
    return NotImplementedAction(f"{action} is not implemented by this agent"[:255])


def strip_custom_data(payload: Any) -> Any:
    """Every 2.0.1 object may carry `customData` (vendor extensions): accepted and ignored."""
    if isinstance(payload, dict):
        return {k: strip_custom_data(v) for k, v in payload.items() if k != "customData"}
    if isinstance(payload, list):
        return [strip_custom_data(v) for v in payload]
    return payload


class BootReason(enum.StrEnum):
    APPLICATION_RESET = "ApplicationReset"
    FIRMWARE_UPDATE = "FirmwareUpdate"
    LOCAL_RESET = "LocalReset"
    POWER_UP = "PowerUp"
    REMOTE_RESET = "RemoteReset"
    SCHEDULED_RESET = "ScheduledReset"
    TRIGGERED = "Triggered"
    UNKNOWN = "Unknown"
    WATCHDOG = "Watchdog"


class MessageTrigger(enum.StrEnum):
    BOOT_NOTIFICATION = "BootNotification"
    LOG_STATUS_NOTIFICATION = "LogStatusNotification"
    FIRMWARE_STATUS_NOTIFICATION = "FirmwareStatusNotification"
    HEARTBEAT = "Heartbeat"
    METER_VALUES = "MeterValues"
    SIGN_CHARGING_STATION_CERTIFICATE = "SignChargingStationCertificate"
    SIGN_V2G_CERTIFICATE = "SignV2GCertificate"
    STATUS_NOTIFICATION = "StatusNotification"
    TRANSACTION_EVENT = "TransactionEvent"
    SIGN_COMBINED_CERTIFICATE = "SignCombinedCertificate"
    PUBLISH_FIRMWARE_STATUS_NOTIFICATION = "PublishFirmwareStatusNotification"


# --- shared types ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StatusInfo:
    additional_info_max: ClassVar[int] = ADDITIONAL_INFO_MAX  # 2.1 allows more
    reason_code: str = wire("reasonCode", max_length=REASON_CODE_MAX)
    additional_info: str | None = wire(
        "additionalInfo", max_length=ADDITIONAL_INFO_MAX, default=None
    )

    @classmethod
    def of(cls, reason_code: str, additional_info: str | None = None) -> StatusInfo:
        """Truncated to the schema's limits: our own words must never break the schema."""
        info = additional_info[: cls.additional_info_max] if additional_info else None
        return cls(reason_code=reason_code[:REASON_CODE_MAX], additional_info=info)


@dataclasses.dataclass(frozen=True)
class Modem:
    iccid: str | None = wire("iccid", max_length=20, default=None)
    imsi: str | None = wire("imsi", max_length=20, default=None)


@dataclasses.dataclass(frozen=True)
class ChargingStation:
    model: str = wire("model", max_length=20)
    vendor_name: str = wire("vendorName", max_length=50)
    serial_number: str | None = wire("serialNumber", max_length=25, default=None)
    firmware_version: str | None = wire("firmwareVersion", max_length=50, default=None)
    modem: Modem | None = wire("modem", default=None)


@dataclasses.dataclass(frozen=True)
class Evse:
    id: int = wire("id")
    connector_id: int | None = wire("connectorId", default=None)


# --- payloads -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BootNotificationRequest:
    charging_station: ChargingStation = wire("chargingStation")
    reason: BootReason = wire("reason")


@dataclasses.dataclass(frozen=True)
class BootNotificationResponse:
    current_time: datetime.datetime = wire("currentTime")
    interval: int = wire("interval")
    status: RegistrationStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class HeartbeatRequest:
    pass


@dataclasses.dataclass(frozen=True)
class HeartbeatResponse:
    current_time: datetime.datetime = wire("currentTime")


@dataclasses.dataclass(frozen=True)
class Firmware:
    location: str = wire("location", max_length=512)
    retrieve_date_time: datetime.datetime = wire("retrieveDateTime")
    install_date_time: datetime.datetime | None = wire("installDateTime", default=None)
    # maxLength 5500 is left to the certificate check (InvalidCertificate + event), as in 1.6.
    signing_certificate: str | None = wire("signingCertificate", default=None)
    signature: str | None = wire("signature", max_length=800, default=None)


@dataclasses.dataclass(frozen=True)
class UpdateFirmwareRequest:
    request_id: int = wire("requestId")
    firmware: Firmware = wire("firmware")
    retries: int | None = wire("retries", default=None)
    retry_interval: int | None = wire("retryInterval", default=None)


@dataclasses.dataclass(frozen=True)
class UpdateFirmwareResponse:
    status: UpdateFirmwareStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class FirmwareStatusNotificationRequest:
    status: FirmwareStatus = wire("status")
    request_id: int | None = wire("requestId", default=None)

    @classmethod
    def of(
        cls, status: FirmwareStatus, request_id: int | None, info: StatusInfo | None = None
    ) -> FirmwareStatusNotificationRequest:
        """The notification; 2.0.1's has no statusInfo, so `info` is left out (2.1 keeps it)."""
        return cls(status=status, request_id=request_id)


@dataclasses.dataclass(frozen=True)
class SecurityEventNotificationRequest:
    type: str = wire("type", max_length=50)
    timestamp: datetime.datetime = wire("timestamp")
    tech_info: str | None = wire("techInfo", max_length=255, default=None)


@dataclasses.dataclass(frozen=True)
class TriggerMessageRequest:
    requested_message: MessageTrigger = wire("requestedMessage")
    evse: Evse | None = wire("evse", default=None)


@dataclasses.dataclass(frozen=True)
class TriggerMessageResponse:
    status: TriggerStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class EmptyResponse:
    """`{}`: the answer to FirmwareStatusNotification and SecurityEventNotification."""


INCOMING_REQUESTS: dict[str, type[Any]] = {
    Action.UPDATE_FIRMWARE: UpdateFirmwareRequest,
    Action.TRIGGER_MESSAGE: TriggerMessageRequest,
}

RESPONSES: dict[str, type[Any]] = {
    Action.BOOT_NOTIFICATION: BootNotificationResponse,
    Action.HEARTBEAT: HeartbeatResponse,
    Action.FIRMWARE_STATUS_NOTIFICATION: EmptyResponse,
    Action.SECURITY_EVENT_NOTIFICATION: EmptyResponse,
}


@dataclasses.dataclass(frozen=True)
class Payloads:
    """The 2.x payload types the adapter builds, per version: 2.1 subclasses these four to
    widen a limit or add `statusInfo` (`agent.ocpp.v21`); the adapter never asks which."""

    status_info: type[StatusInfo]
    update_firmware_response: type[UpdateFirmwareResponse]
    trigger_message_response: type[TriggerMessageResponse]
    status_notification: type[FirmwareStatusNotificationRequest]


PAYLOADS = Payloads(
    status_info=StatusInfo,
    update_firmware_response=UpdateFirmwareResponse,
    trigger_message_response=TriggerMessageResponse,
    status_notification=FirmwareStatusNotificationRequest,
)


# --- device model and availability (direct mode: the agent is the station's OCPP client) ----
# Only the shapes the agent's small device model (`agent.ocpp.devicemodel`) needs: B06
# GetVariables, B05 SetVariables, B07 GetBaseReport with its NotifyReport, and G01
# StatusNotification. Each array is bounded (`max_items`).

ITEMS_PER_MESSAGE = 32  # DeviceDataCtrlr.ItemsPerMessage{Get,Set}Variables, as reported
NAME_MAX = 50  # component, variable and instance names
SET_VALUE_MAX, REPORT_VALUE_MAX = 1000, 2500  # attributeValue in SetVariables / in reports


class AttributeType(enum.StrEnum):
    ACTUAL = "Actual"
    TARGET = "Target"
    MIN_SET = "MinSet"
    MAX_SET = "MaxSet"


class GetVariableStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    UNKNOWN_COMPONENT = "UnknownComponent"
    UNKNOWN_VARIABLE = "UnknownVariable"
    NOT_SUPPORTED_ATTRIBUTE_TYPE = "NotSupportedAttributeType"


class SetVariableStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    UNKNOWN_COMPONENT = "UnknownComponent"
    UNKNOWN_VARIABLE = "UnknownVariable"
    NOT_SUPPORTED_ATTRIBUTE_TYPE = "NotSupportedAttributeType"
    REBOOT_REQUIRED = "RebootRequired"


class ReportBase(enum.StrEnum):
    CONFIGURATION_INVENTORY = "ConfigurationInventory"
    FULL_INVENTORY = "FullInventory"
    SUMMARY_INVENTORY = "SummaryInventory"


class GenericDeviceModelStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    NOT_SUPPORTED = "NotSupported"
    EMPTY_RESULT_SET = "EmptyResultSet"


class Mutability(enum.StrEnum):
    READ_ONLY = "ReadOnly"
    WRITE_ONLY = "WriteOnly"
    READ_WRITE = "ReadWrite"


class DataType(enum.StrEnum):
    STRING = "string"
    DECIMAL = "decimal"
    INTEGER = "integer"
    DATE_TIME = "dateTime"
    BOOLEAN = "boolean"
    OPTION_LIST = "OptionList"
    SEQUENCE_LIST = "SequenceList"
    MEMBER_LIST = "MemberList"


class ConnectorStatus(enum.StrEnum):
    AVAILABLE = "Available"
    OCCUPIED = "Occupied"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


@dataclasses.dataclass(frozen=True)
class Component:
    name: str = wire("name", max_length=NAME_MAX)
    instance: str | None = wire("instance", max_length=NAME_MAX, default=None)
    evse: Evse | None = wire("evse", default=None)


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str = wire("name", max_length=NAME_MAX)
    instance: str | None = wire("instance", max_length=NAME_MAX, default=None)


@dataclasses.dataclass(frozen=True)
class GetVariableData:
    component: Component = wire("component")
    variable: Variable = wire("variable")
    attribute_type: AttributeType | None = wire("attributeType", default=None)


@dataclasses.dataclass(frozen=True)
class GetVariablesRequest:
    get_variable_data: list[GetVariableData] = wire(
        "getVariableData", min_items=1, max_items=ITEMS_PER_MESSAGE
    )


@dataclasses.dataclass(frozen=True)
class GetVariableResult:
    attribute_status: GetVariableStatus = wire("attributeStatus")
    component: Component = wire("component")
    variable: Variable = wire("variable")
    attribute_type: AttributeType | None = wire("attributeType", default=None)
    attribute_value: str | None = wire("attributeValue", max_length=REPORT_VALUE_MAX, default=None)
    attribute_status_info: StatusInfo | None = wire("attributeStatusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class GetVariablesResponse:
    get_variable_result: list[GetVariableResult] = wire("getVariableResult")


@dataclasses.dataclass(frozen=True)
class SetVariableData:
    attribute_value: str = wire("attributeValue", max_length=SET_VALUE_MAX)
    component: Component = wire("component")
    variable: Variable = wire("variable")
    attribute_type: AttributeType | None = wire("attributeType", default=None)


@dataclasses.dataclass(frozen=True)
class SetVariablesRequest:
    set_variable_data: list[SetVariableData] = wire(
        "setVariableData", min_items=1, max_items=ITEMS_PER_MESSAGE
    )


@dataclasses.dataclass(frozen=True)
class SetVariableResult:
    attribute_status: SetVariableStatus = wire("attributeStatus")
    component: Component = wire("component")
    variable: Variable = wire("variable")
    attribute_type: AttributeType | None = wire("attributeType", default=None)
    attribute_status_info: StatusInfo | None = wire("attributeStatusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class SetVariablesResponse:
    set_variable_result: list[SetVariableResult] = wire("setVariableResult")


@dataclasses.dataclass(frozen=True)
class GetBaseReportRequest:
    request_id: int = wire("requestId")
    report_base: ReportBase = wire("reportBase")


@dataclasses.dataclass(frozen=True)
class GetBaseReportResponse:
    status: GenericDeviceModelStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class VariableAttribute:
    type: AttributeType | None = wire("type", default=None)
    value: str | None = wire("value", max_length=REPORT_VALUE_MAX, default=None)
    mutability: Mutability | None = wire("mutability", default=None)
    persistent: bool | None = wire("persistent", default=None)
    constant: bool | None = wire("constant", default=None)


@dataclasses.dataclass(frozen=True)
class VariableCharacteristics:
    data_type: DataType = wire("dataType")
    supports_monitoring: bool = wire("supportsMonitoring")
    values_list: str | None = wire("valuesList", max_length=SET_VALUE_MAX, default=None)
    max_limit: int | None = wire("maxLimit", default=None)


@dataclasses.dataclass(frozen=True)
class ReportData:
    component: Component = wire("component")
    variable: Variable = wire("variable")
    variable_attribute: list[VariableAttribute] = wire(
        "variableAttribute", min_items=1, max_items=4
    )
    variable_characteristics: VariableCharacteristics | None = wire(
        "variableCharacteristics", default=None
    )


@dataclasses.dataclass(frozen=True)
class NotifyReportRequest:
    request_id: int = wire("requestId")
    generated_at: datetime.datetime = wire("generatedAt")
    seq_no: int = wire("seqNo")
    report_data: list[ReportData] | None = wire("reportData", default=None)
    tbc: bool | None = wire("tbc", default=None)


@dataclasses.dataclass(frozen=True)
class StatusNotificationRequest:
    timestamp: datetime.datetime = wire("timestamp")
    connector_status: ConnectorStatus = wire("connectorStatus")
    evse_id: int = wire("evseId")
    connector_id: int = wire("connectorId")


DEVICE_MODEL_ACTIONS = ("GetVariables", "SetVariables", "GetBaseReport")
DEVICE_MODEL_REQUESTS: dict[str, type[Any]] = {
    "GetVariables": GetVariablesRequest,
    "SetVariables": SetVariablesRequest,
    "GetBaseReport": GetBaseReportRequest,
}
INCOMING_REQUESTS.update(DEVICE_MODEL_REQUESTS)
RESPONSES.update({"NotifyReport": EmptyResponse, "StatusNotification": EmptyResponse})


# --- the connection's network profiles (B09, B10, A05): `agent.security.profile2x` ---------
# SetNetworkProfile is the agent's in direct and sidecar mode; Reset is answered in direct
# mode only (the stack's in sidecar mode). The APN and VPN objects are typed only as far as
# refusing them needs: the agent manages neither a modem nor a VPN.


class OcppVersion(enum.StrEnum):
    OCPP12 = "OCPP12"
    OCPP15 = "OCPP15"
    OCPP16 = "OCPP16"
    OCPP20 = "OCPP20"


class OcppTransport(enum.StrEnum):
    JSON = "JSON"
    SOAP = "SOAP"


class OcppInterface(enum.StrEnum):
    WIRED0 = "Wired0"
    WIRED1 = "Wired1"
    WIRED2 = "Wired2"
    WIRED3 = "Wired3"
    WIRELESS0 = "Wireless0"
    WIRELESS1 = "Wireless1"
    WIRELESS2 = "Wireless2"
    WIRELESS3 = "Wireless3"


class SetNetworkProfileStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    FAILED = "Failed"


class ResetType(enum.StrEnum):
    IMMEDIATE = "Immediate"
    ON_IDLE = "OnIdle"


class ResetStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    SCHEDULED = "Scheduled"


@dataclasses.dataclass(frozen=True)
class Apn:
    apn: str = wire("apn", max_length=512)
    apn_authentication: str = wire("apnAuthentication", max_length=10)
    apn_user_name: str | None = wire("apnUserName", max_length=20, default=None)
    apn_password: str | None = wire("apnPassword", max_length=20, default=None)
    sim_pin: int | None = wire("simPin", default=None)
    preferred_network: str | None = wire("preferredNetwork", max_length=6, default=None)
    use_only_preferred_network: bool | None = wire("useOnlyPreferredNetwork", default=None)


@dataclasses.dataclass(frozen=True)
class Vpn:
    server: str = wire("server", max_length=512)
    user: str = wire("user", max_length=20)
    password: str = wire("password", max_length=20)
    key: str = wire("key", max_length=255)
    type: str = wire("type", max_length=10)
    group: str | None = wire("group", max_length=20, default=None)


@dataclasses.dataclass(frozen=True, kw_only=True)  # 2.1 makes ocppVersion optional
class NetworkConnectionProfile:
    ocpp_version: OcppVersion | None = wire("ocppVersion")  # required in 2.0.1 (no default)
    ocpp_transport: OcppTransport = wire("ocppTransport")
    ocpp_csms_url: str = wire("ocppCsmsUrl", max_length=512)
    message_timeout: int = wire("messageTimeout")
    security_profile: int = wire("securityProfile")
    ocpp_interface: OcppInterface = wire("ocppInterface")
    apn: Apn | None = wire("apn", default=None)
    vpn: Vpn | None = wire("vpn", default=None)


@dataclasses.dataclass(frozen=True)
class SetNetworkProfileRequest:
    configuration_slot: int = wire("configurationSlot")
    connection_data: NetworkConnectionProfile = wire("connectionData")


@dataclasses.dataclass(frozen=True)
class SetNetworkProfileResponse:
    status: SetNetworkProfileStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class ResetRequest:
    type: ResetType = wire("type")
    evse_id: int | None = wire("evseId", default=None)


@dataclasses.dataclass(frozen=True)
class ResetResponse:
    status: ResetStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


NETWORK_REQUESTS: dict[str, type[Any]] = {
    "SetNetworkProfile": SetNetworkProfileRequest,
    "Reset": ResetRequest,
}
INCOMING_REQUESTS.update(NETWORK_REQUESTS)


# --- certificate management (M03-M05) and the station's certificate (A02, A03) -------------
# The agent's part of them (`agent.security.handlers2x`): the CSMS and manufacturer roots and
# the ChargingStationCertificate; the ISO 15118 types are the charging stack's (sidecar mode).
# The statuses and CertificateHashData are 1.6's words and bounds.


class SecurityEvent(enum.StrEnum):
    """The 2.x names of the security events whose 1.6 names differ (2.x security events list)."""

    INVALID_CSMS_CERTIFICATE = "InvalidCsmsCertificate"
    INVALID_CHARGING_STATION_CERTIFICATE = "InvalidChargingStationCertificate"


# The certificate types of each message, by wire name (2.1 adds some: `agent.ocpp.v21`).
CSMS_ROOT, MANUFACTURER_ROOT = "CSMSRootCertificate", "ManufacturerRootCertificate"
CHARGING_STATION_CERTIFICATE = "ChargingStationCertificate"
INSTALL_TYPES = frozenset({"V2GRootCertificate", "MORootCertificate", CSMS_ROOT, MANUFACTURER_ROOT})
GET_ID_TYPES = INSTALL_TYPES | {"V2GCertificateChain"}
SIGNING_TYPES = frozenset({CHARGING_STATION_CERTIFICATE, "V2GCertificate"})


def one_of(allowed: frozenset[str], values: list[str] | str | None, where: str) -> None:
    """The schema's enum for a certificate type (a string, or each of a list)."""
    for value in [values] if isinstance(values, str) else values or []:
        if value not in allowed:
            raise PropertyConstraintViolation(f"{where}: {value[:60]!r} is not allowed")


@dataclasses.dataclass(frozen=True)
class InstallCertificateRequest:
    types: ClassVar[frozenset[str]] = INSTALL_TYPES
    # The schema's maxLength, enforced by the store: too long is Rejected (M05.FR.06), as in 1.6.
    certificate_max: ClassVar[int] = 5500
    certificate_type: str = wire("certificateType")
    certificate: str = wire("certificate")

    def __post_init__(self) -> None:
        one_of(self.types, self.certificate_type, "certificateType")


@dataclasses.dataclass(frozen=True)
class InstallCertificateResponse:
    status: CertificateStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class GetInstalledCertificateIdsRequest:
    types: ClassVar[frozenset[str]] = GET_ID_TYPES
    certificate_type: list[str] | None = wire("certificateType", min_items=1, default=None)

    def __post_init__(self) -> None:
        one_of(self.types, self.certificate_type, "certificateType")


@dataclasses.dataclass(frozen=True)
class CertificateHashDataChain:
    certificate_type: str = wire("certificateType")
    certificate_hash_data: CertificateHashData = wire("certificateHashData")
    child_certificate_hash_data: list[CertificateHashData] | None = wire(
        "childCertificateHashData", min_items=1, max_items=4, default=None
    )


@dataclasses.dataclass(frozen=True)
class GetInstalledCertificateIdsResponse:
    status: GetInstalledCertificateStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)
    certificate_hash_data_chain: list[CertificateHashDataChain] | None = wire(
        "certificateHashDataChain", min_items=1, default=None
    )


@dataclasses.dataclass(frozen=True)
class DeleteCertificateRequest:
    certificate_hash_data: CertificateHashData = wire("certificateHashData")


@dataclasses.dataclass(frozen=True)
class DeleteCertificateResponse:
    status: DeleteCertificateStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class SignCertificateRequest:
    csr: str = wire("csr", max_length=5500)
    certificate_type: str | None = wire("certificateType", default=None)


@dataclasses.dataclass(frozen=True)
class SignCertificateResponse:
    status: GenericStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class CertificateSignedRequest:
    types: ClassVar[frozenset[str]] = SIGNING_TYPES
    # maxLength 10000 (MaxCertificateChainSize) is checked by the handler: Rejected + event.
    certificate_chain: str = wire("certificateChain")
    certificate_type: str | None = wire("certificateType", default=None)

    def __post_init__(self) -> None:
        one_of(self.types, self.certificate_type, "certificateType")


@dataclasses.dataclass(frozen=True)
class CertificateSignedResponse:
    status: GenericStatus = wire("status")
    status_info: StatusInfo | None = wire("statusInfo", default=None)


CERTIFICATE_REQUESTS: dict[str, type[Any]] = {
    "InstallCertificate": InstallCertificateRequest,
    "GetInstalledCertificateIds": GetInstalledCertificateIdsRequest,
    "DeleteCertificate": DeleteCertificateRequest,
    "CertificateSigned": CertificateSignedRequest,
}
INCOMING_REQUESTS.update(CERTIFICATE_REQUESTS)
RESPONSES["SignCertificate"] = SignCertificateResponse
