"""Payload validation: each class of schema mistake maps to its OCPP-J 1.6 CALLERROR code.

Mapping (reference §3.3, OCPP-J 1.6 Table 7): non-object payload or unknown field →
FormationViolation; missing required field → OccurenceConstraintViolation; wrong JSON type →
TypeConstraintViolation; enum, maxLength or date-time format → PropertyConstraintViolation.
Schemas: SignedUpdateFirmware.req (white paper §5.21/§6.9) and the core 1.6 JSON schemas.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
from typing import Any

import pytest

from agent.ocpp import v16
from agent.ocpp.errors import (
    FormationViolation,
    OccurenceConstraintViolation,
    OcppError,
    PropertyConstraintViolation,
    TypeConstraintViolation,
)
from agent.ocpp.validate import format_datetime, from_wire, parse_datetime, to_wire

UTC = datetime.UTC


def signed_update(**firmware: Any) -> dict[str, Any]:
    """A valid SignedUpdateFirmware.req payload; `firmware` overrides (None deletes a key)."""
    payload: dict[str, Any] = {
        "requestId": 42,
        "retries": 3,
        "retryInterval": 60,
        "firmware": {
            "location": "https://fw.example.com/image-2.0.bin",
            "retrieveDateTime": "2024-05-01T12:00:00.000Z",
            "installDateTime": "2024-05-01T13:00:00.000Z",
            "signingCertificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "signature": "c2lnbmF0dXJl",
        },
    }
    for key, value in firmware.items():
        if value is None:
            del payload["firmware"][key]
        else:
            payload["firmware"][key] = value
    return payload


def rejects(cls: type[Any], payload: Any) -> OcppError:
    with pytest.raises(OcppError) as caught:
        from_wire(cls, payload)
    return caught.value


def test_a_valid_signed_update_firmware_becomes_typed_objects() -> None:
    """Handlers receive dataclasses with parsed date-times, not raw dicts."""
    request = from_wire(v16.SignedUpdateFirmwareReq, signed_update())
    assert request == v16.SignedUpdateFirmwareReq(
        request_id=42,
        retries=3,
        retry_interval=60,
        firmware=v16.Firmware(
            location="https://fw.example.com/image-2.0.bin",
            retrieve_date_time=datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            install_date_time=datetime.datetime(2024, 5, 1, 13, 0, tzinfo=UTC),
            signing_certificate=signed_update()["firmware"]["signingCertificate"],
            signature="c2lnbmF0dXJl",
        ),
    )


def test_optional_fields_may_be_absent() -> None:
    payload = signed_update(installDateTime=None)
    del payload["retries"], payload["retryInterval"]
    request = from_wire(v16.SignedUpdateFirmwareReq, payload)
    assert request.retries is None and request.retry_interval is None
    assert request.firmware.install_date_time is None


# --- FormationViolation ------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [[], "x", 1, None, True, [{"requestId": 1}]])
def test_a_payload_that_is_not_an_object_is_a_formation_violation(payload: Any) -> None:
    assert isinstance(rejects(v16.SignedUpdateFirmwareReq, payload), FormationViolation)


def test_an_unknown_top_level_field_is_a_formation_violation() -> None:
    """The schemas have additionalProperties false."""
    payload = {**signed_update(), "extra": 1}
    error = rejects(v16.SignedUpdateFirmwareReq, payload)
    assert isinstance(error, FormationViolation)
    assert "extra" in error.description


def test_an_unknown_nested_field_is_a_formation_violation() -> None:
    error = rejects(v16.SignedUpdateFirmwareReq, signed_update(hash="abc"))
    assert isinstance(error, FormationViolation)
    assert "firmware" in error.description and "hash" in error.description


def test_an_empty_conf_with_a_field_is_a_formation_violation() -> None:
    assert from_wire(v16.EmptyConf, {}) == v16.EmptyConf()
    assert isinstance(rejects(v16.EmptyConf, {"status": "Accepted"}), FormationViolation)


# --- OccurenceConstraintViolation --------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["signature", "signingCertificate", "location", "retrieveDateTime"]
)
def test_a_missing_required_firmware_field_is_an_occurence_violation(missing: str) -> None:
    """SignedUpdateFirmware.req requires firmware.{location,retrieveDateTime,signingCertificate,
    signature} (white paper §6.9); L01.FR.04 needs the signature and certificate to verify."""
    error = rejects(v16.SignedUpdateFirmwareReq, signed_update(**{missing: None}))
    assert type(error) is OccurenceConstraintViolation
    assert error.code == "OccurenceConstraintViolation"  # the official 1.6 spelling
    assert f"firmware.{missing}" in error.description


@pytest.mark.parametrize("missing", ["requestId", "firmware"])
def test_a_missing_required_top_level_field_is_an_occurence_violation(missing: str) -> None:
    payload = signed_update()
    del payload[missing]
    assert type(rejects(v16.SignedUpdateFirmwareReq, payload)) is OccurenceConstraintViolation


def test_a_missing_field_of_a_conf_is_an_occurence_violation() -> None:
    payload = {"status": "Accepted", "currentTime": "2024-05-01T12:00:00Z"}
    assert type(rejects(v16.BootNotificationConf, payload)) is OccurenceConstraintViolation


# --- TypeConstraintViolation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"requestId": "42"}, id="int-as-string"),
        pytest.param({"requestId": True}, id="int-as-bool"),
        pytest.param({"requestId": 1.5}, id="int-as-fraction"),
        pytest.param({"requestId": None}, id="int-null"),
        pytest.param({"retries": None}, id="optional-null"),
        pytest.param({"retries": [3]}, id="int-as-list"),
        pytest.param({"firmware": "https://fw.example.com"}, id="object-as-string"),
        pytest.param({"firmware": []}, id="object-as-list"),
    ],
)
def test_a_wrong_json_type_is_a_type_constraint_violation(change: dict[str, Any]) -> None:
    """e.g. `"somestring": 12` (OCPP-J 1.6 Table 7); `null` is not an allowed value either."""
    payload = {**signed_update(), **change}
    assert type(rejects(v16.SignedUpdateFirmwareReq, payload)) is TypeConstraintViolation


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"location": 5}, id="string-as-int"),
        pytest.param({"signature": {"value": "x"}}, id="string-as-object"),
        pytest.param({"retrieveDateTime": 1714564800}, id="datetime-as-int"),
        pytest.param({"installDateTime": False}, id="datetime-as-bool"),
    ],
)
def test_a_wrong_nested_json_type_is_a_type_constraint_violation(change: dict[str, Any]) -> None:
    assert type(rejects(v16.SignedUpdateFirmwareReq, signed_update(**change))) is (
        TypeConstraintViolation
    )


def test_an_enum_that_is_not_a_string_is_a_type_constraint_violation() -> None:
    error = rejects(v16.TriggerMessageReq, {"requestedMessage": 1})
    assert type(error) is TypeConstraintViolation


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**400, 1e300])
def test_an_integer_beyond_64_bits_is_a_property_constraint_violation(value: Any) -> None:
    """JSON integers are unbounded; no OCPP field needs more than 64 bits, and accepting
    10**400 as an interval would overflow the float clock arithmetic later."""
    payload = {"status": "Accepted", "currentTime": "2024-05-01T12:00:00Z", "interval": value}
    assert type(rejects(v16.BootNotificationConf, payload)) is PropertyConstraintViolation
    payload["interval"] = 2**63 - 1
    assert from_wire(v16.BootNotificationConf, payload).interval == 2**63 - 1


def test_an_integral_float_is_accepted_as_an_integer() -> None:
    """JSON has one number type; 42.0 is the integer 42."""
    payload = {**signed_update(), "requestId": 42.0}
    request = from_wire(v16.SignedUpdateFirmwareReq, payload)
    assert request.request_id == 42 and type(request.request_id) is int


# --- PropertyConstraintViolation ---------------------------------------------------------------


@pytest.mark.parametrize(("field", "limit"), [("location", 512), ("signature", 800)])
def test_max_length_is_a_property_constraint_violation(field: str, limit: int) -> None:
    """Firmware maxLength: location 512, signature 800 (§6.9). signingCertificate's 5500 is
    the certificate check's (InvalidCertificate + security event), see tests/e2e."""
    at_limit = from_wire(v16.SignedUpdateFirmwareReq, signed_update(**{field: "a" * limit}))
    assert len(at_limit.firmware.__dict__[_attr(field)]) == limit
    error = rejects(v16.SignedUpdateFirmwareReq, signed_update(**{field: "a" * (limit + 1)}))
    assert type(error) is PropertyConstraintViolation
    assert str(limit) in error.description


