"""The small OCPP 2.x device model the agent owns in direct mode (B05, B06, B07).

As the station's only OCPP client the agent must answer GetVariables, SetVariables and
GetBaseReport for the variables that concern what it does (a CSMS provisions a station with
them before anything else), and answer the rest per the spec: a component it does not own is
UnknownComponent, a variable it does not own UnknownVariable, any attribute but Actual
NotSupportedAttributeType, a ReadOnly one Rejected. The table is typed and small on purpose:
each variable has one owner (the config, the session or `Settings`), and a value a CSMS sets
is checked before anything changes. The bounds of every request (items per message, name and
value lengths) are enforced by the payload types in `v201`/`v21`.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.durable import StateFileError, StateWriteError, atomic_write_json, read_json
from agent.ocpp import v201

LOG = logging.getLogger(__name__)
SETTINGS_FILE = "device_model.json"
SETTINGS_VERSION = 1
HEARTBEAT_MIN, HEARTBEAT_MAX = 1, 86400  # as `[csms] heartbeat_interval`
REPORT_ITEMS = 64  # ReportData entries per NotifyReport; the table is far smaller

Reader = Callable[[], str]
Writer = Callable[[str], None]


class InvalidValue(ValueError):
    """A value a CSMS tried to set that the variable does not take; str = the reason."""


# --- the one persisted piece: what a CSMS set ------------------------------------------------


class Settings:
    """The device model's persisted values: `AllowNewSessionsPendingFirmwareUpdate` (set by
    the CSMS) and whether new sessions are blocked now (set by `Availability`), one small
    JSON document written atomically, so both survive a restart or the update's reboot."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / SETTINGS_FILE
        self._lock = threading.Lock()
        self._values: dict[str, bool] = {"allow_new_sessions": False, "sessions_blocked": False}
        try:
            document = read_json(self._path, SETTINGS_VERSION) or {}
        except StateFileError as exc:  # never fatal: the defaults are the safe side
            LOG.warning("device model settings ignored: %s", exc)
            document = {}
        for key in self._values:
            if isinstance(document.get(key), bool):
                self._values[key] = document[key]

    def get(self, key: str) -> bool:
        with self._lock:
            return self._values[key]

    def set(self, key: str, value: bool) -> None:
        """Persist first, then change: a write that fails (StateWriteError) changes nothing."""
        with self._lock:
            values = {**self._values, key: value}
            atomic_write_json(self._path, {"version": SETTINGS_VERSION, **values})
            self._values = values


# --- the table ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Owned:
    """One variable the agent owns: its identity, type, mutability and value."""

    component: str
    name: str
    data_type: v201.DataType
    read: Reader
    write: Writer | None = None  # None: ReadOnly
    instance: str | None = None
    values_list: str | None = None
    persistent: bool = True
    readable: bool = True  # False: WriteOnly (a password): never read back, never reported
    max_limit: int | None = None  # reported in the characteristics (a string's longest length)

    @property
    def mutability(self) -> v201.Mutability:
        if not self.readable:
            return v201.Mutability.WRITE_ONLY
        return v201.Mutability.READ_ONLY if self.write is None else v201.Mutability.READ_WRITE

    def report(self) -> v201.ReportData:
        attribute = v201.VariableAttribute(
            type=v201.AttributeType.ACTUAL,
            value=self.read()[: v201.REPORT_VALUE_MAX] if self.readable else None,
            mutability=self.mutability,
            persistent=self.persistent,
            constant=self.write is None and self.persistent,
        )
        characteristics = v201.VariableCharacteristics(
            data_type=self.data_type,
            supports_monitoring=False,
            values_list=self.values_list,
            max_limit=self.max_limit,
        )
        return v201.ReportData(
            component=v201.Component(name=self.component),
            variable=v201.Variable(name=self.name, instance=self.instance),
            variable_attribute=[attribute],
            variable_characteristics=characteristics,
        )


def boolean(text: str) -> bool:
    """A device model boolean: `true` or `false` (the spec's spelling; case-insensitive)."""
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise InvalidValue("expected true or false")
    return lowered == "true"


def integer(text: str, low: int, high: int) -> int:
    stripped = text.strip()
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not re.fullmatch(r"[+-]?[0-9]{1,11}", stripped):
        raise InvalidValue("expected an integer")
    value = int(stripped)
    if not low <= value <= high:
        raise InvalidValue(f"out of range {low}..{high}")
    return value


