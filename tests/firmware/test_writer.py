"""Slot writer: capacity, checkpoints, O_EXCL on devices, read-back past the page cache."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from agent.firmware.errors import DownloadCancelled, ImageTooLarge, SlotBusy, SlotError
from agent.firmware.writer import ReadBackMethod, SlotWriter
from tests.firmware.slotfiles import new_slot

DATA = hashlib.shake_256(b"slot").digest(300_001)


def direct_io_works(folder: Path) -> bool:
    probe = folder / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def write_all(writer: SlotWriter, data: bytes, step: int = 40_000) -> None:
    for offset in range(0, len(data), step):
        writer.write_at(offset, data[offset : offset + step])
    writer.finish(len(data))


def test_checkpoints_report_durable_offsets(tmp_path: Path):
    seen: list[int] = []
    with SlotWriter(
        new_slot(tmp_path / "slot"), checkpoint_bytes=100_000, on_checkpoint=seen.append
    ) as w:
        write_all(w, DATA)
    assert seen == [120_000, 240_000, 300_001]
    assert (tmp_path / "slot").read_bytes()[: len(DATA)] == DATA


def test_image_too_large_fails_before_writing(tmp_path: Path):
    """Issue #3: an image larger than the slot fails before writing past the slot's end."""
    path = new_slot(tmp_path / "slot", 100_000)  # a file slot's size is its capacity
    with SlotWriter(path) as writer:
        assert writer.capacity == 100_000
        with pytest.raises(ImageTooLarge):
            writer.ensure_fits(100_001)
        writer.write_at(0, DATA[:60_000])
        with pytest.raises(ImageTooLarge) as caught:
            writer.write_at(60_000, DATA[60_000:120_000])
        assert caught.value.status == "DownloadFailed"
        assert not caught.value.retryable
    assert path.stat().st_size == 100_000  # never grown
    assert path.read_bytes()[60_000:] == bytes(40_000)  # nothing written past the first part


def test_gap_is_refused_and_rewind_lowers_durable_offset(tmp_path: Path):
    seen: list[int] = []
    with SlotWriter(
        new_slot(tmp_path / "slot"), checkpoint_bytes=50_000, on_checkpoint=seen.append
    ) as w:
        w.write_at(0, DATA[:80_000])  # an fsync of 80 000 bytes starts in the background
        with pytest.raises(ValueError):
            w.write_at(90_000, b"x")
        w.write_at(0, b"new start")  # the download restarted: the fsync is collected first
        assert w.durable_offset == 0
    assert seen == [80_000, 0]


def test_a_background_fsync_counts_only_once_collected(tmp_path: Path):
    """The durable offset is what an fsync has finished for, never what is merely written:
    a checkpoint's fsync runs while the next bytes are written and is reported when the next
    checkpoint (or `sync`) collects it."""
    seen: list[int] = []
    with SlotWriter(
        new_slot(tmp_path / "slot"), checkpoint_bytes=50_000, on_checkpoint=seen.append
    ) as w:
        w.write_at(0, DATA[:60_000])
        assert (w.durable_offset, seen) == (0, [])
        w.write_at(60_000, DATA[60_000:70_000])
        assert seen == []  # 10 000 bytes since the fsync began: no new checkpoint yet
        w.write_at(70_000, DATA[70_000:115_000])
        assert seen == [60_000]  # collected as the next one starts
        assert w.sync() == 115_000
    assert seen == [60_000, 115_000]


def test_rehash_prefix_matches_hashlib(tmp_path: Path):
    path = tmp_path / "slot"
    path.write_bytes(DATA)
    with SlotWriter(path) as writer:
        state = writer.rehash_prefix(123_457)
        assert state.digest() == hashlib.sha256(DATA[:123_457]).digest()
        assert writer.durable_offset == 123_457
        writer.write_at(123_457, DATA[123_457:])  # continues where the prefix ends
        with pytest.raises(SlotError, match="holds"):
            writer.rehash_prefix(len(DATA) + 1)