def _attr(wire_name: str) -> str:
    return next(f.name for f in dataclasses.fields(v16.Firmware) if f.metadata["wire"] == wire_name)


def test_max_length_counts_characters_not_utf8_bytes() -> None:
    request = from_wire(v16.SignedUpdateFirmwareReq, signed_update(location="é" * 512))
    assert len(request.firmware.location) == 512


@pytest.mark.parametrize(
    ("cls", "payload"),
    [
        (v16.TriggerMessageReq, {"requestedMessage": "Reboot"}),
        (v16.TriggerMessageReq, {"requestedMessage": "heartbeat"}),  # case-sensitive
        (v16.ExtendedTriggerMessageReq, {"requestedMessage": "DiagnosticsStatusNotification"}),
        (
            v16.BootNotificationConf,
            {"status": "OK", "currentTime": "2024-05-01T12:00:00Z", "interval": 60},
        ),
    ],
)
def test_a_value_outside_the_enum_is_a_property_constraint_violation(
    cls: type[Any], payload: dict[str, Any]
) -> None:
    """OCPP16-ERR §3.24/§3.38: invalid enum values are PropertyConstraintViolation."""
    assert type(rejects(cls, payload)) is PropertyConstraintViolation


@pytest.mark.parametrize(
    "value",
    ["tomorrow", "", "2024-05-01", "2024-13-01T00:00:00Z", "2024-05-01T25:00:00Z", "12:00:00"],
)
def test_a_bad_date_time_is_a_property_constraint_violation(value: str) -> None:
    error = rejects(v16.SignedUpdateFirmwareReq, signed_update(retrieveDateTime=value))
    assert type(error) is PropertyConstraintViolation
    assert "firmware.retrieveDateTime" in error.description


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_date_time_outside_the_representable_range_is_rejected(value: str) -> None:
    """Such a moment has no UTC representation: accepting it would crash every later use."""
    error = rejects(v16.SignedUpdateFirmwareReq, signed_update(retrieveDateTime=value))
    assert type(error) is PropertyConstraintViolation


