"""A CSMS that sends thousands of bad requests and never acknowledges (issue 11).

Each refused SignedUpdateFirmware queues a SecurityEventNotification (L01.FR.02) that must
be delivered at least once (A04.FR.02); the outbox holds it until the CSMS answers. Before
issue 11 every append rewrote and fsynced the whole queue, so n requests cost O(n^2) bytes of
flash writes and the queue grew without bound. Now: bounded entries and bytes, one small
record per change, firmware statuses never dropped, and every append that returned survives
a kill -9.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.demo.csms import TestCsms
from agent.demo.rig import SOURCE_ROOT, ChargerRig, Firmware
from agent.ocpp import outbox as outbox_module
from agent.ocpp.outbox import Outbox
from tests.e2e import conftest as e2e

rig, charger, firmware, fileserver = e2e.rig, e2e.charger, e2e.firmware, e2e.fileserver

EVENT = "SecurityEventNotification"
STATUS = "SignedFirmwareStatusNotification"


class WriteCounter:
    """Counts the bytes written and the fsyncs of this process (os.write/pwrite/fsync)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        self.fsyncs = 0
        for name in ("write", "pwrite"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._counting(real))
        real_fsync = os.fsync

        def fsync(fd: Any) -> None:
            self.fsyncs += 1
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def _counting(self, real: Any) -> Any:
        def wrapped(fd: int, data: Any, *rest: Any) -> int:
            written: int = real(fd, data, *rest)
            self.bytes += written
            return written

        return wrapped


def refused(n: int) -> dict[str, str]:
    """A security event as a refused request queues it, with its own techInfo (the worst
    case: nothing to coalesce)."""
    return {
        "type": "InvalidFirmwareSigningCertificate",
        "timestamp": "2026-01-01T00:00:00Z",
        "techInfo": f"signing certificate is {5501 + n} characters, at most 5500 allowed",
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ten_thousand_refused_requests_leave_a_bounded_outbox_and_linear_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 000 distinct security events and a firmware status every 1000, never
    acknowledged: the queue stays within its bounds with every status in it, in order, and
    the flash sees a bounded amount per event (one record, plus the periodic snapshot)."""
    path = tmp_path / "outbox.json"
    outbox = Outbox(path)
    counter = WriteCounter(monkeypatch)
    statuses = []
    for n in range(10_000):
        outbox.append(EVENT, refused(n))
        if n % 1000 == 999:
            statuses.append(outbox.append(STATUS, {"status": "Downloading", "requestId": n}))
    monkeypatch.undo()

    queued = Outbox(path).entries()
    assert len(queued) <= outbox_module.MAX_ENTRIES
    assert sum(len(json.dumps(e.payload)) for e in queued) <= outbox_module.MAX_BYTES
    assert [e.unique_id for e in queued if e.action == STATUS] == statuses
    assert queued[-1].payload == {"status": "Downloading", "requestId": 9999}
    kept = [e.payload["techInfo"] for e in queued if e.action == EVENT]
    assert kept == sorted(kept, key=lambda t: int(t.split()[3]))  # the newest kept, in order
    assert outbox.dropped == 10_010 - len(queued)

    appends = 10_010
    snapshots = appends // outbox_module.COMPACT_EVERY + 1
    snapshot_bytes = 2 * outbox_module.MAX_BYTES + 64 * outbox_module.MAX_ENTRIES  # JSON + ids
    print(f"\n10 010 appends: {counter.bytes} bytes written, {counter.fsyncs} fsyncs")
    assert counter.fsyncs <= appends + 3 * snapshots
    assert counter.bytes <= appends * 1024 + snapshots * snapshot_bytes


def test_ten_thousand_identical_refusals_cost_one_entry_and_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bad certificate sent again and again: one event waits, the rest coalesce."""
    outbox = Outbox(tmp_path / "outbox.json")
    outbox.append(EVENT, refused(-1))  # the head, maybe in flight
    counter = WriteCounter(monkeypatch)
    for _ in range(10_000):
        outbox.append(EVENT, refused(0))
    monkeypatch.undo()
    assert len(outbox) == 2 and outbox.coalesced == 9_999
    assert counter.fsyncs <= 2  # one snapshot (file and directory) for the second one


APPENDER = """
import sys
from pathlib import Path
from agent.ocpp.outbox import Outbox
outbox = Outbox(Path(sys.argv[1]), max_entries=10_000_000, max_bytes=1 << 40)
n = 0
while True:
    action = "SignedFirmwareStatusNotification" if n % 3 else "SecurityEventNotification"
    payload = {"status": "Downloading", "requestId": n} if n % 3 else {
        "type": "InvalidFirmwareSigningCertificate", "timestamp": "2026-01-01T00:00:00Z",
        "techInfo": f"refusal {n}"}
    print(outbox.append(action, payload), flush=True)
    n += 1
"""


@pytest.fixture
def appender(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    path = tmp_path / "outbox.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(path)],
        cwd=SOURCE_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield proc, path
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize("after", [1, 37, 300, 700])
def test_every_append_that_returned_survives_kill_9_in_order(
    appender: tuple[subprocess.Popen[str], Path], after: int
) -> None:
    """A process appending as fast as it can is killed (SIGKILL) after `after` appends have
    returned (past a snapshot at 256 for the larger ones): every id it was given is on disk,
    in order, each exactly once; at most the one append under way when it died is extra."""
    proc, path = appender
    assert proc.stdout is not None
    returned = [proc.stdout.readline().strip() for _ in range(after)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    returned += [line.strip() for line in proc.stdout if line.endswith("\n")]
    on_disk = [e.unique_id for e in Outbox(path, max_entries=10_000_000).entries()]
    assert on_disk[: len(returned)] == returned
    assert len(on_disk) <= len(returned) + 1
    assert len(set(on_disk)) == len(on_disk)


def test_a_daemon_refusing_requests_from_a_silent_csms_writes_little(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware, csms: TestCsms
) -> None:
    """The real daemon, 1000 refused requests (500 distinct reasons), and a CSMS that
    answers every SecurityEventNotification with a CALLERROR: the queue stays bounded and
    the daemon's disk writes (/proc/PID/io write_bytes) stay near one record per event."""
    csms.answer_filter = lambda action, payload: action != EVENT
    agent = charger.start()
    assert agent.proc is not None
    charger.csms.wait_message("BootNotification")
    before = _write_bytes(agent.proc.pid)
    started = time.monotonic()
    for n in range(1000):
        text = "x" * (5501 + n % 500)  # "signing certificate is N characters"
        payload = {
            "requestId": n,
            "firmware": {
                "location": firmware.url,
                "retrieveDateTime": "2020-01-01T00:00:00Z",
                "signingCertificate": text,
                "signature": firmware.signature,
            },
        }
        assert charger.update_raw(payload)[2] == {"status": "InvalidCertificate"}
    written = _write_bytes(agent.proc.pid) - before
    queued = json.loads((rig.state / "status.json").read_text())["queued"]
    print(f"\n1000 refusals in {time.monotonic() - started:.1f} s: {written} bytes written")
    assert queued <= outbox_module.MAX_ENTRIES
    # One record (~400 bytes, written in 4 KiB pages) per distinct event, a snapshot (at
    # most MAX_BYTES) every COMPACT_EVERY records, and the published status file.
    assert written <= 500 * 8192 + (500 // outbox_module.COMPACT_EVERY + 2) * (1 << 20)


def _write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/PID/io")