def file_transfer_protocols(schemes: Sequence[str]) -> str:
    """`[firmware] allowed_schemes` in the spec's words (FTP, FTPS, HTTP, HTTPS, SFTP)."""
    return ",".join(scheme.upper() for scheme in schemes)


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where the owned variables' values live (the config, the session, the settings)."""

    allowed_schemes: Sequence[str]
    security_profile: int
    heartbeat: Callable[[], int]
    set_heartbeat: Callable[[int], None]
    settings: Settings


def owned_variables(sources: Sources) -> list[Owned]:
    settings = sources.settings
    items = str(v201.ITEMS_PER_MESSAGE)

    def set_allow(text: str) -> None:
        settings.set("allow_new_sessions", boolean(text))

    def set_heartbeat(text: str) -> None:
        sources.set_heartbeat(integer(text, HEARTBEAT_MIN, HEARTBEAT_MAX))

    return [
        Owned(
            "ChargingStation",
            "AllowNewSessionsPendingFirmwareUpdate",
            v201.DataType.BOOLEAN,
            lambda: "true" if settings.get("allow_new_sessions") else "false",
            set_allow,
        ),
        Owned(
            "OCPPCommCtrlr",
            "FileTransferProtocols",
            v201.DataType.MEMBER_LIST,
            lambda: file_transfer_protocols(sources.allowed_schemes),
            values_list="FTP,FTPS,HTTP,HTTPS,SFTP",
        ),
        Owned(
            "OCPPCommCtrlr",
            "HeartbeatInterval",
            v201.DataType.INTEGER,
            lambda: str(sources.heartbeat()),
            set_heartbeat,
            persistent=False,  # the CSMS's BootNotification answer sets it again
        ),
        Owned(
            "SecurityCtrlr",
            "SecurityProfile",
            v201.DataType.INTEGER,
            lambda: str(sources.security_profile),  # `[csms] security_profile`: the config's
        ),
        Owned(
            "DeviceDataCtrlr",
            "ItemsPerMessage",
            v201.DataType.INTEGER,
            lambda: items,
            instance="GetVariables",
        ),
        Owned(
            "DeviceDataCtrlr",
            "ItemsPerMessage",
            v201.DataType.INTEGER,
            lambda: items,
            instance="SetVariables",
        ),
    ]


# --- the three requests ---------------------------------------------------------------------


def _key(component: str, variable: str, instance: str | None) -> tuple[str, str, str | None]:
    """A variable's identity, case-folded (names are case-insensitive in 2.x)."""
    return component.casefold(), variable.casefold(), instance.casefold() if instance else None


