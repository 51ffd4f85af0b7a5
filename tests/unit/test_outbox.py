"""The durable outbox (issue 2): persisted before sending, in order, removed only on CALLRESULT,
safe across restarts, and an unreadable file is kept aside rather than silently dropped."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import resource
import signal
import stat
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.durable import StateWriteError
from agent.ocpp import outbox as outbox_module
from agent.ocpp.outbox import Outbox

STATUS = "SignedFirmwareStatusNotification"


def fill(outbox: Outbox, count: int) -> list[str]:
    return [outbox.append(STATUS, {"status": "Downloading", "requestId": n}) for n in range(count)]


def test_entries_survive_a_new_instance_in_order(tmp_path: Path) -> None:
    """Durable when append returns: a restarted daemon sees the same queue."""
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 3)
    reopened = Outbox(path)
    assert [e.unique_id for e in reopened.entries()] == ids
    assert [e.payload["requestId"] for e in reopened.entries()] == [0, 1, 2]
    assert all(e.action == STATUS for e in reopened.entries())
    assert len(set(ids)) == 3 and all(len(i) <= 36 for i in ids)  # OCPP-J 1.6 §4.1.4


@contextlib.contextmanager
def no_file_may_grow_past(limit: int) -> Iterator[None]:
    """The kernel refuses writes past `limit` bytes (EFBIG), as a full state dir would."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_an_append_that_cannot_be_saved_queues_nothing(tmp_path: Path, journal_mode: None) -> None:
    """A full state dir: the caller hears StateWriteError and nothing is sent that is not on
    disk; an acknowledgement that cannot be saved still counts as delivered."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    first, second = fill(outbox, 2)
    journal = path.with_suffix(".journal")
    size = journal.stat().st_size
    with no_file_may_grow_past(size):
        with pytest.raises(StateWriteError):
            outbox.append(STATUS, {"status": "Downloaded", "requestId": 9})
        assert [e.unique_id for e in outbox.entries()] == [first, second]
        assert journal.stat().st_size == size  # no part of the record left behind
        assert outbox.acknowledge(first)
    assert [e.unique_id for e in outbox.entries()] == [second]
    assert outbox.wait_delivered(first, 0)
    reopened = Outbox(path)  # what a restart would send: the acknowledged one again
    assert [e.unique_id for e in reopened.entries()] == [first, second]


def test_the_snapshot_is_a_versioned_json_document_and_the_journal_one_line_a_change(
    tmp_path: Path, journal_mode: None
) -> None:
    """Appends go to the journal (a checksummed JSON line each); a new instance folds them
    into outbox.json (the format of earlier releases, plus `seq`) and empties the journal."""
    path = tmp_path / "outbox.json"
    first, second = fill(Outbox(path), 2)  # the first to an empty snapshot: written whole
    lines = path.with_suffix(".journal").read_bytes().splitlines()
    assert len(lines) == 1
    crc, body = lines[0].split(b" ", 1)
    assert int(crc, 16) == zlib.crc32(body)
    assert [e["unique_id"] for e in json.loads(body)["add"]] == [second]
    Outbox(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["version"] == 1
    assert [e["unique_id"] for e in document["entries"]] == [first, second]
    assert path.with_suffix(".journal").read_bytes() == b""


def test_a_small_queue_is_always_whole_in_the_snapshot(tmp_path: Path) -> None:
    """The usual queue (a few entries) is written whole at each change, so outbox.json
    alone says what is queued, as tools and earlier releases read it."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)

    def on_disk() -> list[str]:
        return [e["unique_id"] for e in json.loads(path.read_text())["entries"]]

    ids = []
    for _ in range(3):
        ids += fill(outbox, 1)
        assert on_disk() == ids
    for unique_id in ids:
        outbox.acknowledge(unique_id)
        assert on_disk() == [e.unique_id for e in outbox.entries()]
    assert on_disk() == [] and path.with_suffix(".journal").read_bytes() == b""


def test_a_snapshot_of_an_earlier_release_is_read(tmp_path: Path) -> None:
    """An upgrade keeps what the previous version queued (its outbox.json had no seq)."""
    path = tmp_path / "outbox.json"
    row = {"unique_id": "u1", "action": STATUS, "payload": {"status": "Downloading"}}
    document = {"version": 1, "entries": [{**row, "queued_at": 1.0}], "notes": {"k": 1}}
    path.write_text(json.dumps(document))
    outbox = Outbox(path)
    assert [e.unique_id for e in outbox.entries()] == ["u1"] and outbox.note("k") == 1


