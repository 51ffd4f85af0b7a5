"""Direct 2.x mode: the charger's connectors go Unavailable while an update waits for its
sessions to end, when the CSMS said new sessions must not start meanwhile.

L01.FR.33/.34 and TC_L_15_CS: with `ChargingStation.AllowNewSessionsPendingFirmwareUpdate`
false, a station whose install waits (InstallScheduled) at a closed install gate reports its
connectors Unavailable (StatusNotification), and the integrator's `[station] session_block`
command is run with `block` so the charger starts no new session; when the update ends (any
status but InstallScheduled, Installing and InstallRebooting: Installed after the reboot, a
failure, a new request) the command runs with `allow` and the connectors are reported
Available again. After every accepted BootNotification each connector is reported as it
stands (B01: a CSMS expects a StatusNotification per connector after the boot).

The firmware core stays version-agnostic: this listens on the two hooks it already has, the
install gate (`Charger.may_install`, wrapped by `GuardedCharger`) and the reporter's status
hook. The connectors are the charger's; the agent knows only whether it blocked them, so it
reports Available or Unavailable, never Occupied.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.durable import StateWriteError
from agent.firmware.charger import Charger
from agent.firmware.reporting import StatusCall
from agent.ocpp import v16, v201
from agent.ocpp.devicemodel import Settings
from agent.ocpp.validate import to_wire
from agent.service.policy import command_succeeds

LOG = logging.getLogger(__name__)
STATUS_NOTIFICATION = "StatusNotification"
# The update still holds the charger in these; any other status means it is over.
HOLDING = frozenset(
    {
        v16.FirmwareStatus.INSTALL_SCHEDULED,
        v16.FirmwareStatus.INSTALLING,
        v16.FirmwareStatus.INSTALL_REBOOTING,
    }
)
Queue = Callable[[str, dict[str, Any]], object]  # Outbox.append: durable, in order


class Availability:
    """Owns the decision to block new sessions; `Settings` keeps it across restarts."""

    def __init__(
        self,
        settings: Settings,
        connectors: Sequence[tuple[int, int]],
        session_block: Sequence[str],
        queue: Queue,
        last_status: Callable[[], v16.FirmwareStatus | None],
    ) -> None:
        self._settings = settings
        self._connectors = tuple(connectors)
        self._command = tuple(session_block)
        self._queue = queue
        self._last_status = last_status
        # The worker (gate, statuses) changes the block, the loop reports at a boot. The
        # command may take long and runs under `_changing` only, so the loop never waits for
        # it; `_lock` keeps the stored state and the order of the reports in step.
        self._changing = threading.Lock()
        self._lock = threading.Lock()

    @property
    def blocked(self) -> bool:
        return self._settings.get("sessions_blocked")

    def gate_closed(self) -> None:
        """The install gate was asked and is closed: block while the install waits and the
        CSMS does not allow new sessions; lift the block if it allowed them meanwhile."""
        waiting = self._last_status() is v16.FirmwareStatus.INSTALL_SCHEDULED
        allow = self._settings.get("allow_new_sessions")
        self._set_blocked(waiting and not allow)

    def firmware_status(self, status: v16.FirmwareStatus) -> None:
        """Every firmware status on its way out: the update ended, so the block ends."""
        if status not in HOLDING:
            self._set_blocked(False)

    def report_all(self) -> None:
        """Each connector as it stands (after an accepted BootNotification)."""
        with self._lock:
            self._report(self.blocked)

    def _set_blocked(self, block: bool) -> None:
        with self._changing:
            if block == self.blocked:
                return
            word = "block" if block else "allow"
            if self._command:
                ok, reason = command_succeeds([*self._command, word], "session block")
                if not ok:
                    LOG.error("new sessions: %s failed: %s", word, reason)
            with self._lock:
                try:
                    self._settings.set("sessions_blocked", block)
                except StateWriteError as exc:  # reported anyway; the next start reports again
                    LOG.error("cannot store the session block: %s", exc)
                self._report(block)
            LOG.info("new sessions: %s (the update %s)", word, "waits" if block else "ended")

    def _report(self, block: bool) -> None:
        status = v201.ConnectorStatus.UNAVAILABLE if block else v201.ConnectorStatus.AVAILABLE
        now = datetime.datetime.now(datetime.UTC)
        for evse_id, connector_id in self._connectors:
            request = v201.StatusNotificationRequest(
                timestamp=now, connector_status=status, evse_id=evse_id, connector_id=connector_id
            )
            self._queue(STATUS_NOTIFICATION, to_wire(request))


def observing(status_call: StatusCall, availability: Availability) -> StatusCall:
    """The reporter's status hook, telling `availability` each status first."""

    def call(
        status: v16.FirmwareStatus, request_id: int | None, reason: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        availability.firmware_status(status)
        return status_call(status, request_id, reason)

    return call


class GuardedCharger:
    """A `Charger` whose install gate, when closed, tells `Availability`."""

    def __init__(self, inner: Charger, availability: Availability) -> None:
        self._inner = inner
        self._availability = availability

    def problems(self) -> list[str]:
        return self._inner.problems()

    def boot_id(self) -> str:
        return self._inner.boot_id()

    def may_install(self, cancel: threading.Event) -> bool:
        open_now = self._inner.may_install(cancel)
        if not open_now and not cancel.is_set():
            self._availability.gate_closed()
        return open_now

    def check_image(self, facts: Mapping[str, str], cancel: threading.Event) -> tuple[bool, str]:
        return self._inner.check_image(facts, cancel)

    def healthy(self) -> tuple[bool, str]:
        return self._inner.healthy()

    def reboot(self, argv: Sequence[str]) -> None:
        self._inner.reboot(argv)
