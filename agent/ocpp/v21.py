"""OCPP 2.1: the 2.0.1 vocabulary with the few firmware-related limits and fields 2.1 changed.

2.1's L01 requirements are word for word 2.0.1 Ed3's, and its messages are 2.0.1's with:
`firmware.location` up to 2000 characters (512), `retries` at least 0 ("0 = no retries"),
`statusInfo.additionalInfo` up to 1024 characters (512), a `statusInfo` in
FirmwareStatusNotification, and `customTrigger` plus two more trigger names in TriggerMessage.
Only those types are redefined here, as subclasses of the 2.0.1 ones, so the adapter and the
session handle both versions alike; everything else is `v201`'s. OCPP-J 2.1 also adds the
CALLRESULTERROR and SEND frames (`agent.ocpp.messages`).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from agent.ocpp import v201
from agent.ocpp.errors import PropertyConstraintViolation
from agent.ocpp.v16 import wire

SUBPROTOCOL = "ocpp2.1"
LOCATION_MAX, ADDITIONAL_INFO_MAX = 2000, 1024


class MessageTrigger(enum.StrEnum):
    BOOT_NOTIFICATION = "BootNotification"
    LOG_STATUS_NOTIFICATION = "LogStatusNotification"
    FIRMWARE_STATUS_NOTIFICATION = "FirmwareStatusNotification"
    HEARTBEAT = "Heartbeat"
    METER_VALUES = "MeterValues"
    SIGN_CHARGING_STATION_CERTIFICATE = "SignChargingStationCertificate"
    SIGN_V2G_CERTIFICATE = "SignV2GCertificate"
    SIGN_V2G20_CERTIFICATE = "SignV2G20Certificate"  # new in 2.1
    STATUS_NOTIFICATION = "StatusNotification"
    TRANSACTION_EVENT = "TransactionEvent"
    SIGN_COMBINED_CERTIFICATE = "SignCombinedCertificate"
    PUBLISH_FIRMWARE_STATUS_NOTIFICATION = "PublishFirmwareStatusNotification"
    CUSTOM_TRIGGER = "CustomTrigger"  # new in 2.1


@dataclasses.dataclass(frozen=True)
class StatusInfo(v201.StatusInfo):
    additional_info_max: ClassVar[int] = ADDITIONAL_INFO_MAX
    additional_info: str | None = wire(
        "additionalInfo", max_length=ADDITIONAL_INFO_MAX, default=None
    )


@dataclasses.dataclass(frozen=True)
class Firmware(v201.Firmware):
    location: str = wire("location", max_length=LOCATION_MAX)


@dataclasses.dataclass(frozen=True)
class UpdateFirmwareRequest(v201.UpdateFirmwareRequest):
    firmware: Firmware = wire("firmware")

    def __post_init__(self) -> None:
        # The schema's `minimum: 0`; `from_wire` turns this into the CALLERROR.
        if self.retries is not None and self.retries < 0:
            raise PropertyConstraintViolation("retries: must be at least 0")


@dataclasses.dataclass(frozen=True)
class UpdateFirmwareResponse(v201.UpdateFirmwareResponse):
    status_info: StatusInfo | None = wire("statusInfo", default=None)


@dataclasses.dataclass(frozen=True)
class FirmwareStatusNotificationRequest(v201.FirmwareStatusNotificationRequest):
    status_info: StatusInfo | None = wire("statusInfo", default=None)

    @classmethod
    def of(
        cls,
        status: v201.FirmwareStatus,
        request_id: int | None,
        info: v201.StatusInfo | None = None,
    ) -> FirmwareStatusNotificationRequest:
        """2.1 tells why a status is a failure (the 2.0.1 notification cannot)."""
        status_info = None
        if info is not None:
            status_info = StatusInfo(
                reason_code=info.reason_code,
                additional_info=(info.additional_info or "")[:ADDITIONAL_INFO_MAX] or None,
            )
        return cls(status=status, request_id=request_id, status_info=status_info)


@dataclasses.dataclass(frozen=True)
class TriggerMessageRequest(v201.TriggerMessageRequest):
    requested_message: MessageTrigger = wire("requestedMessage")  # type: ignore[assignment]
    custom_trigger: str | None = wire("customTrigger", max_length=50, default=None)


@dataclasses.dataclass(frozen=True)
class TriggerMessageResponse(v201.TriggerMessageResponse):
    status_info: StatusInfo | None = wire("statusInfo", default=None)


INCOMING_REQUESTS: dict[str, type[Any]] = {
    v201.Action.UPDATE_FIRMWARE: UpdateFirmwareRequest,
    v201.Action.TRIGGER_MESSAGE: TriggerMessageRequest,
}

# BootNotification, Heartbeat and the two empty answers: unchanged (SignCertificate: below)
RESPONSES = dict(v201.RESPONSES)

PAYLOADS = v201.Payloads(
    status_info=StatusInfo,
    update_firmware_response=UpdateFirmwareResponse,
    trigger_message_response=TriggerMessageResponse,
    status_notification=FirmwareStatusNotificationRequest,
)


# --- device model: 2.1 lets SetVariables carry up to 2500 characters (2.0.1: 1000) -----------
SET_VALUE_MAX = 2500


@dataclasses.dataclass(frozen=True)
class SetVariableData(v201.SetVariableData):
    attribute_value: str = wire("attributeValue", max_length=SET_VALUE_MAX)


@dataclasses.dataclass(frozen=True)
class SetVariablesRequest(v201.SetVariablesRequest):
    set_variable_data: list[SetVariableData] = wire(  # type: ignore[assignment]
        "setVariableData", min_items=1, max_items=v201.ITEMS_PER_MESSAGE
    )


INCOMING_REQUESTS.update({**v201.DEVICE_MODEL_REQUESTS, "SetVariables": SetVariablesRequest})


# --- network profiles: 2.1 ignores ocppVersion (optional), widens the URL and VPN fields, adds
# `Any` interface, `identity` and `basicAuthPassword` ------------------------------------------
URL_MAX = 2000


class OcppVersion(enum.StrEnum):
    OCPP12 = "OCPP12"
    OCPP15 = "OCPP15"
    OCPP16 = "OCPP16"
    OCPP20 = "OCPP20"
    OCPP201 = "OCPP201"
    OCPP21 = "OCPP21"


class OcppInterface(enum.StrEnum):
    WIRED0 = "Wired0"
    WIRED1 = "Wired1"
    WIRED2 = "Wired2"
    WIRED3 = "Wired3"
    WIRELESS0 = "Wireless0"
    WIRELESS1 = "Wireless1"
    WIRELESS2 = "Wireless2"
    WIRELESS3 = "Wireless3"
    ANY = "Any"


@dataclasses.dataclass(frozen=True)
class Vpn(v201.Vpn):
    server: str = wire("server", max_length=URL_MAX)
    user: str = wire("user", max_length=50)
    password: str = wire("password", max_length=64)
    group: str | None = wire("group", max_length=50, default=None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkConnectionProfile(v201.NetworkConnectionProfile):
    ocpp_version: OcppVersion | None = wire("ocppVersion", default=None)  # type: ignore[assignment]
    ocpp_csms_url: str = wire("ocppCsmsUrl", max_length=URL_MAX)
    ocpp_interface: OcppInterface = wire("ocppInterface")  # type: ignore[assignment]
    vpn: Vpn | None = wire("vpn", default=None)
    identity: str | None = wire("identity", max_length=48, default=None)
    basic_auth_password: str | None = wire("basicAuthPassword", max_length=64, default=None)

    def __post_init__(self) -> None:
        if self.security_profile < 0:  # the schema's `minimum: 0`
            raise PropertyConstraintViolation("securityProfile: must be at least 0")


@dataclasses.dataclass(frozen=True)
class SetNetworkProfileRequest(v201.SetNetworkProfileRequest):
    connection_data: NetworkConnectionProfile = wire("connectionData")


@dataclasses.dataclass(frozen=True)
class SetNetworkProfileResponse(v201.SetNetworkProfileResponse):
    status_info: StatusInfo | None = wire("statusInfo", default=None)


class ResetType(enum.StrEnum):
    IMMEDIATE = "Immediate"
    ON_IDLE = "OnIdle"
    IMMEDIATE_AND_RESUME = "ImmediateAndResume"  # new in 2.1


@dataclasses.dataclass(frozen=True)
class ResetRequest(v201.ResetRequest):
    type: ResetType = wire("type")  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.evse_id is not None and self.evse_id < 0:
            raise PropertyConstraintViolation("evseId: must be at least 0")


@dataclasses.dataclass(frozen=True)
class ResetResponse(v201.ResetResponse):
    status_info: StatusInfo | None = wire("statusInfo", default=None)


INCOMING_REQUESTS.update({"SetNetworkProfile": SetNetworkProfileRequest, "Reset": ResetRequest})


# --- certificates: 2.1 adds OEMRootCertificate (ISO 15118-20, the stack's) and V2G20Certificate,
# lets a root be 10000 characters, and widens statusInfo -------------------------------------


OEM_ROOT = "OEMRootCertificate"


@dataclasses.dataclass(frozen=True)
class InstallCertificateRequest(v201.InstallCertificateRequest):
    types: ClassVar[frozenset[str]] = v201.INSTALL_TYPES | {OEM_ROOT}
    certificate_max: ClassVar[int] = 10000


@dataclasses.dataclass(frozen=True)
class GetInstalledCertificateIdsRequest(v201.GetInstalledCertificateIdsRequest):
    types: ClassVar[frozenset[str]] = v201.GET_ID_TYPES | {OEM_ROOT}


@dataclasses.dataclass(frozen=True)
class CertificateSignedRequest(v201.CertificateSignedRequest):
    types: ClassVar[frozenset[str]] = v201.SIGNING_TYPES | {"V2G20Certificate"}
    request_id: int | None = wire("requestId", default=None)


@dataclasses.dataclass(frozen=True)
class SignCertificateResponse(v201.SignCertificateResponse):
    status_info: StatusInfo | None = wire("statusInfo", default=None)


INCOMING_REQUESTS.update(
    {
        **v201.CERTIFICATE_REQUESTS,
        "InstallCertificate": InstallCertificateRequest,
        "GetInstalledCertificateIds": GetInstalledCertificateIdsRequest,
        "CertificateSigned": CertificateSignedRequest,
    }
)
RESPONSES["SignCertificate"] = SignCertificateResponse