def test_head_is_the_oldest_and_acknowledge_removes_only_that_entry(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    assert outbox.head() is None
    ids = fill(outbox, 3)
    head = outbox.head()
    assert head is not None and head.unique_id == ids[0]
    assert outbox.acknowledge(ids[0]) is True
    assert [e.unique_id for e in outbox.entries()] == ids[1:]
    assert [e.unique_id for e in Outbox(path).entries()] == ids[1:]  # persisted


def test_acknowledging_an_unknown_or_delivered_id_changes_nothing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.json")
    ids = fill(outbox, 2)
    assert outbox.acknowledge("no-such-id") is False
    assert outbox.acknowledge(ids[0]) is True
    assert outbox.acknowledge(ids[0]) is False  # a duplicate CALLRESULT
    assert len(outbox) == 1


def test_acknowledge_out_of_order_keeps_the_others_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.json")
    ids = fill(outbox, 4)
    outbox.acknowledge(ids[2])
    assert [e.unique_id for e in outbox.entries()] == [ids[0], ids[1], ids[3]]


def test_append_wakes_the_sender(tmp_path: Path) -> None:
    woken: list[int] = []
    outbox = Outbox(tmp_path / "outbox.json", on_change=lambda: woken.append(len(outbox)))
    fill(outbox, 2)
    assert woken == [1, 2]  # called after the entry is in (and on disk)


def test_non_ascii_payloads_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    Outbox(path).append("SecurityEventNotification", {"techInfo": "Prüfsumme ✗"})
    assert Outbox(path).entries()[0].payload == {"techInfo": "Prüfsumme ✗"}


def test_wait_delivered_returns_when_another_thread_acknowledges(tmp_path: Path) -> None:
    """The firmware worker waits for InstallRebooting to be confirmed (L01.FR.15) while the
    loop thread acknowledges it."""
    outbox = Outbox(tmp_path / "outbox.json")
    (unique_id,) = fill(outbox, 1)
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(outbox.wait_delivered(unique_id, 30)))
    waiter.start()
    outbox.acknowledge(unique_id)
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert results == [True]


def test_wait_delivered_after_the_fact_returns_at_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.json")
    (unique_id,) = fill(outbox, 1)
    outbox.acknowledge(unique_id)
    assert outbox.wait_delivered(unique_id, 0) is True