def test_a_file_slot_keeps_its_size_and_a_smaller_capacity_narrows_it(tmp_path: Path):
    path = tmp_path / "slot"
    path.write_bytes(b"\xff" * 400_000)
    with SlotWriter(path) as writer:
        write_all(writer, DATA)
    assert path.read_bytes() == DATA + b"\xff" * (400_000 - len(DATA))  # never cut or grown
    with SlotWriter(path, capacity=100_000) as writer, pytest.raises(ImageTooLarge):
        writer.ensure_fits(100_001)


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_a_slot_path_that_is_not_a_slot_is_refused_and_nothing_is_created(
    tmp_path: Path, kind: str
):
    """Issue #9: a mistyped /dev/mmcblk0p2 used to be created as a file and filled /dev."""
    path = tmp_path / "mmcblk0p2"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(SlotError, match=r"does not exist|neither a block device"):
        SlotWriter(path)
    assert path.exists() is (kind != "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "missing" else [path.name])


def test_a_read_back_stops_when_cancelled(tmp_path: Path):
    path = new_slot(tmp_path / "slot")
    cancel = threading.Event()
    cancel.set()
    with SlotWriter(path) as writer, pytest.raises(DownloadCancelled):
        writer.read_back(4 << 20, cancel=cancel)


def test_read_back_with_o_direct_on_disk(tmp_path: Path):
    """Read-back bypasses the page cache with O_DIRECT where the filesystem allows it."""
    if not direct_io_works(tmp_path):
        pytest.skip(f"{tmp_path} does not support O_DIRECT: give pytest --basetemp on ext4 or xfs")
    progress: list[tuple[int, int]] = []
    with SlotWriter(new_slot(tmp_path / "slot")) as writer:
        write_all(writer, DATA)
        result = writer.read_back(len(DATA), progress=lambda d, t: progress.append((d, t)))
    assert result.method is ReadBackMethod.DIRECT
    assert result.digest == hashlib.sha256(DATA).digest()
    assert progress[-1] == (len(DATA), len(DATA))


def test_read_back_falls_back_on_ramfs(ramfs: Path, caplog: pytest.LogCaptureFixture):
    """ramfs refuses O_DIRECT: the cache-drop path runs and says so."""
    caplog.set_level("INFO", logger="agent.firmware.writer")
    with SlotWriter(new_slot(ramfs / "slot")) as writer:
        write_all(writer, DATA)
        result = writer.read_back(len(DATA))
        assert result.method is ReadBackMethod.CACHE_DROP
        assert result.digest == hashlib.sha256(DATA).digest()
        with pytest.raises(SlotError, match="O_DIRECT"):
            writer.read_back(len(DATA), direct=True)
    assert "O_DIRECT not available" in caplog.text


def test_read_back_on_tmpfs_reports_its_method(tmp_path: Path):
    """/dev/shm is tmpfs: O_DIRECT there depends on the kernel (6.6+ has it)."""
    folder = Path("/dev/shm")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        pytest.skip("no writable /dev/shm: mount a tmpfs there")
    path = folder / f"fw-slot-{os.getpid()}-{tmp_path.name}"
    try:
        with SlotWriter(new_slot(path)) as writer:
            write_all(writer, DATA)
            result = writer.read_back(len(DATA))
        expected = ReadBackMethod.DIRECT if direct_io_works(folder) else ReadBackMethod.CACHE_DROP
        assert result.method is expected
        assert result.digest == hashlib.sha256(DATA).digest()
    finally:
        path.unlink(missing_ok=True)


def test_read_back_sees_the_medium_not_the_stream(tmp_path: Path):
    """InstallVerificationFailed path: bytes changed on the medium change the read-back digest."""
    path = new_slot(tmp_path / "slot", len(DATA) + 1000)
    with SlotWriter(path) as writer:
        write_all(writer, DATA)
        with open(path, "r+b") as other:
            other.seek(200_000)
            other.write(b"\x00")
        for direct in (None, False):
            assert (
                writer.read_back(len(DATA), direct=direct).digest != hashlib.sha256(DATA).digest()
            )
        with pytest.raises(SlotError, match="ends at"):
            writer.read_back(len(DATA) + 5000, direct=False)


def test_character_device_is_refused():
    with pytest.raises(SlotError, match="neither a block device nor a regular file"):
        SlotWriter(Path("/dev/null"))


@pytest.mark.root
def test_block_device_capacity_exclusive_open_and_read_back(loop_device: Path):
    """O_EXCL refuses a device in use; capacity comes from the device; O_DIRECT read-back."""
    holder = os.open(loop_device, os.O_RDONLY | os.O_EXCL)
    try:
        with pytest.raises(SlotBusy):
            SlotWriter(loop_device)
    finally:
        os.close(holder)
    with SlotWriter(loop_device, checkpoint_bytes=1 << 20) as writer:
        assert writer.is_block_device
        assert writer.capacity == 2 << 20
        with pytest.raises(ImageTooLarge):
            writer.ensure_fits((2 << 20) + 1)
        write_all(writer, DATA)
        result = writer.read_back(len(DATA))
    assert result.digest == hashlib.sha256(DATA).digest()
    assert result.method is ReadBackMethod.DIRECT
