"""The durable outbox (issue 2): persisted before sending, in order, removed only on CALLRESULT,
safe across restarts, and an unreadable file is kept aside rather than silently dropped."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from agent.durable import StateWriteError
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


def test_an_append_that_cannot_be_saved_queues_nothing(tmp_path: Path) -> None:
    """A full state dir: the caller hears StateWriteError and nothing is sent that is not on
    disk; an acknowledgement that cannot be saved still counts as delivered."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    first, second = fill(outbox, 2)
    path.with_name(f".{path.name}.tmp-{os.getpid()}").mkdir()  # the next writes fail
    with pytest.raises(StateWriteError):
        outbox.append(STATUS, {"status": "Downloaded", "requestId": 9})
    assert [e.unique_id for e in outbox.entries()] == [first, second]
    assert outbox.acknowledge(first)
    assert [e.unique_id for e in outbox.entries()] == [second]
    assert outbox.wait_delivered(first, 0)
    reopened = Outbox(path)  # what a restart would send: the acknowledged one again
    assert [e.unique_id for e in reopened.entries()] == [first, second]


def test_the_file_is_a_versioned_json_document(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    (unique_id,) = fill(Outbox(path), 1)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["version"] == 1
    assert [e["unique_id"] for e in document["entries"]] == [unique_id]


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