class DeviceModel:
    """Answers GetVariables, SetVariables and GetBaseReport from the table; a report is
    handed to `send_report` (action, payload) once the answer went out."""

    def __init__(
        self,
        variables: list[Owned],
        send_report: Callable[[str, Any], None],
        after_set: Callable[[], None] = lambda: None,
    ) -> None:
        # A later entry for the same variable replaces an earlier one (its owner provides it).
        # Component and variable names are case-insensitive (2.0.1 part 2, ComponentType and
        # VariableType): the keys are case-folded, the answers echo the request's spelling.
        self._variables = {_key(v.component, v.name, v.instance): v for v in variables}
        self._components = {v.component.casefold() for v in variables}
        self._send_report = send_report
        self._after_set = after_set  # once a SetVariables answer is out (A01: reconnect)

    def names(self) -> frozenset[tuple[str, str]]:
        """(component, variable) of the station-wide variables without an instance."""
        return frozenset((c, n) for c, n, i in self._variables if i is None)  # case-folded

    def find(self, component: v201.Component, variable: v201.Variable) -> tuple[Owned | None, str]:
        """The owned variable, or None and the status word that says what is unknown. The
        agent's components are station-wide: one with an instance or an EVSE is not ours."""
        if (
            component.name.casefold() not in self._components
            or component.instance is not None
            or component.evse is not None
        ):
            return None, "UnknownComponent"
        owned = self._variables.get(_key(component.name, variable.name, variable.instance))
        return owned, "UnknownVariable"

    def get_variables(self, request: v201.GetVariablesRequest) -> v201.GetVariablesResponse:
        results = []
        for data in request.get_variable_data:
            owned, unknown = self.find(data.component, data.variable)
            value = None
            if owned is None:
                status = v201.GetVariableStatus(unknown)
            elif data.attribute_type not in (None, v201.AttributeType.ACTUAL):
                status = v201.GetVariableStatus.NOT_SUPPORTED_ATTRIBUTE_TYPE
            elif not owned.readable:  # WriteOnly: B06, never returned
                status = v201.GetVariableStatus.REJECTED
            else:
                status = v201.GetVariableStatus.ACCEPTED
                value = owned.read()[: v201.REPORT_VALUE_MAX]
            results.append(
                v201.GetVariableResult(
                    attribute_status=status,
                    component=data.component,
                    variable=data.variable,
                    attribute_type=data.attribute_type,
                    attribute_value=value,
                )
            )
        return v201.GetVariablesResponse(get_variable_result=results)

    def set_variables(self, request: v201.SetVariablesRequest) -> v201.SetVariablesResponse:
        results = []
        for data in request.set_variable_data:
            status, info = self._set(data)
            results.append(
                v201.SetVariableResult(
                    attribute_status=status,
                    component=data.component,
                    variable=data.variable,
                    attribute_type=data.attribute_type,
                    attribute_status_info=info,
                )
            )
        return v201.SetVariablesResponse(set_variable_result=results)

    def after_set_variables(
        self, request: v201.SetVariablesRequest, response: v201.SetVariablesResponse
    ) -> None:
        self._after_set()

    def _set(self, data: v201.SetVariableData) -> tuple[v201.SetVariableStatus, Any]:
        owned, unknown = self.find(data.component, data.variable)
        if owned is None:
            return v201.SetVariableStatus(unknown), None
        if data.attribute_type not in (None, v201.AttributeType.ACTUAL):
            return v201.SetVariableStatus.NOT_SUPPORTED_ATTRIBUTE_TYPE, None
        rejected = v201.SetVariableStatus.REJECTED
        if owned.write is None:
            return rejected, v201.StatusInfo.of("ReadOnly")
        try:
            owned.write(data.attribute_value)
        except InvalidValue as exc:
            return rejected, v201.StatusInfo.of("InvalidValue", str(exc))
        except StateWriteError as exc:
            LOG.error("cannot store %s.%s: %s", owned.component, owned.name, exc)
            return rejected, v201.StatusInfo.of("InternalError", "cannot store the value")
        LOG.info("the CSMS set %s.%s", owned.component, owned.name)
        return v201.SetVariableStatus.ACCEPTED, None

    # --- GetBaseReport ----------------------------------------------------------------------

    def _selected(self, base: v201.ReportBase) -> list[Owned]:
        """FullInventory: every variable; ConfigurationInventory: those a CSMS may set;
        SummaryInventory (availability and problems of components): none the agent owns."""
        variables = list(self._variables.values())
        if base is v201.ReportBase.FULL_INVENTORY:
            return variables
        if base is v201.ReportBase.CONFIGURATION_INVENTORY:
            return [v for v in variables if v.write is not None]
        return []

    def base_report(self, request: v201.GetBaseReportRequest) -> v201.GetBaseReportResponse:
        if not self._selected(request.report_base):
            return v201.GetBaseReportResponse(status=v201.GenericDeviceModelStatus.EMPTY_RESULT_SET)
        return v201.GetBaseReportResponse(status=v201.GenericDeviceModelStatus.ACCEPTED)

    def after_base_report(
        self, request: v201.GetBaseReportRequest, response: v201.GetBaseReportResponse
    ) -> None:
        """B07: the NotifyReport(s) follow the answer, seqNo from 0, tbc until the last."""
        if response.status is not v201.GenericDeviceModelStatus.ACCEPTED:
            return
        self.send_base_report(request.request_id, request.report_base)

    def reports(self, base: v201.ReportBase) -> bool:
        """Whether a `base` report holds any of the agent's variables."""
        return bool(self._selected(base))

    def send_base_report(self, request_id: int, base: v201.ReportBase, first: int = 0) -> None:
        """The NotifyReport(s) of a `base` report, seqNo from `first` (sidecar 2.x: after the
        stack's own), tbc until the last."""
        data = [v.report() for v in self._selected(base)]
        parts = [data[i : i + REPORT_ITEMS] for i in range(0, len(data), REPORT_ITEMS)]
        now = datetime.datetime.now(datetime.UTC)
        for index, part in enumerate(parts):
            report = v201.NotifyReportRequest(
                request_id=request_id,
                generated_at=now,
                seq_no=first + index,
                report_data=part,
                tbc=index < len(parts) - 1,
            )
            self._send_report("NotifyReport", report)