# --- date-time parsing and formatting -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime.datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01t12:00:00z", datetime.datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250Z", datetime.datetime(2024, 5, 1, 12, 0, 0, 250000, UTC)),
        ("2024-05-01T14:00:00+02:00", datetime.datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime.datetime(2024, 5, 1, 12, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_parse_datetime_reads_rfc3339(text: str, expected: datetime.datetime) -> None:
    parsed = parse_datetime(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_format_datetime_is_utc_with_milliseconds_and_z() -> None:
    moment = datetime.datetime(
        2024, 5, 1, 14, 0, 0, 123456, datetime.timezone(datetime.timedelta(hours=2))
    )
    assert format_datetime(moment) == "2024-05-01T12:00:00.123Z"
    assert format_datetime(datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == (
        "2024-01-02T03:04:05.000Z"
    )


def test_format_then_parse_keeps_the_moment_to_the_millisecond() -> None:
    moment = datetime.datetime(2031, 12, 31, 23, 59, 59, 999000, UTC)
    assert parse_datetime(format_datetime(moment)) == moment


# --- to_wire and round trips ---------------------------------------------------------------------


def test_to_wire_uses_wire_keys_omits_none_and_formats_values() -> None:
    request = v16.SignedFirmwareStatusNotificationReq(status=v16.FirmwareStatus.DOWNLOADING)
    assert to_wire(request) == {"status": "Downloading"}
    event = v16.SecurityEventNotificationReq(
        type=v16.SecurityEvent.FIRMWARE_UPDATED,
        timestamp=datetime.datetime(2024, 5, 1, 12, tzinfo=UTC),
        tech_info="slot B",
    )
    assert to_wire(event) == {
        "type": "FirmwareUpdated",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "techInfo": "slot B",
    }


def test_empty_requests_are_empty_objects() -> None:
    """`{}` for an empty payload (OCPP-J 1.6 §4.1.3)."""
    assert to_wire(v16.HeartbeatReq()) == {}
    assert to_wire(v16.EmptyConf()) == {}


def test_a_canonical_payload_round_trips_unchanged() -> None:
    payload = signed_update()
    assert to_wire(from_wire(v16.SignedUpdateFirmwareReq, copy.deepcopy(payload))) == payload


@pytest.mark.parametrize(
    "obj",
    [
        v16.BootNotificationReq(
            charge_point_vendor="V",
            charge_point_model="M",
            charge_point_serial_number="S1",
            firmware_version="1.0",
        ),
        v16.BootNotificationConf(
            status=v16.RegistrationStatus.PENDING,
            current_time=datetime.datetime(2024, 5, 1, 12, tzinfo=UTC),
            interval=30,
        ),
        v16.HeartbeatConf(current_time=datetime.datetime(2024, 5, 1, 12, 0, 1, 5000, UTC)),
        v16.SignedFirmwareStatusNotificationReq(
            status=v16.FirmwareStatus.INSTALL_REBOOTING, request_id=7
        ),
        v16.ExtendedTriggerMessageReq(
            requested_message=v16.ExtendedTrigger.FIRMWARE_STATUS_NOTIFICATION, connector_id=0
        ),
        v16.TriggerMessageConf(status=v16.TriggerStatus.NOT_IMPLEMENTED),
        v16.SignedUpdateFirmwareConf(status=v16.UpdateFirmwareStatus.INVALID_CERTIFICATE),
    ],
    ids=lambda obj: type(obj).__name__,
)
def test_dataclasses_round_trip_through_the_wire(obj: Any) -> None:
    assert from_wire(type(obj), to_wire(obj)) == obj
