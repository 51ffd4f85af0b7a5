"""Sidecar fixtures for OCPP 2.0.1 and 2.1: a real charge-point stack (the `ocpp` library's v201
or v21 ChargePoint on `websockets`, test-only) connects to the agent as if it were the CSMS, and
the 2.x test CSMS (`Csms2x`, which checks every CALL it receives against that version's
schemas) sits in front, taking the stack's transaction messages as a CSMS does."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.routing import on

from agent.demo.csms import Csms2x, _side_2x
from agent.demo.rig import AgentProcess, ChargerRig
from agent.demo.stack import StackClient, timestamp
from tests.sidecar.charger import SidecarCharger


def library(version: str) -> Any:
    """The `ocpp` library's module for `version` (ocpp.v201, ocpp.v21)."""
    return importlib.import_module("ocpp.v" + version.replace(".", ""))


class SidecarCsms(Csms2x):
    """The 2.x test CSMS, also taking what a charging stack sends (TransactionEvent)."""

    __test__ = False

    def __init__(self, version: str) -> None:
        super().__init__(version)
        results = library(version).call_result

        class Side(_side_2x(version)):  # type: ignore[misc]
            @on("TransactionEvent")
            def on_transaction_event(self, **payload: Any) -> Any:
                self.csms._note(self.id, "TransactionEvent", payload)
                return results.TransactionEvent()

        self.side_class = Side


def _accepted(data: list[dict[str, Any]], **extra: str) -> list[dict[str, Any]]:
    """The stack's result for each Get/SetVariables entry: Accepted, naming its variable."""
    return [
        {
            "attributeStatus": "Accepted",
            **extra,
            "component": item["component"],
            "variable": item["variable"],
        }
        for item in data
    ]


def _stack_side(version: str) -> type[Any]:
    """The stack's own ChargePoint: it answers the device-model, Reset and trigger CALLs a
    CSMS sends it (the agent must forward them), noting each; every set is Accepted."""
    module = library(version)
    results = module.call_result

    class StackSide(module.ChargePoint):  # type: ignore[misc,name-defined]
        stack: Stack2x

        @on("GetVariables")
        def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
            self.stack.handled.append("GetVariables")
            answers = _accepted(get_variable_data, attributeValue="stack's")
            return results.GetVariables(get_variable_result=answers)

        @on("SetVariables")
        def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
            self.stack.handled.append("SetVariables")
            return results.SetVariables(set_variable_result=_accepted(set_variable_data))

        @on("Reset")
        def on_reset(self, type: str, **_: Any) -> Any:
            self.stack.handled.append(f"Reset {type}")
            return results.Reset(status="Accepted")

        @on("TriggerMessage")
        def on_trigger(self, requested_message: str, **_: Any) -> Any:
            self.stack.handled.append(f"TriggerMessage {requested_message}")
            return results.TriggerMessage(status="Accepted")

    return StackSide


class Stack2x(StackClient):
    """The charger's own 2.x stack (offering `offer`, by default its version's subprotocol):
    blocking verbs for the tests, its loop in a thread; the CSMS's CALLs it answered in
    `handled`."""

    failure = AssertionError

    def __init__(self, url: str, version: str, offer: str | None = None) -> None:
        super().__init__(url, offer or f"ocpp{version}", _stack_side(version))
        self.version, self.offer = version, self.subprotocol
        self.library = library(version)
        self.handled: list[str] = []
        self._seq = 0

    def worth_retrying(self, exc: Exception) -> bool:
        """Only while the agent answers 503 (its CSMS link not yet up) or nobody listens: a
        refused subprotocol is the test's answer."""
        return not isinstance(exc, websockets.InvalidStatus) or exc.response.status_code == 503

    # --- the verbs a charging session uses ---

    def boot(self, reason: str = "PowerUp") -> Any:
        station = {"model": "S-2", "vendorName": "StackVendor"}
        return self.call(
            self.library.call.BootNotification(charging_station=station, reason=reason)
        )

    def heartbeat(self) -> Any:
        return self.call(self.library.call.Heartbeat())

    def transaction_event(self, kind: str, transaction: str, wh: int) -> Any:
        """TransactionEvent Started/Updated/Ended with one energy reading."""
        self._seq += 1
        extra: dict[str, Any] = {}
        if kind == "Started":
            extra["evse"] = {"id": 1, "connectorId": 1}
            extra["id_token"] = {"idToken": "TAG-1", "type": "ISO14443"}
        reading = {"timestamp": timestamp(), "sampledValue": [{"value": wh}]}
        reasons = {
            "Started": "Authorized",
            "Updated": "MeterValuePeriodic",
            "Ended": "StopAuthorized",
        }
        return self.call(
            self.library.call.TransactionEvent(
                event_type=kind,
                timestamp=timestamp(),
                trigger_reason=reasons[kind],
                seq_no=self._seq,
                transaction_info={"transactionId": transaction},
                meter_value=[reading],
                **extra,
            )
        )


class Sidecar2x(SidecarCharger):
    """A charger in sidecar mode speaking `version`: the rig's agent between the 2.x test
    CSMS and a 2.x stack."""

    csms: SidecarCsms

    def __init__(
        self, rig: ChargerRig, csms: SidecarCsms, version: str, agents: list[AgentProcess]
    ) -> None:
        super().__init__(rig, csms, agents, ocpp_version=version)
        self.version = version
        self.stacks: list[Stack2x] = []

    def stack(self, offer: str | None = None) -> Stack2x:
        stack = Stack2x(self.stack_url, self.version, offer)
        self.stacks.append(stack)
        stack.connect()
        return stack


def _sidecar(tmp_path: Path, version: str, agents: list[AgentProcess]) -> Iterator[Sidecar2x]:
    server = SidecarCsms(version).start()
    sidecar = Sidecar2x(ChargerRig(tmp_path, server.url), server, version, agents)
    try:
        yield sidecar
    finally:
        for stack in sidecar.stacks:
            stack.stop()
        for agent in agents:
            agent.stop()
        server.stop()
    assert server.schema_violations == [], "frames at the CSMS that violate the schemas"


@pytest.fixture
def sidecar201(tmp_path: Path, agents: list[AgentProcess]) -> Iterator[Sidecar2x]:
    yield from _sidecar(tmp_path, "2.0.1", agents)


@pytest.fixture
def sidecar21(tmp_path: Path, agents: list[AgentProcess]) -> Iterator[Sidecar2x]:
    yield from _sidecar(tmp_path, "2.1", agents)
