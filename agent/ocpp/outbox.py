"""The durable outbox: status notifications and security events, delivered in order, at least once.

An entry is persisted (fsynced) before anyone may try to send it and removed only when its
CALLRESULT arrived, so a power cut, a kill -9 or a CSMS that is offline for days loses nothing
that matters. Entries keep their message id across retransmissions (OCPP-J errata 2025-04 §3.1
allows reuse), which lets a CSMS drop duplicates. The firmware worker appends from its own
thread and may wait for a delivery (InstallRebooting must be confirmed before the reboot,
L01.FR.15).

On disk: a snapshot (`outbox.json`, the whole queue, replaced atomically) and a journal beside
it (`outbox.journal`, one record per change since the snapshot: `<crc32> <json>\\n`, each
written and fsynced before the change counts). A change costs one small record, not a rewrite
of the queue; the snapshot is rewritten when the queue empties, every `COMPACT_EVERY` records
and at start. A torn last record (a power cut mid-write) fails its checksum and is ignored on
load; records the snapshot already holds are skipped by their sequence number.

Bounded (a CSMS that sends thousands of bad requests and never acknowledges must not fill the
flash): at most `max_entries` entries and `max_bytes` of payload (`[csms] outbox_max_entries`
and `outbox_max_bytes`, 500 and 256 KiB by default). Drop order, first to last:
1. a security event identical (type and techInfo) to one still waiting is not queued again
   (coalesced: the waiting one says it);
2. the oldest queued security event (not the one possibly in flight at the head);
3. a firmware status (or any other CALL) is never dropped: the queue may then stay above its
   bounds, which only a run of updates could cause, one line logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import os
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent import crashpoints
from agent.durable import (
    StateFileError,
    StateWriteError,
    atomic_write_json,
    fsync_dir,
    read_json,
)

LOG = logging.getLogger(__name__)
FORMAT_VERSION = 1
SECURITY_EVENT = "SecurityEventNotification"
MAX_ENTRIES = 500  # the defaults of [csms] outbox_max_entries and outbox_max_bytes
MAX_BYTES = 256 * 1024
COMPACT_EVERY = 256  # journal records between two snapshots
SNAPSHOT_BELOW = 4096  # a queue this small is written whole: a page, as cheap as a record
MAX_RECORD = 1 << 20  # a longer journal line is not ours: the journal ends before it


@dataclasses.dataclass(frozen=True)
class Entry:
    unique_id: str
    action: str
    payload: dict[str, Any]
    queued_at: float

    @functools.cached_property
    def size(self) -> int:
        """What the entry counts against `max_bytes`: its payload's JSON and some overhead."""
        return len(json.dumps(self.payload, ensure_ascii=False).encode("utf-8")) + 64


def _event_key(entry: Entry) -> tuple[Any, Any] | None:
    if entry.action != SECURITY_EVENT:
        return None
    return entry.payload.get("type"), entry.payload.get("techInfo")


def _checked_entry(row: Any) -> Entry:
    entry = Entry(**row)
    if not (
        isinstance(entry.unique_id, str)
        and isinstance(entry.action, str)
        and isinstance(entry.payload, dict)
    ):
        raise TypeError(f"malformed entry {entry!r}")
    return entry