def test_wait_delivered_times_out_when_not_acknowledged(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.json")
    ids = fill(outbox, 2)
    outbox.acknowledge(ids[1])
    assert outbox.wait_delivered(ids[0], 0.01) is False


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    threads = [threading.Thread(target=fill, args=(outbox, 10)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outbox) == 40 and len(Outbox(path)) == 40


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"version": 1, "entries": [{"unique_id": "a", "act', id="torn"),
        pytest.param(b"\x00\xff\xfe garbage \x00", id="binary"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b'{"version": 99, "entries": []}', id="future-version"),
        pytest.param(b'{"version": 1}', id="no-entries"),
        pytest.param(b'{"version": 1, "entries": 5}', id="entries-not-a-list"),
        pytest.param(b'{"version": 1, "entries": [{"x": 1}]}', id="entry-wrong-shape"),
        pytest.param(b'{"version": 1, "entries": ["a"]}', id="entry-not-an-object"),
    ],
)
def test_an_unreadable_outbox_is_moved_aside_and_the_agent_starts(
    tmp_path: Path, content: bytes
) -> None:
    """Never silently start empty over a queue that cannot be read: keep it for inspection,
    start with an empty queue, and keep working."""
    path = tmp_path / "outbox.json"
    path.write_bytes(content)
    outbox = Outbox(path)
    assert len(outbox) == 0
    kept = sorted(tmp_path.glob("outbox.json.broken-*"))
    assert len(kept) == 1
    assert kept[0].read_bytes() == content
    (unique_id,) = fill(outbox, 1)
    assert [e.unique_id for e in Outbox(path).entries()] == [unique_id]


# --- the journal: one record a change, a torn tail ignored (issue 11) -----------------------


EVENT = "SecurityEventNotification"


def event(tech_info: str) -> dict[str, str]:
    return {"type": "InvalidFirmwareSigningCertificate", "timestamp": "2026-01-01T00:00:00Z",
            "techInfo": tech_info}  # fmt: skip


def test_a_torn_last_record_is_ignored_and_the_next_append_goes_after_the_last_whole_one(
    tmp_path: Path, journal_mode: None
) -> None:
    """A power cut in the middle of an append leaves part of a record: that change never
    counted (append had not returned), the ones before it all did."""
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 3)
    journal = path.with_suffix(".journal")
    whole = journal.read_bytes()
    with no_compaction():
        outbox = Outbox(path)  # folds the three into the snapshot; the journal is empty
        (fourth,) = fill(outbox, 1)
    record = journal.read_bytes()
    for cut in (1, len(record) // 2, len(record) - 1):  # every kind of torn tail
        journal.write_bytes(record[:cut])
        assert [e.unique_id for e in Outbox(path).entries()] == ids
        journal.write_bytes(whole[:0])
    journal.write_bytes(record + b'0badc0de {"seq": 9')  # a torn record after a whole one
    reopened = Outbox(path)
    assert [e.unique_id for e in reopened.entries()] == [*ids, fourth]
    (fifth,) = fill(reopened, 1)
    assert [e.unique_id for e in Outbox(path).entries()] == [*ids, fourth, fifth]
    assert not list(tmp_path.glob("*.broken-*"))  # a torn tail is not damage


def test_a_damaged_record_ends_the_journal_and_a_copy_is_kept(
    tmp_path: Path, journal_mode: None
) -> None:
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    ids = fill(outbox, 4)  # the first in the snapshot, three records
    journal = path.with_suffix(".journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = lines[1].replace(b"Downloading", b"Downloadinf")  # the checksum no longer fits
    journal.write_bytes(lines[0] + damaged + lines[2])
    assert [e.unique_id for e in Outbox(path).entries()] == ids[:2]
    (kept,) = tmp_path.glob("outbox.journal.broken-*")
    assert kept.read_bytes() == lines[0] + damaged + lines[2]


def test_records_the_snapshot_already_holds_are_not_applied_twice(
    tmp_path: Path, journal_mode: None
) -> None:
    """A power cut between the snapshot's rename and the journal's truncation: the journal's
    records are older than the snapshot (by seq) and skipped."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    ids = fill(outbox, 2)
    journal = path.with_suffix(".journal").read_bytes()
    outbox.acknowledge(ids[0])
    outbox.acknowledge(ids[1])  # the queue empties: a snapshot, the journal emptied
    path.with_suffix(".journal").write_bytes(journal)  # as if the truncation was lost
    assert Outbox(path).entries() == []


def test_two_instances_on_the_same_files_lose_nothing(tmp_path: Path, journal_mode: None) -> None:
    """A test or a tool polling the queue opens another Outbox (which folds the journal);
    the daemon's next change then writes its whole queue."""
    path = tmp_path / "outbox.json"
    daemon = Outbox(path)
    ids = fill(daemon, 2)
    assert len(Outbox(path)) == 2  # folds the journal into the snapshot
    ids += fill(daemon, 1)
    assert [e.unique_id for e in Outbox(path).entries()] == ids


@pytest.fixture
def journal_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records from the first change on (a small queue is otherwise written whole)."""
    monkeypatch.setattr(outbox_module, "SNAPSHOT_BELOW", 0)


@contextlib.contextmanager
def no_compaction() -> Iterator[None]:
    saved = outbox_module.COMPACT_EVERY
    outbox_module.COMPACT_EVERY = 1 << 30
    try:
        yield
    finally:
        outbox_module.COMPACT_EVERY = saved


# --- bounds and the drop order ----------------------------------------------------------------


def test_identical_security_events_waiting_are_coalesced(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    head = outbox.append(EVENT, event("bad certificate"))  # the head may be in flight
    second = outbox.append(EVENT, event("bad certificate"))
    assert second != head
    for _ in range(100):
        assert outbox.append(EVENT, event("bad certificate")) == second
    other = outbox.append(EVENT, event("another reason"))
    assert [e.unique_id for e in Outbox(path).entries()] == [head, second, other]
    assert outbox.coalesced == 100


def test_the_drop_order_never_drops_a_status(tmp_path: Path) -> None:
    """Over max_entries: the oldest security events go first (the head excepted, it may be
    in flight); statuses stay even above the bounds."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path, max_entries=4)
    first = outbox.append(EVENT, event("e0"))
    status_1 = outbox.append(STATUS, {"status": "Downloading", "requestId": 1})
    e1 = outbox.append(EVENT, event("e1"))
    e2 = outbox.append(EVENT, event("e2"))
    e3 = outbox.append(EVENT, event("e3"))  # 5 > 4: e1 (the oldest but the head) goes
    assert [e.unique_id for e in outbox.entries()] == [first, status_1, e2, e3]
    statuses = [outbox.append(STATUS, {"status": "Downloaded", "requestId": n}) for n in range(4)]
    assert [e.unique_id for e in outbox.entries()] == [first, status_1, *statuses]
    assert [e.unique_id for e in Outbox(path, max_entries=4).entries()] == [
        first, status_1, *statuses
    ]  # fmt: skip
    assert outbox.dropped == 3 and e1 not in {e.unique_id for e in outbox.entries()}


def test_max_bytes_bounds_the_queue_too(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.json", max_bytes=4096)
    for n in range(100):
        outbox.append(EVENT, event(f"reason {n} " + "x" * 200))
    assert outbox.size_bytes <= 4096
    assert outbox.entries()[-1].payload["techInfo"].startswith("reason 99 ")


# --- found by mutation testing (tests/mutation, issue #10) -------------------------------


def test_the_journal_is_folded_into_the_snapshot_every_compact_every_records(
    tmp_path: Path, journal_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most COMPACT_EVERY records pile up between two snapshots (the journal's size and the
    time a load takes stay bounded); counting starts at the load and each record counts once."""
    monkeypatch.setattr(outbox_module, "COMPACT_EVERY", 3)
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 1)  # to an empty snapshot: written whole
    outbox = Outbox(path)  # an empty journal: nothing to fold at the load
    journal = path.with_suffix(".journal")
    lines = []
    for _ in range(8):
        ids += fill(outbox, 1)
        lines.append(len(journal.read_bytes().splitlines()))
    assert lines == [1, 2, 3, 0, 1, 2, 3, 0]
    assert [e.unique_id for e in Outbox(path).entries()] == ids


def test_a_short_write_to_the_journal_goes_on_where_it_stopped(
    tmp_path: Path, journal_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pwrite may write less than asked (a signal, a nearly full disk): the rest of the
    record follows right after the part written, so the record reads back whole."""
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, at: real_pwrite(fd, bytes(data[:7]), at))
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 3)
    assert len(path.with_suffix(".journal").read_bytes().splitlines()) == 2
    assert [e.unique_id for e in Outbox(path).entries()] == ids


def test_a_coalesced_event_keeps_the_calls_after_it_in_the_same_write(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    outbox.append(STATUS, {"status": "Downloading", "requestId": 1})  # the head, in flight
    waiting = outbox.append(EVENT, event("bad certificate"))
    ids = outbox.append_all(
        [(EVENT, event("bad certificate")), (STATUS, {"status": "Downloaded", "requestId": 1})]
    )
    assert len(ids) == 2 and ids[0] == waiting
    assert [e.unique_id for e in Outbox(path).entries()][1:] == [waiting, ids[1]]


@pytest.mark.parametrize(
    "action", ["FirmwareStatusNotification", "DiagnosticsStatusNotification", "BootNotification"]
)
def test_no_call_but_a_security_event_is_ever_dropped(tmp_path: Path, action: str) -> None:
    """Actions are compared by name: one that sorts before SecurityEventNotification is still
    not a security event and stays, above the bounds."""
    outbox = Outbox(tmp_path / "outbox.json", max_entries=2)
    ids = [outbox.append(action, {"status": "Idle", "n": n}) for n in range(4)]
    assert [e.unique_id for e in outbox.entries()] == ids and outbox.dropped == 0


def so_far(caplog: pytest.LogCaptureFixture, words: str) -> list[int]:
    """The running counts the outbox logged in lines containing `words`."""
    return [
        int(re.search(r"(\d+)(?: dropped)? so far", r.getMessage()).group(1))  # type: ignore[union-attr]
        for r in caplog.records
        if words in r.getMessage()
    ]


def test_a_flood_is_logged_at_the_1st_10th_100th_and_every_1000th(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CSMS that provokes the same event two thousand times gets five log lines, each with
    the count so far, not two thousand lines (and not silence after the 100th)."""
    outbox = Outbox(tmp_path / "outbox.json", max_entries=2)
    outbox.append(EVENT, event("head"))
    with caplog.at_level(logging.INFO, logger=outbox_module.__name__):
        for _ in range(2001):
            outbox.append(EVENT, event("same"))
        for n in range(10):
            outbox.append(EVENT, event(f"other {n}"))  # each drops the oldest waiting one
    assert so_far(caplog, "coalesced") == [1, 10, 100, 1000, 2000]
    assert all(
        "security event InvalidFirmwareSigningCertificate repeated" in r.getMessage()
        for r in caplog.records
        if "coalesced" in r.getMessage()
    )
    assert so_far(caplog, "dropped the oldest") == [1, 10]


def test_only_a_queue_above_its_bounds_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=outbox_module.__name__):
        Outbox(tmp_path / "a.json").append(STATUS, {"status": "Downloading", "requestId": 1})
        Outbox(tmp_path / "c.json", max_entries=1).append(STATUS, {"status": "Downloading"})
        exact = outbox_module.Entry("", STATUS, {"status": "Downloading"}, 0).size
        Outbox(tmp_path / "d.json", max_bytes=exact).append(STATUS, {"status": "Downloading"})
        assert "above its bounds" not in caplog.text  # at its bounds is not above them
        Outbox(tmp_path / "b.json", max_entries=0).append(STATUS, {"status": "Downloading"})
    assert "above its bounds with firmware statuses only: 1 queued" in caplog.text


@pytest.mark.parametrize(("total", "whole"), [(4095, True), (4096, False)])
def test_a_queue_under_4_kib_is_written_whole_and_one_of_4_kib_is_a_record(
    tmp_path: Path, total: int, whole: bool
) -> None:
    """SNAPSHOT_BELOW is a page: a smaller queue is rewritten whole (as cheap as a record),
    a queue of 4096 bytes as counted by the bounds is one journal record."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    (first,) = fill(outbox, 1)  # to an empty snapshot: written whole
    pad = total - outbox.size_bytes - outbox_module.Entry("", STATUS, {"pad": ""}, 0).size
    second = outbox.append(STATUS, {"pad": "x" * pad})
    assert outbox.size_bytes == total
    records = path.with_suffix(".journal").read_bytes().splitlines()
    in_snapshot = [e["unique_id"] for e in json.loads(path.read_text())["entries"]]
    assert (len(records), in_snapshot) == ((0, [first, second]) if whole else (1, [first]))


def test_a_part_left_behind_by_a_failed_write_is_cut_before_the_next_record(
    tmp_path: Path, journal_mode: None
) -> None:
    """If cutting a failed write back failed too, the next record first cuts the journal to
    its last whole record: nothing of the failed write stays between or after records."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    ids = fill(outbox, 2)  # the first in the snapshot, one record
    journal = path.with_suffix(".journal")
    whole = journal.read_bytes()
    with journal.open("ab") as handle:
        handle.write(b"x" * 500 + b"\n")
    ids += fill(outbox, 1)
    data = journal.read_bytes()
    assert data.startswith(whole) and data.count(b"\n") == 2 and b"x" not in data
    assert [e.unique_id for e in Outbox(path).entries()] == ids


def test_a_journal_that_cannot_be_opened_refuses_the_change_as_a_state_write_error(
    tmp_path: Path,
) -> None:
    """Whatever OSError the journal raises, the caller hears StateWriteError (what it
    handles) and the queue stays as it was."""
    path = tmp_path / "outbox.json"
    path.with_suffix(".journal").mkdir()  # opening it fails with IsADirectoryError
    outbox = Outbox(path)
    with pytest.raises(StateWriteError, match="cannot write"):
        outbox.append(STATUS, {"status": "Downloading", "requestId": 1})
    assert len(outbox) == 0


def test_one_write_over_the_bounds_by_several_drops_as_many(tmp_path: Path) -> None:
    """Several events in one write: as many of the oldest waiting ones go as needed."""
    outbox = Outbox(tmp_path / "outbox.json", max_entries=2)
    head = outbox.append(EVENT, event("e0"))
    ids = outbox.append_all([(EVENT, event(f"e{n}")) for n in (1, 2, 3)])
    assert [e.unique_id for e in outbox.entries()] == [head, ids[2]]
    assert outbox.dropped == 2


def record_line(record: object) -> bytes:
    """A journal line with a correct checksum around any JSON value."""
    body = json.dumps(record).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def checksummed_but_torn(record: object) -> bytes:
    """A last line without its newline whose checksum fits all but its last byte: the
    newline, not the checksum, says a line is whole."""
    body = json.dumps(record).encode()
    return b"%08x %s}" % (zlib.crc32(body), body)


def row(unique_id: object) -> dict[str, object]:
    return {"unique_id": unique_id, "action": STATUS, "payload": {}, "queued_at": 1.0}


@pytest.mark.parametrize(("size", "kept"), [(8192, 32), (8200, 31)])
def test_the_default_bound_is_256_kib_of_payload(tmp_path: Path, size: int, kept: int) -> None:
    """262144 bytes: 32 entries of 8192 fit exactly; of 8200, a 32nd would need 262400."""
    outbox = Outbox(tmp_path / "outbox.json")
    pad = size - outbox_module.Entry("", EVENT, event("00 "), 0).size
    for n in range(40):
        outbox.append(EVENT, event(f"{n:02} " + "x" * pad))
    assert {e.size for e in outbox.entries()} == {size}
    assert (len(outbox), outbox.size_bytes) == (kept, kept * size)


def test_an_entry_counts_its_payloads_utf8_json_and_64_bytes(tmp_path: Path) -> None:
    """What `max_bytes` bounds: the UTF-8 JSON of the payload (not its \\u escapes) plus 64."""
    payload = {"techInfo": "é" * 100}
    outbox = Outbox(tmp_path / "outbox.json")
    outbox.append(EVENT, payload)
    assert outbox.size_bytes == len('{"techInfo": "' + "é" * 100 + '"}') + 100 + 64


def test_an_event_loaded_from_disk_still_coalesces_a_repeat(tmp_path: Path) -> None:
    """After a restart the waiting events come from JSON (new string objects): an identical
    one is still recognised as a security event and coalesced."""
    path = tmp_path / "outbox.json"
    first = Outbox(path)
    first.append(STATUS, {"status": "Downloading", "requestId": 1})
    waiting = first.append(EVENT, event("bad certificate"))
    reopened = Outbox(path)
    assert reopened.append(json.loads(json.dumps(EVENT)), event("bad certificate")) == waiting
    assert len(reopened) == 2


@pytest.mark.parametrize("bad", [row(5), {**row("u"), "action": 5}, {**row("u"), "payload": []}])
def test_a_snapshot_entry_of_the_wrong_types_is_moved_aside(tmp_path: Path, bad) -> None:
    path = tmp_path / "outbox.json"
    path.write_text(json.dumps({"version": 1, "seq": 1, "entries": [bad]}))
    assert len(Outbox(path)) == 0
    assert len(list(tmp_path.glob("outbox.json.broken-*"))) == 1


def test_the_journal_is_private_to_its_owner(tmp_path: Path) -> None:
    """Security events' techInfo is queued there: created 0600."""
    path = tmp_path / "outbox.json"
    Outbox(path)
    assert stat.S_IMODE(path.with_suffix(".journal").stat().st_mode) == 0o600


def test_a_journal_that_cannot_be_folded_at_start_is_still_read(
    tmp_path: Path, journal_mode: None
) -> None:
    """A full disk at start: the snapshot cannot be rewritten, the queue is still all there
    (journal included), the journal stays, and the next change that can be written folds it."""
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 3)
    with no_file_may_grow_past(1):
        outbox = Outbox(path)
        assert [e.unique_id for e in outbox.entries()] == ids
    assert path.with_suffix(".journal").read_bytes() != b""  # the journal stays
    ids += fill(outbox, 1)  # the next change folds the journal after all
    assert path.with_suffix(".journal").read_bytes() == b""
    assert [e.unique_id for e in Outbox(path).entries()] == ids


def test_the_last_record_again_after_a_lost_truncation_is_not_applied_twice(
    tmp_path: Path, journal_mode: None
) -> None:
    """A cut between writing the snapshot and emptying the journal: the journal's last record
    has the snapshot's own seq and is skipped, not added a second time."""
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 3)
    journal = path.with_suffix(".journal")
    records = journal.read_bytes()
    Outbox(path)  # folds them: the snapshot's seq is the last record's
    journal.write_bytes(records)
    assert [e.unique_id for e in Outbox(path).entries()] == ids


def test_a_start_folds_a_torn_tail_away_and_an_empty_journal_rewrites_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Flash wear and tidiness: a start with an empty journal leaves the snapshot as it is;
    a start with one torn byte says so and empties the journal."""
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 1)
    inode = path.stat().st_ino
    Outbox(path)
    assert path.stat().st_ino == inode
    journal = path.with_suffix(".journal")
    journal.write_bytes(b"0")
    with caplog.at_level(logging.WARNING, logger=outbox_module.__name__):
        assert [e.unique_id for e in Outbox(path).entries()] == ids
    assert journal.read_bytes() == b""
    assert "1 byte(s) after the last record ignored" in caplog.text


def test_damage_in_the_last_line_is_kept_and_so_is_an_overlong_line(
    tmp_path: Path, journal_mode: None
) -> None:
    """A whole last line that fails its checksum is damage, not a torn write: a copy is kept.
    So is a line longer than any record, though it has no newline where it is cut."""
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 3)
    journal = path.with_suffix(".journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + lines[1].replace(b"Downloading", b"Downloadinf"))
    assert [e.unique_id for e in Outbox(path).entries()] == ids[:2]
    assert len(list(tmp_path.glob("outbox.journal.broken-*"))) == 1
    for kept in tmp_path.glob("outbox.journal.broken-*"):
        kept.unlink()
    journal.write_bytes(b"0" * (outbox_module.MAX_RECORD + 10) + b"\n")
    assert [e.unique_id for e in Outbox(path).entries()] == ids[:2]
    assert len(list(tmp_path.glob("outbox.journal.broken-*"))) == 1


def test_a_damaged_journal_that_cannot_be_copied_is_still_read_up_to_the_damage(
    tmp_path: Path, journal_mode: None, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 3)
    journal = path.with_suffix(".journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"zzzzzzzz " + lines[1][9:])  # not even hex
    monkeypatch.setattr(outbox_module.time, "time", lambda: 1234.0)
    (tmp_path / "outbox.journal.broken-1234").mkdir()  # where the copy would go
    with caplog.at_level(logging.ERROR, logger=outbox_module.__name__):
        assert [e.unique_id for e in Outbox(path).entries()] == ids[:2]
    assert "no copy kept" in caplog.text


@pytest.mark.parametrize(
    "line",
    [
        record_line({"seq": 9, "add": [{"x": 1}]}),  # a whole record of the wrong shape
        record_line({"add": [row("u")]}),  # no seq
        record_line([9]),  # not an object
        b"00000000 " + json.dumps({"seq": 9, "add": [row("u")]}).encode() + b"\n",  # wrong crc
        b"ffffffff " + json.dumps({"seq": 9, "add": [row("u")]}).encode() + b"\n",
        record_line({"seq": 9, "add": [row("u")]}).replace(b" ", b"x", 1),  # not a space
        record_line({"seq": 9, "add": [row("u")]}).replace(b" ", b"\t", 1),
        checksummed_but_torn({"seq": 9, "add": [row("u")]}),
    ],
    ids=[
        "wrong-shape",
        "no-seq",
        "not-an-object",
        "checksum-below",
        "checksum-above",
        "separator-x",
        "separator-tab",
        "no-newline",
    ],
)
def test_a_journal_record_that_is_not_ours_is_not_applied(
    tmp_path: Path, journal_mode: None, line: bytes
) -> None:
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 2)
    journal = path.with_suffix(".journal")
    journal.write_bytes(journal.read_bytes() + line)
    assert [e.unique_id for e in Outbox(path).entries()] == ids


def test_exactly_at_max_bytes_nothing_is_dropped_and_over_it_as_many_as_needed(
    tmp_path: Path,
) -> None:
    one = outbox_module.Entry("", EVENT, event("e0"), 0).size
    outbox = Outbox(tmp_path / "a.json", max_bytes=2 * one)
    ids = [outbox.append(EVENT, event(f"e{n}")) for n in range(2)]
    assert [e.unique_id for e in outbox.entries()] == ids and outbox.dropped == 0
    outbox = Outbox(tmp_path / "b.json", max_bytes=2 * one)
    head = outbox.append(EVENT, event("e0"))
    more = outbox.append_all([(EVENT, event(f"e{n}")) for n in (1, 2, 3)])
    assert [e.unique_id for e in outbox.entries()] == [head, more[2]]


def test_a_record_of_600_kib_reads_back_after_a_restart(tmp_path: Path, journal_mode: None) -> None:
    """Records up to MAX_RECORD (1 MiB) are read back whole."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    ids = [outbox.append(STATUS, {"n": 1}), outbox.append(STATUS, {"big": "y" * (600 << 10)})]
    assert [e.unique_id for e in Outbox(path).entries()] == ids


def test_a_change_longer_than_a_journal_record_goes_into_the_snapshot(
    tmp_path: Path, journal_mode: None
) -> None:
    """A change whose journal line would pass MAX_RECORD (which a reader stops at, so the
    entry would be lost at the next start) is written as the whole snapshot instead."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path, max_bytes=4 << 20)
    ids = [outbox.append(STATUS, {"n": 1})]
    ids.append(outbox.append(STATUS, {"big": "y" * (outbox_module.MAX_RECORD + 1)}))
    assert [e.unique_id for e in Outbox(path).entries()] == ids
    assert all(
        len(line) <= outbox_module.MAX_RECORD
        for line in path.with_suffix(".journal").read_bytes().splitlines(keepends=True)
    )


def test_the_torn_bytes_counted_are_those_after_the_last_record(
    tmp_path: Path, journal_mode: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.json"
    ids = fill(Outbox(path), 3)
    journal = path.with_suffix(".journal")
    journal.write_bytes(journal.read_bytes() + b"0badc")
    with caplog.at_level(logging.WARNING, logger=outbox_module.__name__):
        assert [e.unique_id for e in Outbox(path).entries()] == ids
    assert "5 byte(s) after the last record ignored" in caplog.text


def test_a_coalesced_repeat_writes_nothing_and_notes_alone_are_saved(tmp_path: Path) -> None:
    """A repeat that only joins a waiting event changes nothing on disk and wakes nobody;
    notes without a call are still a change, saved."""
    path = tmp_path / "outbox.json"
    woken: list[int] = []
    outbox = Outbox(path, on_change=lambda: woken.append(1))
    outbox.append(STATUS, {"status": "Downloading", "requestId": 1})
    outbox.append(EVENT, event("bad certificate"))
    before = (path.stat().st_ino, path.with_suffix(".journal").read_bytes(), len(woken))
    outbox.append(EVENT, event("bad certificate"))
    assert (path.stat().st_ino, path.with_suffix(".journal").read_bytes(), len(woken)) == before
    outbox.append_all([], notes={"last_status": "Downloaded"})
    assert Outbox(path).note("last_status") == "Downloaded"


def test_a_drop_is_in_the_journal_so_a_restart_does_not_bring_it_back(
    tmp_path: Path, journal_mode: None
) -> None:
    path = tmp_path / "outbox.json"
    outbox = Outbox(path, max_entries=2)
    head = outbox.append(EVENT, event("e0"))
    outbox.append(EVENT, event("e1"))
    e2 = outbox.append(EVENT, event("e2"))  # drops e1, as a journal record
    assert [e.unique_id for e in Outbox(path, max_entries=2).entries()] == [head, e2]


def test_the_journal_is_folded_after_256_records(tmp_path: Path, journal_mode: None) -> None:
    """COMPACT_EVERY's value: 256 records, then the next change rewrites the snapshot."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    journal = path.with_suffix(".journal")
    ids = fill(outbox, 257)  # the first to an empty snapshot: written whole
    assert len(journal.read_bytes().splitlines()) == 256
    ids += fill(outbox, 1)
    assert journal.read_bytes() == b""
    assert [e.unique_id for e in Outbox(path).entries()] == ids


def test_a_non_ascii_payload_goes_through_the_journal(tmp_path: Path, journal_mode: None) -> None:
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    fill(outbox, 1)
    outbox.append(EVENT, {"techInfo": "Prüfsumme ✗"})
    assert len(path.with_suffix(".journal").read_bytes().splitlines()) == 1
    assert Outbox(path).entries()[1].payload == {"techInfo": "Prüfsumme ✗"}


def test_the_default_bound_is_500_entries(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.json")
    for n in range(502):
        outbox.append(EVENT, event(f"e{n}"))
    assert (len(outbox), outbox.dropped) == (500, 2)
    assert not outbox.acknowledge("no-such-id")  # lengths past 256 compared by value


def test_a_queued_entry_cannot_be_altered_in_memory(tmp_path: Path) -> None:
    """What is queued is what is on disk: nobody holding an entry can change it unsaved."""
    outbox = Outbox(tmp_path / "outbox.json")
    fill(outbox, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        outbox.entries()[0].action = "Heartbeat"  # type: ignore[misc]


def test_an_acknowledgement_is_matched_by_value(tmp_path: Path) -> None:
    """The id in a CALLRESULT is a new string parsed from the CSMS's frame."""
    outbox = Outbox(tmp_path / "outbox.json")
    (unique_id,) = fill(outbox, 1)
    from_the_wire = json.loads(json.dumps(unique_id))
    assert from_the_wire is not unique_id
    assert outbox.acknowledge(from_the_wire) and len(outbox) == 0


def test_a_journal_that_cannot_be_made_durable_leaks_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new journal whose directory cannot be fsynced is closed again (and the outbox works
    from the snapshot alone, as with a read-only state dir)."""

    def fail(_: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(outbox_module, "fsync_dir", fail)
    before = len(os.listdir("/proc/self/fd"))
    outbox = Outbox(tmp_path / "outbox.json")
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(outbox) == 0


def test_a_compaction_whose_journal_cannot_be_emptied_still_counts(
    tmp_path: Path, journal_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot holds everything once written; a journal left full is skipped by seq."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    ids = fill(outbox, 2)

    def fail(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", fail)
    for unique_id in ids:
        assert outbox.acknowledge(unique_id)  # the last empties the queue: a compaction
    monkeypatch.undo()
    assert path.with_suffix(".journal").read_bytes() != b""
    assert Outbox(path).entries() == []


def test_events_loaded_from_disk_are_dropped_like_any_other(tmp_path: Path) -> None:
    """After a restart the queued events' actions are new strings: still security events."""
    path = tmp_path / "outbox.json"
    first = Outbox(path, max_entries=3)
    head = first.append(EVENT, event("e0"))
    first.append(EVENT, event("e1"))
    e2 = first.append(EVENT, event("e2"))
    reopened = Outbox(path, max_entries=3)
    e3 = reopened.append(EVENT, event("e3"))
    assert [e.unique_id for e in reopened.entries()] == [head, e2, e3]
