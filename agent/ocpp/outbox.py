"""The durable outbox: status notifications and security events, delivered in order, at least once.

An entry is persisted (atomically, fsynced) before anyone may try to send it and removed only
when its CALLRESULT arrived, so a power cut, a kill -9 or a CSMS that is offline for days loses
nothing. Entries keep their message id across retransmissions (OCPP-J errata 2025-04 §3.1 allows
reuse), which lets a CSMS drop duplicates. The firmware worker appends from its own thread and
may wait for a delivery (InstallRebooting must be confirmed before the reboot, L01.FR.15).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.durable import StateFileError, StateWriteError, atomic_write_json, read_json

LOG = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Entry:
    unique_id: str
    action: str
    payload: dict[str, Any]
    queued_at: float


class Outbox:
    """A persisted FIFO of CALLs. Thread-safe; `on_change` wakes the sender."""

    def __init__(self, path: Path, on_change: Callable[[], None] = lambda: None) -> None:
        self._path = path
        self._on_change = on_change
        self._lock = threading.Condition()
        self._notes: dict[str, Any] = {}
        self._entries: list[Entry] = self._load()
        self._delivered: set[str] = set()

    def _load(self) -> list[Entry]:
        try:
            document = read_json(self._path, version=FORMAT_VERSION)
            if document is None:
                return []
            entries = [Entry(**entry) for entry in document["entries"]]
            notes = document.get("notes", {})
            if not isinstance(notes, dict):
                raise TypeError("notes is not an object")
            for entry in entries:
                if not (
                    isinstance(entry.unique_id, str)
                    and isinstance(entry.action, str)
                    and isinstance(entry.payload, dict)
                ):
                    raise TypeError(f"malformed entry {entry!r}")
        except (StateFileError, KeyError, TypeError) as exc:
            # Never silently start empty over an unreadable queue: keep it for inspection.
            broken = self._path.with_name(self._path.name + f".broken-{int(time.time())}")
            self._path.rename(broken)
            LOG.error("outbox unreadable, moved to %s: %s", broken, exc)
            return []
        self._notes = notes
        return entries

    def _save(self, entries: list[Entry], notes: dict[str, Any]) -> None:
        rows = [dataclasses.asdict(entry) for entry in entries]
        document = {"version": FORMAT_VERSION, "entries": rows, "notes": notes}
        atomic_write_json(self._path, document)

    def append(self, action: str, payload: dict[str, Any]) -> str:
        """Persist a CALL for delivery; returns its message id. Durable when this returns."""
        return self.append_all([(action, payload)])[0]

    def append_all(
        self, calls: list[tuple[str, dict[str, Any]]], notes: dict[str, Any] | None = None
    ) -> list[str]:
        """Persist several CALLs in one write: after a power cut all of them are queued, or
        none (a status and its security event belong together). `notes` are facts about
        what was queued (the last firmware status), saved in the same write."""
        now = time.time()
        entries = [Entry(str(uuid.uuid4()), action, payload, now) for action, payload in calls]
        with self._lock:
            queued, noted = [*self._entries, *entries], {**self._notes, **(notes or {})}
            self._save(queued, noted)  # StateWriteError: nothing was queued
            self._entries, self._notes = queued, noted
        self._on_change()
        return [entry.unique_id for entry in entries]

    def note(self, key: str) -> Any:
        """A fact saved with `append_all(..., notes=)`; None when never saved."""
        with self._lock:
            return self._notes.get(key)

    def head(self) -> Entry | None:
        with self._lock:
            return self._entries[0] if self._entries else None

    def acknowledge(self, unique_id: str) -> bool:
        """Remove a delivered entry (its CALLRESULT arrived). False if it was not queued."""
        with self._lock:
            remaining = [e for e in self._entries if e.unique_id != unique_id]
            if len(remaining) == len(self._entries):
                return False
            self._entries = remaining
            try:
                self._save(remaining, self._notes)
            except StateWriteError as exc:
                # Delivered all the same; the copy on disk is sent again only if the daemon
                # restarts before a later write succeeds (at least once, as after a crash).
                LOG.error("outbox: %s; %s stays on disk until the next write", exc, unique_id)
            self._delivered.add(unique_id)
            self._lock.notify_all()
        return True

    def wait_delivered(self, unique_id: str, timeout: float) -> bool:
        """Block until the entry was acknowledged, or the timeout passed."""
        with self._lock:
            return self._lock.wait_for(lambda: unique_id in self._delivered, timeout)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)
