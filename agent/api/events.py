"""The API's durable events: the outbox's journal, with a `seq` that only ever grows.

In API mode the Reporter queues statuses and security events here instead of in the OCPP
outbox. It is the same durable, bounded queue (`agent.ocpp.outbox.Outbox`: fsynced before it
counts, a status never dropped), with one addition: every event gets the next `seq`, written in
the entry and, as a note, in the same write, so the counter survives restarts even when the
queue is empty. A host acknowledges by `seq`; the entries leave the queue then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.ocpp import v16
from agent.ocpp.outbox import SECURITY_EVENT, Entry, Outbox
from agent.service.public_reason import public_reason, reason_code

EVENTS_FILE = "api-events.json"
SEQ_NOTE = "api_seq"
STATUS_ACTION = "status"  # the entry action of a firmware status (the Reporter's StatusCall)


def status_call(
    status: v16.FirmwareStatus, request_id: int | None, reason: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The Reporter's status hook in API mode: the status as the API's `status` event. A
    failure carries its cause as logged (`reason`, for the host's log: it names slots, files
    and allowed_hosts) and what the host forwards to its CSMS instead, taken from the whole
    cause: `public_reason` and `reason_code`, direct 2.x mode's statusInfo."""
    event: dict[str, Any] = {"status": status.value, "request_id": request_id}
    if reason:
        event["reason"] = reason[:512]
    return STATUS_ACTION, {**event, **public_fields(status, reason)}


def public_fields(status: v16.FirmwareStatus, reason: str | None) -> dict[str, str]:
    """`public_reason` and `reason_code` of a failure status; nothing for any other."""
    code = reason_code(status, reason)
    if code is None:
        return {}
    return {"public_reason": public_reason(status, reason), "reason_code": code}


def _public_of(payload: dict[str, Any]) -> dict[str, str]:
    """A journalled status's public fields; for one saved before they existed (an agent
    upgraded with events queued), made from what it kept."""
    if "public_reason" in payload:
        return {name: payload[name] for name in ("public_reason", "reason_code") if name in payload}
    try:
        status = v16.FirmwareStatus(str(payload.get("status")))
    except ValueError:
        return {}
    return public_fields(status, payload.get("reason"))


class EventLog(Outbox):
    """The outbox, numbering what it queues. Thread-safe like the outbox."""

    def __init__(self, path: Path, on_change: Callable[[], None] = lambda: None) -> None:
        super().__init__(path, on_change)
        self._seq_lock = threading.Lock()
        saved = self.note(SEQ_NOTE)
        self._last_seq = saved if isinstance(saved, int) else 0

    @property
    def next_seq(self) -> int:
        """The `seq` the next event will get."""
        with self._seq_lock:
            return self._last_seq + 1

    def append_all(
        self, calls: list[tuple[str, dict[str, Any]]], notes: dict[str, Any] | None = None
    ) -> list[str]:
        """Queue `calls`, each numbered; the counter is saved in the same write."""
        with self._seq_lock:
            numbered = []
            for action, payload in calls:
                self._last_seq += 1
                numbered.append((action, {**payload, "seq": self._last_seq}))
            return super().append_all(numbered, {**(notes or {}), SEQ_NOTE: self._last_seq})

    def acknowledge_through(self, seq: int) -> int:
        """Remove every event numbered `seq` or lower; how many were removed."""
        done = 0
        for entry in self.entries():
            if entry_seq(entry) <= seq and self.acknowledge(entry.unique_id):
                done += 1
        return done


def entry_seq(entry: Entry) -> int:
    seq = entry.payload.get("seq")
    return seq if isinstance(seq, int) else 0


def wire_event(entry: Entry) -> dict[str, Any] | None:
    """The event line for a queued entry (None for one that is not an API event)."""
    payload = entry.payload
    if entry.action == STATUS_ACTION:
        status = {
            "event": "status",
            "seq": entry_seq(entry),
            "request_id": payload.get("request_id"),
            "status": payload.get("status"),
        }
        if payload.get("reason"):
            status["reason"] = payload["reason"]
        status.update(_public_of(payload))
        return status
    if entry.action == SECURITY_EVENT:
        event = {
            "event": "security_event",
            "seq": entry_seq(entry),
            "type": payload.get("type"),
            "timestamp": payload.get("timestamp"),
        }
        if payload.get("techInfo"):
            event["tech_info"] = payload["techInfo"]
        return event
    return None