class Outbox:
    """A persisted, bounded FIFO of CALLs. Thread-safe; `on_change` wakes the sender."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], None] = lambda: None,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._path = path
        self._journal = path.with_suffix(".journal")
        self._on_change = on_change
        self._max_entries, self._max_bytes = max_entries, max_bytes
        self._lock = threading.Condition()
        self._notes: dict[str, Any] = {}
        self._entries: list[Entry] = []
        self._bytes = 0
        self._seq = 0
        self._records = 0  # in the journal since the last snapshot
        self._journal_size = 0  # its known good length
        self._delivered: set[str] = set()
        self.coalesced = 0  # repeated security events not queued again (since start)
        self.dropped = 0  # security events dropped to stay within the bounds (since start)
        self._journal_dirty = False
        self._snapshot_empty = True  # until the load says otherwise
        try:
            with self._journal_locked() as fd:
                self._load(fd)
                if self._journal_dirty:  # fold the journal (and a torn tail) into the snapshot
                    try:
                        self._compact(fd)
                    except StateWriteError as exc:  # a full disk: the journal stays
                        LOG.error("outbox journal not folded into the snapshot: %s", exc)
                        self._snapshot_empty = True  # so the next change writes it whole
        except OSError as exc:  # no journal can be made (a read-only state dir)
            LOG.error("outbox journal %s unusable: %s", self._journal, exc)
            self._load(None)

    @contextlib.contextmanager
    def _journal_locked(self) -> Iterator[int]:
        """The journal, open and locked (flock) against another Outbox on the same files (a
        tool, a test polling the queue): one whole change at a time. Created durably."""
        try:
            fd = os.open(self._journal, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = os.open(self._journal, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fsync_dir(self._journal.parent)
            except OSError:
                os.close(fd)
                raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # and the lock with it

    # --- loading ----------------------------------------------------------------------------

    def _load(self, journal: int | None) -> None:
        try:
            document = read_json(self._path, version=FORMAT_VERSION)
            if document is not None:
                entries = [_checked_entry(row) for row in document["entries"]]
                notes = document.get("notes", {})
                if not isinstance(notes, dict):
                    raise TypeError("notes is not an object")
                seq = document.get("seq", 0)
                if not isinstance(seq, int):
                    raise TypeError("seq is not an integer")
                self._entries, self._notes, self._seq = entries, notes, seq
        except (StateFileError, KeyError, TypeError) as exc:
            # Never silently start empty over an unreadable queue: keep it for inspection.
            broken = self._path.with_name(self._path.name + f".broken-{int(time.time())}")
            self._path.rename(broken)
            LOG.error("outbox unreadable, moved to %s: %s", broken, exc)
        if journal is not None:
            for record in self._journal_records(journal):
                self._records += 1
                if record["seq"] > self._seq:
                    self._apply(record)
                    self._seq = record["seq"]
        self._bytes = sum(e.size for e in self._entries)
        self._snapshot_empty = not self._entries  # or the journal is folded in right after

    def _journal_records(self, fd: int) -> Iterator[dict[str, Any]]:
        """The journal's whole, checksummed records, in order; it ends at the first that is
        not (a torn last write; or damage, and then a copy is kept for inspection)."""
        with open(fd, "rb", closefd=False) as handle:
            total = os.fstat(fd).st_size
            self._journal_dirty = total > 0
            while line := handle.readline(MAX_RECORD):
                record = _decode(line)
                if record is None:
                    rest = total - self._journal_size
                    LOG.warning("outbox journal: %d byte(s) after the last record ignored", rest)
                    if line.endswith(b"\n") or handle.read(1):  # not just a torn tail
                        handle.seek(0)
                        self._keep_damaged_journal(handle.read())
                    return
                self._journal_size += len(line)  # new records go after the last whole one
                yield record

    def _keep_damaged_journal(self, data: bytes) -> None:
        kept = self._journal.with_name(self._journal.name + f".broken-{int(time.time())}")
        try:
            kept.write_bytes(data)
        except OSError as exc:
            LOG.error("outbox journal damaged before its end; no copy kept: %s", exc)
        else:
            LOG.error("outbox journal damaged before its end, a copy kept as %s", kept)

    def _apply(self, record: dict[str, Any]) -> None:
        """Replay one journal record (as `_change` made it)."""
        try:
            added = [_checked_entry(row) for row in record.get("add", [])]
            gone = set(record.get("drop", []))
            if "ack" in record:
                gone.add(record["ack"])
            notes = record.get("notes", {})
            if not isinstance(notes, dict):
                raise TypeError("notes is not an object")
        except TypeError as exc:
            LOG.error("outbox journal record %s skipped: %s", record.get("seq"), exc)
            return
        self._entries = [e for e in self._entries if e.unique_id not in gone] + added
        self._notes = {**self._notes, **notes}

    # --- writing ----------------------------------------------------------------------------

    def _compact(self, journal: int) -> None:
        """Write the whole queue as the snapshot, then empty the (locked) journal."""
        rows = [dataclasses.asdict(entry) for entry in self._entries]
        document = {
            "version": FORMAT_VERSION,
            "seq": self._seq,
            "entries": rows,
            "notes": self._notes,
        }
        atomic_write_json(self._path, document)
        self._snapshot_empty = not self._entries
        self._records = 0
        try:
            if self._journal_size or os.fstat(journal).st_size:
                os.ftruncate(journal, 0)
                os.fsync(journal)
            self._journal_size = 0
            self._journal_dirty = False
        except OSError as exc:  # the snapshot holds all; the records are skipped by seq
            LOG.warning("outbox journal not emptied: %s", exc)

    def _write_record(self, journal: int, record: dict[str, Any]) -> None:
        """Append one record and fsync it; on failure the journal is cut back to its last
        whole record and StateWriteError raised (nothing of the change counts)."""
        body = json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        line = b"%08x %s\n" % (zlib.crc32(body), body)
        try:
            size = os.fstat(journal).st_size
            if len(line) > MAX_RECORD or size < self._journal_size:
                # A record longer than a reader accepts would end the journal at the next
                # load, losing it; or another Outbox on these files compacted it. Either
                # way: our queue, whole, as the snapshot (which has no such bound).
                self._compact(journal)
                return
            if size > self._journal_size:
                os.ftruncate(journal, self._journal_size)  # a failed write left a part behind
            view = memoryview(line)
            offset = self._journal_size
            while view:
                written = os.pwrite(journal, view, offset)
                view, offset = view[written:], offset + written
            os.fsync(journal)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(journal, self._journal_size)
            raise StateWriteError(exc.errno, f"cannot write {self._journal}: {exc}") from exc
        self._journal_size += len(line)
        self._records += 1
        crashpoints.reached(f"write {self._path.name}")

    def _change(self, entries: list[Entry], notes: dict[str, Any], record: dict[str, Any]) -> None:
        """Make the new queue durable (one record, or a snapshot), then current.

        A small queue (the usual one or two entries) is written whole, so outbox.json alone
        says what is queued, as in earlier releases; records only once it has grown (and
        never while the snapshot shows an empty queue: readers of outbox.json alone would
        think it drained)."""
        previous = (self._entries, self._notes, self._seq)
        self._entries, self._notes, self._seq = entries, notes, self._seq + 1
        whole = (
            not entries
            or sum(e.size for e in entries) < SNAPSHOT_BELOW
            or self._records >= COMPACT_EVERY
            or self._snapshot_empty
        )
        try:
            with self._journal_locked() as journal:
                if whole:
                    self._compact(journal)
                else:
                    self._write_record(journal, {"seq": self._seq, **record})
        except OSError as exc:
            self._entries, self._notes, self._seq = previous
            if isinstance(exc, StateWriteError):
                raise
            raise StateWriteError(exc.errno, f"cannot write {self._journal}: {exc}") from exc
        self._bytes = sum(e.size for e in entries)

    # --- the API ----------------------------------------------------------------------------

    def append(self, action: str, payload: dict[str, Any]) -> str:
        """Persist a CALL for delivery; returns its message id. Durable when this returns."""
        return self.append_all([(action, payload)])[0]

    def append_all(
        self, calls: list[tuple[str, dict[str, Any]]], notes: dict[str, Any] | None = None
    ) -> list[str]:
        """Persist several CALLs in one write: after a power cut all of them are queued, or
        none (a status and its security event belong together). `notes` are facts about
        what was queued (the last firmware status), saved in the same write. A security event
        identical to one waiting is coalesced into it (its id is returned)."""
        now = time.time()
        with self._lock:
            waiting = {_event_key(e): e.unique_id for e in self._entries[1:]}  # head in flight
            ids: list[str] = []
            added: list[Entry] = []
            for action, payload in calls:
                entry = Entry(str(uuid.uuid4()), action, payload, now)
                key = _event_key(entry)
                if key is not None and key in waiting:
                    self.coalesced += 1
                    if _worth_a_line(self.coalesced):
                        LOG.info(
                            "security event %s repeated while one waits: coalesced (%d so far)",
                            key[0],
                            self.coalesced,
                        )
                    ids.append(waiting[key])
                    continue
                added.append(entry)
                ids.append(entry.unique_id)
            if not added and not notes:
                return ids
            queued = [*self._entries, *added]
            dropped = self._over_bounds(queued)
            queued = [e for e in queued if e.unique_id not in dropped]
            record: dict[str, Any] = {"add": [dataclasses.asdict(e) for e in added]}
            if dropped:
                record["drop"] = sorted(dropped)
            if notes:
                record["notes"] = notes
            self._change(queued, {**self._notes, **(notes or {})}, record)
            self.dropped += len(dropped)
        self._on_change()
        return ids

    def _over_bounds(self, queued: list[Entry]) -> set[str]:
        """Oldest security events (the head excepted) to drop until within the bounds."""
        count, size = len(queued), sum(e.size for e in queued)
        dropped: set[str] = set()
        for entry in queued[1:]:
            if count <= self._max_entries and size <= self._max_bytes:
                break
            if entry.action == SECURITY_EVENT:
                dropped.add(entry.unique_id)
                count, size = count - 1, size - entry.size
                if _worth_a_line(self.dropped + len(dropped)):
                    LOG.warning(
                        "outbox full (%d entries, %d bytes at most): dropped the oldest "
                        "security event %s of %s (%d dropped so far)",
                        self._max_entries,
                        self._max_bytes,
                        entry.payload.get("type"),
                        entry.payload.get("timestamp"),
                        self.dropped + len(dropped),
                    )
        if (count > self._max_entries or size > self._max_bytes) and _worth_a_line(count):
            LOG.warning("outbox above its bounds with firmware statuses only: %d queued", count)
        return dropped

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
            try:
                self._change(remaining, self._notes, {"ack": unique_id})
            except StateWriteError as exc:
                # Delivered all the same; the copy on disk is sent again only if the daemon
                # restarts before a later write succeeds (at least once, as after a crash).
                LOG.error("outbox: %s; %s stays on disk until the next write", exc, unique_id)
                self._entries = remaining
                self._bytes = sum(e.size for e in remaining)
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

    @property
    def size_bytes(self) -> int:
        """The queued payloads' size as the bounds count it."""
        with self._lock:
            return self._bytes


def _worth_a_line(count: int) -> bool:
    """Log the 1st, 10th, 100th, ... then every 1000th: a flood must not flood the log."""
    return count % 1000 == 0 or count in (1, 10, 100)


def _decode(line: bytes) -> dict[str, Any] | None:
    """A journal line's record, or None when it is torn, damaged or not a record."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return None
    return record
