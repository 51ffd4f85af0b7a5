"""A real OCPP 2.0.1 CSMS for tests: the `ocpp` library's v201 ChargePoint, on loopback.

The 1.6 `TestCsms` with the other side swapped: every CALL the agent sends is checked against
the library's official 2.0.1 JSON schemas (violations collected, checked at teardown), and the
library checks each answer of the agent to our CALLs against them too. Test-only.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import Action, RegistrationStatusEnumType

from agent.demo.csms import TestCsms


class _CsmsSide201(ChargePoint):  # type: ignore[misc]
    """The CSMS's view of one charging station, answering what the agent sends."""

    csms: Csms201

    @on(Action.boot_notification)
    def on_boot(self, **payload: Any) -> Any:
        self.csms._note(self.id, "BootNotification", payload)
        status, interval = (
            self.csms.boot_responses.pop(0)
            if self.csms.boot_responses
            else (RegistrationStatusEnumType.accepted, self.csms.heartbeat_interval)
        )
        return call_result.BootNotification(
            current_time=self.csms.now().isoformat(), interval=interval, status=status
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **payload: Any) -> Any:
        self.csms._note(self.id, "Heartbeat", payload)
        return call_result.Heartbeat(current_time=self.csms.now().isoformat())

    @on(Action.firmware_status_notification)
    def on_status(self, **payload: Any) -> Any:
        self.csms._note(self.id, "FirmwareStatusNotification", payload)
        return call_result.FirmwareStatusNotification()

    @on(Action.security_event_notification)
    def on_security_event(self, **payload: Any) -> Any:
        self.csms._note(self.id, "SecurityEventNotification", payload)
        return call_result.SecurityEventNotification()


class Csms201(TestCsms):
    """`TestCsms` speaking OCPP 2.0.1 (subprotocol `ocpp2.0.1`)."""

    __test__ = False
    side_class = _CsmsSide201
    schema_version = "2.0.1"

    def __init__(self) -> None:
        super().__init__(subprotocols=["ocpp2.0.1"])

    def statuses(self) -> list[tuple[str, int | None]]:
        """(status, requestId) of every FirmwareStatusNotification, in arrival order."""
        return [
            (m.payload["status"], m.payload.get("request_id"))
            for m in self.messages("FirmwareStatusNotification")
        ]
