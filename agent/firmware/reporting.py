"""What the CSMS is told about firmware: statuses and security events, through the outbox.

Every SignedFirmwareStatusNotification carries the requestId of the update it belongs to
(L01.FR.10, .21). The last status queued is persisted so a trigger can be answered after a
restart or reboot: `Idle` when nothing ever ran or the last status was `Installed` (L01.FR.28),
otherwise the last status with its requestId (L01.FR.29). Security events go out whatever the
white paper's criticality table says: L01.FR.02/03 require InvalidFirmwareSigningCertificate and
InvalidFirmwareSignature, which the table lists as non-critical (a trap other stacks fell into).
The status CALL itself comes from a per-version hook (`StatusCall`): 1.6 sends
SignedFirmwareStatusNotification, 2.x FirmwareStatusNotification, with the same fields; the hook
is also told the cause of a failure, which 2.1's notification carries in `statusInfo`.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.logfields import fields
from agent.ocpp import v16
from agent.ocpp.outbox import Outbox
from agent.ocpp.validate import to_wire

LOG = logging.getLogger(__name__)
LAST_STATUS_NOTE = "last_firmware_status"
# (status, requestId, cause) -> (action, payload) of the firmware status notification to queue.
StatusCall = Callable[[v16.FirmwareStatus, int | None, str | None], tuple[str, dict[str, Any]]]


def signed_status_call(
    status: v16.FirmwareStatus, request_id: int | None, reason: str | None = None
) -> tuple[str, dict[str, Any]]:
    """OCPP 1.6 Security Extension: SignedFirmwareStatusNotification (it has no field for
    `reason`)."""
    request = v16.SignedFirmwareStatusNotificationReq(status=status, request_id=request_id)
    return v16.Action.SIGNED_FIRMWARE_STATUS_NOTIFICATION.value, to_wire(request)


class Reporter:
    """Queues firmware statuses and security events durably; remembers the last status."""

    def __init__(self, outbox: Outbox, status_call: StatusCall = signed_status_call) -> None:
        self._outbox = outbox
        self._status_call = status_call
        self._lock = threading.Lock()
        self._last: tuple[v16.FirmwareStatus, int | None] | None = self._load()

    def _load(self) -> tuple[v16.FirmwareStatus, int | None] | None:
        note = self._outbox.note(LAST_STATUS_NOTE)
        try:
            return v16.FirmwareStatus(note["status"]), note.get("request_id")
        except (KeyError, TypeError, ValueError):
            return None

    def status(
        self,
        status: v16.FirmwareStatus,
        request_id: int,
        event: v16.SecurityEvent | None = None,
        tech_info: str | None = None,
    ) -> str:
        """Queue a status for `request_id` (with its security event, in the same write);
        returns the status's outbox id, to await its delivery. `tech_info` is the cause: the
        event's techInfo, and the status hook's `reason`.

        The status and the record of it as the last one are one write: a power cut leaves
        both or neither, so a resumed job neither loses nor repeats a status."""
        calls = [self._status_call(status, request_id, tech_info)]
        if event is not None:
            calls.append(self._event_call(event, tech_info))
        note = {LAST_STATUS_NOTE: {"status": status.value, "request_id": request_id}}
        with self._lock:
            unique_id = self._outbox.append_all(calls, notes=note)[0]
            self._last = (status, request_id)
        LOG.info(
            "firmware status %s (request %s)",
            status,
            request_id,
            extra=fields(request_id=request_id, firmware_status=status.value),
        )
        return unique_id

    def security_event(self, event: str, tech_info: str | None = None) -> str:
        """Queue a SecurityEventNotification, timestamped now (A04.FR.02: guaranteed delivery).
        `event` is a `v16.SecurityEvent` or, where 2.x renamed it, a `v201.SecurityEvent`."""
        return self._outbox.append(*self._event_call(event, tech_info))

    @staticmethod
    def _event_call(event: str, tech_info: str | None) -> tuple[str, dict[str, Any]]:
        request = v16.SecurityEventNotificationReq(
            type=str(event),
            timestamp=datetime.datetime.now(datetime.UTC),
            tech_info=tech_info[:255] if tech_info else None,
        )
        LOG.warning(
            "security event %s: %s", event, tech_info or "", extra=fields(security_event=event)
        )
        return v16.Action.SECURITY_EVENT_NOTIFICATION.value, to_wire(request)

    def undelivered(self, status: v16.FirmwareStatus, request_id: int) -> str | None:
        """The outbox id of this status for `request_id` while it is still queued (not yet
        answered by the CSMS), else None: a resumed job awaits it before it reboots."""
        action, payload = self._status_call(status, request_id, None)
        for entry in self._outbox.entries():  # the queued one may carry a reason besides
            if entry.action == action and all(
                entry.payload.get(k) == v for k, v in payload.items()
            ):
                return entry.unique_id
        return None

    def last(self) -> tuple[v16.FirmwareStatus, int | None] | None:
        """The last status queued, with its requestId (None when none ever was)."""
        with self._lock:
            return self._last

    def triggered(self) -> v16.SignedFirmwareStatusNotificationReq:
        """The answer to a FirmwareStatusNotification trigger (L01.FR.28, .29)."""
        with self._lock:
            last = self._last
        if last is None or last[0] is v16.FirmwareStatus.INSTALLED:
            return v16.SignedFirmwareStatusNotificationReq(status=v16.FirmwareStatus.IDLE)
        return v16.SignedFirmwareStatusNotificationReq(status=last[0], request_id=last[1])
