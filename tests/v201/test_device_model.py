"""The device model the agent owns in direct 2.x mode (B05 SetVariables, B06 GetVariables,
B07 GetBaseReport) and the connector availability it reports (G01 StatusNotification).

The process tests run the real agent against both CSMS peers (the `ocpp` library's and the
strict ocpp-rpc one), sending the CALLs raw so that the agent, not the CSMS library, judges
what a hostile CSMS may send. The unit tests at the end check the table and its store alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.durable import atomic_write_json
from agent.ocpp import v16, v21, v201
from agent.ocpp.devicemodel import (
    SETTINGS_FILE,
    DeviceModel,
    InvalidValue,
    Settings,
    Sources,
    integer,
    owned_variables,
)
from agent.ocpp.errors import OcppError
from agent.ocpp.validate import from_wire, to_wire
from agent.service.availability import Availability
from tests.v201.conftest import Station


def item(component: str, variable: str, **extra: Any) -> dict[str, Any]:
    return {"component": {"name": component}, "variable": {"name": variable}, **extra}


def results(answer: list[Any], key: str) -> list[tuple[str, str | None]]:
    """(attributeStatus, attributeValue) of each result in a CALLRESULT frame."""
    assert answer[0] == 3, answer
    return [(r["attributeStatus"], r.get("attributeValue")) for r in answer[2][key]]


def get(station: Station, *items: dict[str, Any]) -> list[tuple[str, str | None]]:
    answer = station.raw("GetVariables", {"getVariableData": list(items)})
    return results(answer, "getVariableResult")


def set_(station: Station, *items: dict[str, Any]) -> list[tuple[str, str | None]]:
    answer = station.raw("SetVariables", {"setVariableData": list(items)})
    return results(answer, "setVariableResult")


ALLOW = ("ChargingStation", "AllowNewSessionsPendingFirmwareUpdate")
PROTOCOLS = ("OCPPCommCtrlr", "FileTransferProtocols")


def test_B06_get_variables_answers_each_entry(station: Station):
    """B06: the owned variables are Accepted with their value (FileTransferProtocols from
    `[firmware] allowed_schemes`, the one the L01 block requires); anything else is answered
    per entry: UnknownComponent, UnknownVariable, NotSupportedAttributeType."""
    station.start(firmware={"allowed_schemes": ["https", "ftps"]})
    station.csms.wait_message("BootNotification")
    answered = get(
        station,
        item(*PROTOCOLS),
        item(*ALLOW, attributeType="Actual"),
        item("SecurityCtrlr", "SecurityProfile"),
        item("ChargingStation", "NoSuchVariable"),
        item("NoSuchCtrlr", "FileTransferProtocols"),
        item(*PROTOCOLS, attributeType="Target"),
        {"component": {"name": "OCPPCommCtrlr", "evse": {"id": 1}}, "variable": {"name": "X"}},
    )
    assert answered == [
        ("Accepted", "HTTPS,FTPS"),
        ("Accepted", "false"),  # not set: new sessions are not allowed (the safe side)
        ("Accepted", "0"),
        ("UnknownVariable", None),
        ("UnknownComponent", None),
        ("NotSupportedAttributeType", None),
        ("UnknownComponent", None),
    ]


def test_B05_set_variables_checks_and_keeps_the_value_across_a_restart(station: Station):
    """B05: a ReadWrite variable takes a valid value (Accepted) and refuses another
    (Rejected, InvalidValue); a ReadOnly one is Rejected; unknown ones are answered as such.
    AllowNewSessionsPendingFirmwareUpdate is persisted: it survives the agent's restart."""
    station.start()
    station.csms.wait_message("StatusNotification")  # sent once the boot was accepted: the
    answered = set_(  # boot's interval no longer overrides the HeartbeatInterval set here
        station,
        item(*ALLOW, attributeValue="true"),
        item(*PROTOCOLS, attributeValue="HTTP"),
        item("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="0"),
        item("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="7"),
        item("OCPPCommCtrlr", "NoSuchVariable", attributeValue="1"),
        item("NoSuchCtrlr", "X", attributeValue="1"),
        item(*ALLOW, attributeValue="true", attributeType="MaxSet"),
    )
    assert [status for status, _ in answered] == [
        "Accepted",
        "Rejected",
        "Rejected",
        "Accepted",
        "UnknownVariable",
        "UnknownComponent",
        "NotSupportedAttributeType",
    ]
    assert get(station, item("OCPPCommCtrlr", "HeartbeatInterval")) == [("Accepted", "7")]
    assert set_(station, item(*ALLOW, attributeValue="maybe")) == [("Rejected", None)]
    station.agent.stop()
    station.restart()
    station.csms.wait_message("StatusNotification", count=2)
    assert get(station, item(*ALLOW)) == [("Accepted", "true")]


def test_hostile_csms_requests_are_bounded(station: Station):
    """Too many entries, an empty list, a name or value beyond the schema's length: a
    CALLERROR (OCPP-J 2.0.1 §4.3 codes), nothing built from it and nothing changed."""
    station.start()
    station.csms.wait_message("BootNotification")
    many = [item(*PROTOCOLS)] * (v201.ITEMS_PER_MESSAGE + 1)
    assert station.raw("GetVariables", {"getVariableData": many})[2] == (
        "OccurrenceConstraintViolation"
    )
    assert station.raw("GetVariables", {"getVariableData": []})[2] == (
        "OccurrenceConstraintViolation"
    )
    assert station.raw("GetVariables", {"getVariableData": item(*PROTOCOLS)})[2] == (
        "TypeConstraintViolation"
    )
    long_name = item("C" * 51, "X")
    assert station.raw("GetVariables", {"getVariableData": [long_name]})[2] == (
        "PropertyConstraintViolation"
    )
    huge = item(*ALLOW, attributeValue="t" * (v201.SET_VALUE_MAX + 1))
    assert station.raw("SetVariables", {"setVariableData": [huge]})[2] == (
        "PropertyConstraintViolation"
    )
    assert get(station, item(*ALLOW)) == [("Accepted", "false")]


def test_B07_get_base_report_then_notify_report(station: Station):
    """B07: FullInventory and ConfigurationInventory are Accepted, then a NotifyReport with
    the requestId, seqNo 0 and each variable's value, mutability and data type follows;
    SummaryInventory (component availability and problems) has nothing the agent owns:
    EmptyResultSet, and no report."""
    station.start()
    station.csms.wait_message("BootNotification")
    answer = station.raw("GetBaseReport", {"requestId": 7, "reportBase": "FullInventory"})
    assert answer[2] == {"status": "Accepted"}
    report = station.csms.wait_message("NotifyReport")[0].payload
    assert report["request_id"] == 7 and report["seq_no"] == 0 and not report.get("tbc")
    found = {(d["component"]["name"], d["variable"]["name"]): d for d in report["report_data"]}
    protocols = found[PROTOCOLS]
    assert protocols["variable_attribute"][0]["value"] == "HTTPS,HTTP,FTP,FTPS"
    assert protocols["variable_attribute"][0]["mutability"] == "ReadOnly"
    assert protocols["variable_characteristics"]["data_type"] == "MemberList"
    assert found[ALLOW]["variable_attribute"][0]["mutability"] == "ReadWrite"

    answer = station.raw("GetBaseReport", {"requestId": 8, "reportBase": "ConfigurationInventory"})
    assert answer[2] == {"status": "Accepted"}
    report = station.csms.wait_message("NotifyReport", count=2)[1].payload
    names = {d["variable"]["name"] for d in report["report_data"]}
    assert ALLOW[1] in names and PROTOCOLS[1] not in names  # only what a CSMS may set

    answer = station.raw("GetBaseReport", {"requestId": 9, "reportBase": "SummaryInventory"})
    assert answer[2] == {"status": "EmptyResultSet"}
    answer = station.raw("GetBaseReport", {"requestId": 10, "reportBase": "Everything"})
    assert answer[2] == "PropertyConstraintViolation"
    station.trigger("Heartbeat")  # a CALL after the refused ones: no report came for them
    station.csms.wait_message("Heartbeat")
    assert [m.payload["request_id"] for m in station.csms.messages("NotifyReport")] == [7, 8]


def test_G01_each_configured_connector_is_reported_after_the_boot(station: Station):
    """After the accepted BootNotification the CSMS hears a StatusNotification for each
    connector of `[station] connectors` (the charger's; Available, nothing blocked them)."""
    station.start(station={"connectors": [[1, 1], [2, 1], [2, 2]]})
    sent = station.csms.wait_message("StatusNotification", count=3)
    assert sorted((m.payload["evse_id"], m.payload["connector_id"]) for m in sent) == [
        (1, 1),
        (2, 1),
        (2, 2),
    ]
    assert {m.payload["connector_status"] for m in sent} == {"Available"}


# --- the table and its store, without a process ---------------------------------------------


def model(tmp_path: Path, reports: list[Any] | None = None) -> tuple[DeviceModel, Settings]:
    settings = Settings(tmp_path)
    beats = {"interval": 300}
    sources = Sources(
        allowed_schemes=("https",),
        security_profile=2,
        heartbeat=lambda: beats["interval"],
        set_heartbeat=lambda s: beats.__setitem__("interval", s),
        settings=settings,
    )

    def send(action: str, request: Any) -> None:
        (reports if reports is not None else []).append((action, to_wire(request)))

    return DeviceModel(owned_variables(sources), send), settings


def test_settings_are_written_atomically_and_a_damaged_file_falls_back(tmp_path: Path):
    """AllowNewSessionsPendingFirmwareUpdate lives in one JSON document in the state dir;
    a damaged or foreign one is ignored (defaults: new sessions not allowed)."""
    device, settings = model(tmp_path)
    request = from_wire(
        v201.SetVariablesRequest, {"setVariableData": [item(*ALLOW, attributeValue="TRUE")]}
    )
    assert to_wire(device.set_variables(request))["setVariableResult"][0]["attributeStatus"] == (
        "Accepted"
    )
    assert settings.get("allow_new_sessions") is True
    stored = json.loads((tmp_path / SETTINGS_FILE).read_text())
    assert stored["allow_new_sessions"] is True and stored["version"] == 1
    assert Settings(tmp_path).get("allow_new_sessions") is True
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind
    (tmp_path / SETTINGS_FILE).write_text("{not json")
    assert Settings(tmp_path).get("allow_new_sessions") is False
    atomic_write_json(tmp_path / SETTINGS_FILE, {"version": 99, "allow_new_sessions": True})
    assert Settings(tmp_path).get("allow_new_sessions") is False


def test_a_read_only_variable_is_rejected_and_unchanged(tmp_path: Path):
    device, _ = model(tmp_path)
    request = from_wire(
        v201.SetVariablesRequest,
        {"setVariableData": [item("SecurityCtrlr", "SecurityProfile", attributeValue="0")]},
    )
    result = to_wire(device.set_variables(request))["setVariableResult"][0]
    assert result["attributeStatus"] == "Rejected"
    assert result["attributeStatusInfo"]["reasonCode"] == "ReadOnly"
    read = from_wire(
        v201.GetVariablesRequest, {"getVariableData": [item("SecurityCtrlr", "SecurityProfile")]}
    )
    assert to_wire(device.get_variables(read))["getVariableResult"][0]["attributeValue"] == "2"


def test_items_per_message_are_reported_as_the_bound_enforced(tmp_path: Path):
    """DeviceDataCtrlr.ItemsPerMessage[GetVariables] tells the CSMS the bound it must keep."""
    device, _ = model(tmp_path)
    wanted = {
        "component": {"name": "DeviceDataCtrlr"},
        "variable": {"name": "ItemsPerMessage", "instance": "GetVariables"},
    }
    read = from_wire(v201.GetVariablesRequest, {"getVariableData": [wanted]})
    value = to_wire(device.get_variables(read))["getVariableResult"][0]["attributeValue"]
    assert int(value) == v201.ITEMS_PER_MESSAGE
    too_many = {"getVariableData": [wanted] * (int(value) + 1)}
    with pytest.raises(OcppError):
        from_wire(v201.GetVariablesRequest, too_many)


def test_2_1_takes_longer_values_than_2_0_1():
    """2.1's SetVariables attributeValue may be 2500 characters (2.0.1: 1000)."""
    long = {"setVariableData": [item(*ALLOW, attributeValue="x" * 2000)]}
    parsed = from_wire(v21.INCOMING_REQUESTS["SetVariables"], long)
    assert len(parsed.set_variable_data[0].attribute_value) == 2000
    with pytest.raises(OcppError):
        from_wire(v201.INCOMING_REQUESTS["SetVariables"], long)


def test_L01_FR_33_connectors_are_blocked_only_while_the_install_waits(tmp_path: Path):
    """L01.FR.33/.34: the block (Unavailable + the charger's command told `block`) comes
    only when the gate is closed, the install waits (InstallScheduled) and new sessions are
    not allowed; it holds through Installing and ends with the update (`allow`, Available).
    The block is kept in the state dir: after a restart the boot report says Unavailable."""
    log = tmp_path / "told"
    command = ["sh", "-c", 'echo "$1" >> "$0"', str(log)]
    queued: list[tuple[str, dict[str, Any]]] = []
    last = {"status": v16.FirmwareStatus.SIGNATURE_VERIFIED}

    def availability() -> Availability:
        return Availability(
            Settings(tmp_path),
            [(1, 1), (2, 1)],
            command,
            lambda action, payload: queued.append((action, payload)),
            lambda: last["status"],
        )

    def reported() -> list[tuple[str, int]]:
        out = [(p["connectorStatus"], p["evseId"]) for a, p in queued if a == "StatusNotification"]
        queued.clear()
        return out

    station = availability()
    station.gate_closed()  # not waiting yet (the gate is asked before InstallScheduled)
    last["status"] = v16.FirmwareStatus.INSTALL_SCHEDULED
    Settings(tmp_path).set("allow_new_sessions", True)
    station = availability()
    station.gate_closed()  # waiting, but the CSMS allows new sessions
    assert reported() == [] and not log.exists()
    Settings(tmp_path).set("allow_new_sessions", False)
    station = availability()
    station.gate_closed()
    station.gate_closed()  # asked again: no second report
    assert reported() == [("Unavailable", 1), ("Unavailable", 2)]
    station.firmware_status(v16.FirmwareStatus.INSTALLING)
    assert reported() == []
    availability().report_all()  # a restart meanwhile: still blocked
    assert reported() == [("Unavailable", 1), ("Unavailable", 2)]
    station.firmware_status(v16.FirmwareStatus.INSTALLED)
    assert reported() == [("Available", 1), ("Available", 2)]
    assert log.read_text().split() == ["block", "allow"]


def test_an_integer_value_is_ascii_digits_only() -> None:
    """A hostile SetVariables value: Unicode digits that str.isdigit() takes but int() refuses
    ("²"), signs doubled, or more digits than any bound are InvalidValue, never an error."""
    assert integer(" +42 ", 1, 86400) == 42
    for text in ["²", "-+5", "+", "1" * 12, "4 2", "٣"]:
        with pytest.raises(InvalidValue):
            integer(text, 1, 86400)
