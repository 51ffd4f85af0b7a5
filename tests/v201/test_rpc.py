"""OCPP-J 2.0.1 RPC rules as the agent applies them: the 2.x CALLERROR spellings, NotImplemented
for actions it does not do, customData accepted, and the version chosen by configuration."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, parse
from agent.demo.rig import ChargerRig, Firmware
from agent.ocpp import v201
from agent.ocpp.validate import from_wire, to_wire
from tests.v201.conftest import Station


def test_callerrors_use_the_2x_codes_and_unknown_actions_are_not_implemented(
    station: Station, firmware: Firmware
):
    """OCPP-J 2.0.1 §4.3: FormatViolation / OccurrenceConstraintViolation (not 1.6's
    FormationViolation / OccurenceConstraintViolation); NotImplemented for an action the
    agent does not do (GetLog); customData is ignored."""
    station.start()
    station.csms.wait_message("BootNotification")
    good = station.rig.request(firmware, 1)["firmware"]
    answer = station.raw("UpdateFirmware", {"requestId": 1, "firmware": good, "bogus": 1})
    assert answer[:3] == [4, answer[1], "FormatViolation"]
    answer = station.raw("UpdateFirmware", {"firmware": good})
    assert answer[2] == "OccurrenceConstraintViolation"
    answer = station.raw("UpdateFirmware", {"requestId": "one", "firmware": good})
    assert answer[2] == "TypeConstraintViolation"
    station.csms.send_raw(station.rig.charge_point_id, '[2,"frame-1","UpdateFirmware",[]]')
    assert station.csms.answer_to("frame-1")[2] == "FormatViolation"  # caught by the framing
    answer = station.raw("GetLog", {})
    assert answer[2] == "NotImplemented"
    answer = station.raw(
        "TriggerMessage", {"requestedMessage": "Heartbeat", "customData": {"vendorId": "x"}}
    )
    assert answer[0] == 3 and answer[2] == {"status": "Accepted"}
    station.csms.wait_message("Heartbeat")
    answer = station.raw("TriggerMessage", {"requestedMessage": "MeterValues"})
    assert answer[2] == {"status": "NotImplemented"}
    answer = station.raw("TriggerMessage", {"requestedMessage": "BootNotification"})
    assert answer[2] == {"status": "Rejected"}  # F06.FR.17: already accepted


def test_the_boot_notification_after_a_plain_start_says_power_up(station: Station):
    """B01: the agent registers the station; no update reboot → reason PowerUp."""
    station.start()
    boot = station.csms.wait_message("BootNotification")[0].payload
    assert boot["reason"] == "PowerUp"
    assert boot["charging_station"] == {
        "model": "AB-Charger",
        "vendor_name": "ExampleVendor",
        "firmware_version": "1.0",
    }


def test_ocpp_version_is_checked(rig: ChargerRig):
    """Only the versions the agent speaks are accepted, with one clear line."""
    base = {
        "csms": {"url": "ws://127.0.0.1:1/ocpp", "charge_point_id": "X", "security_profile": 0},
        "identity": {"vendor": "V", "model": "M"},
    }
    assert parse(base, rig.base / "x.toml").csms.ocpp_version == "1.6"
    base["csms"]["ocpp_version"] = "2.0.1"
    assert parse(base, rig.base / "x.toml").csms.ocpp_version == "2.0.1"
    base["csms"]["ocpp_version"] = "2.1"
    assert parse(base, rig.base / "x.toml").csms.ocpp_version == "2.1"
    base["csms"]["ocpp_version"] = "2.0"
    with pytest.raises(ConfigError, match="ocpp_version"):
        parse(base, rig.base / "x.toml")


def test_payload_types_follow_the_2_0_1_schema():
    """Optional certificate and signature; statusInfo trimmed to its limits; customData
    stripped anywhere."""
    request = from_wire(
        v201.UpdateFirmwareRequest,
        v201.strip_custom_data(
            {
                "requestId": 1,
                "customData": {"vendorId": "x"},
                "firmware": {
                    "location": "https://h/f",
                    "retrieveDateTime": "2020-01-01T00:00:00Z",
                    "customData": {"vendorId": "x"},
                },
            }
        ),
    )
    assert request.firmware.signing_certificate is None and request.firmware.signature is None
    info = v201.StatusInfo.of("x" * 30, "y" * 600)
    assert to_wire(info) == {"reasonCode": "x" * 20, "additionalInfo": "y" * 512}
    assert v201.rpc_code("FormationViolation") == "FormatViolation"
    assert v201.rpc_code("OccurenceConstraintViolation") == "OccurrenceConstraintViolation"
    assert {v201.rpc_code(c) for c in ("NotImplemented", "NotSupported")} <= v201.RPC_ERROR_CODES
