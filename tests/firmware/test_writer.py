"""Slot writer: capacity, checkpoints, O_EXCL on devices, read-back past the page cache."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import threading
from itertools import pairwise
from pathlib import Path

import pytest

from agent.demo.waiting import deadline
from agent.firmware import writer as writer_module
from agent.firmware.errors import DownloadCancelled, ImageTooLarge, SlotBusy, SlotError
from agent.firmware.writer import ReadBackMethod, SlotWriter
from tests.e2e.conftest import wait_until
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


def is_slot(fd: int, path: Path) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}") == str(path)


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


def test_a_first_write_must_start_at_zero(tmp_path: Path):
    """A new writer has written nothing: its first write at 1 would leave byte 0 unwritten."""
    with SlotWriter(new_slot(tmp_path / "slot")) as w, pytest.raises(ValueError, match="gap"):
        w.write_at(1, b"x")


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


def test_a_direct_read_back_reads_through_an_o_direct_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """What is reported as an O_DIRECT read-back is one: every read goes through a descriptor
    opened with O_DIRECT (the digest alone cannot tell a read from the page cache)."""
    if not direct_io_works(tmp_path):
        pytest.skip(f"{tmp_path} does not support O_DIRECT: give pytest --basetemp on ext4 or xfs")
    real_preadv = os.preadv
    direct: list[bool] = []

    slot = new_slot(tmp_path / "slot")

    def preadv(fd: int, buffers: list[memoryview], position: int) -> int:
        if is_slot(fd, slot):
            direct.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT))
        return real_preadv(fd, buffers, position)

    with SlotWriter(slot) as writer:
        write_all(writer, DATA)
        monkeypatch.setattr(os, "preadv", preadv)
        assert writer.read_back(len(DATA)).method is ReadBackMethod.DIRECT
        assert direct and all(direct)
        direct.clear()
        assert writer.read_back(len(DATA), direct=False).method is ReadBackMethod.CACHE_DROP
        assert direct and not any(direct)


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
    assert "O_DIRECT not available (Invalid argument)" in caplog.text


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
            result = writer.read_back(len(DATA), direct=direct)
            assert result.digest != hashlib.sha256(DATA).digest()
            with pytest.raises(dataclasses.FrozenInstanceError):
                result.digest = hashlib.sha256(DATA).digest()  # type: ignore[misc]
        with pytest.raises(SlotError, match="ends at"):
            writer.read_back(len(DATA) + 5000, direct=False)


def test_a_slot_path_that_cannot_be_inspected_is_refused(tmp_path: Path):
    """A path through a regular file (ENOTDIR): a SlotError naming it, nothing created."""
    (tmp_path / "mmcblk0").write_bytes(b"")
    with pytest.raises(SlotError, match="cannot inspect slot"):
        SlotWriter(tmp_path / "mmcblk0" / "p2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mmcblk0"]


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


def test_a_slot_gone_between_the_check_and_the_open_is_an_error_not_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Only EBUSY means "in use" (SlotBusy); a slot removed after its kind was checked fails
    to open as a plain SlotError, and is not created by the open."""
    path = new_slot(tmp_path / "slot")
    real_open = os.open

    def vanish_first(file: object, flags: int, *args: object) -> int:
        if file == path:
            path.unlink()
        return real_open(file, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", vanish_first)
    with pytest.raises(SlotError, match="cannot open slot") as caught:
        SlotWriter(path)
    assert not isinstance(caught.value, SlotBusy)
    assert not path.exists()


@pytest.mark.parametrize("swap", ["file to device", "device to file"])
def test_a_slot_that_changes_kind_between_its_check_and_its_open_is_refused(
    loop_device: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
):
    """The path is a symlink that someone turns from a file slot to a block device (or
    back) after its kind was checked and before it is opened: the open flags were chosen for
    the other kind (no O_EXCL for a device, which would let a mounted partition be written),
    so the slot is refused, whichever way the kind changed."""
    path, regular = tmp_path / "slot-link", new_slot(tmp_path / "slot")
    before, after = (regular, loop_device) if swap == "file to device" else (loop_device, regular)
    path.symlink_to(before)
    real_open = os.open

    def swap_first(file: object, flags: int, *args: object) -> int:
        if file == path:
            path.unlink()
            path.symlink_to(after)
        return real_open(file, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", swap_first)
    with pytest.raises(SlotError, match="changed kind while it was opened"):
        SlotWriter(path)


def test_a_slot_refused_for_another_reason_than_ebusy_is_an_error_not_busy(tmp_path: Path):
    """A slot path naming a program that is running cannot be opened for writing (ETXTBSY,
    numbered above EBUSY): a configuration fault, a SlotError with the kernel's reason, not
    "in use (mounted?)", which only EBUSY means."""
    program = tmp_path / "slot"
    program.write_bytes(Path(shutil.which("sleep") or "/bin/sleep").read_bytes())
    program.chmod(0o700)
    # argv[0] stays "sleep": a multi-call binary (busybox, uutils) picks its command by it.
    running = subprocess.Popen(["sleep", "600"], executable=program)  # returns once it runs
    try:
        with pytest.raises(SlotError, match=r"cannot open slot .*: Text file busy") as caught:
            SlotWriter(program)
        assert not isinstance(caught.value, SlotBusy)
    finally:
        running.kill()
        running.wait()


def test_a_medium_refusing_aligned_direct_reads_falls_back_and_an_io_error_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """EINVAL from an aligned O_DIRECT read is the medium saying no (the cache-drop read-back
    then runs, or the read-back fails when O_DIRECT is required); any other read error is a
    failed read-back, never a reason to read through the page cache instead."""
    if not direct_io_works(tmp_path):
        pytest.skip(f"{tmp_path} does not support O_DIRECT: give pytest --basetemp on ext4 or xfs")
    real_preadv = os.preadv
    failure = [errno.EINVAL]
    cached_too = [False]

    slot = new_slot(tmp_path / "slot")

    def preadv(fd: int, buffers: list[memoryview], position: int) -> int:
        ours = is_slot(fd, slot)
        if ours and (cached_too[0] or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT):
            del buffers  # as the C call: the traceback must not keep a view of the mmap
            raise OSError(failure[0], os.strerror(failure[0]))
        return real_preadv(fd, buffers, position)

    monkeypatch.setattr(os, "preadv", preadv)
    with SlotWriter(slot) as writer:
        write_all(writer, DATA)
        result = writer.read_back(len(DATA))
        assert result.method is ReadBackMethod.CACHE_DROP
        assert result.digest == hashlib.sha256(DATA).digest()
        with pytest.raises(SlotError, match=r"O_DIRECT read-back .* impossible"):
            writer.read_back(len(DATA), direct=True)
        for failure[0] in (errno.EIO, errno.ETIMEDOUT):  # numbered below and above EINVAL
            with pytest.raises(SlotError, match=r"read-back of .* failed"):
                writer.read_back(len(DATA))
        failure[0], cached_too[0] = errno.EINVAL, True  # only O_DIRECT's EINVAL means "no"
        with pytest.raises(SlotError, match=r"read-back of .* failed"):
            writer.read_back(len(DATA), direct=False)


@pytest.mark.root
def test_the_size_ioctl_is_the_kernels_blkgetsize64(loop_device: Path):
    """The capacity ioctl's number, asked of a real device: SlotWriter falls back to lseek when
    the ioctl fails, which would hide a wrong number (and a wrong number may name another of
    the device's ioctls)."""
    fd = os.open(loop_device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buffer = bytearray(8)
        fcntl.ioctl(fd, writer_module.BLKGETSIZE64, buffer)
    finally:
        os.close(fd)
    assert struct.unpack("=Q", buffer)[0] == 2 << 20


def test_a_read_back_of_several_blocks_hashes_every_byte_once_in_order(tmp_path: Path):
    """An image of three whole read blocks and a part: the two buffers take turns, each
    block is hashed once and in order, progress counts every block, on both read-back paths."""
    block = writer_module.READ_BUFFER
    image = hashlib.shake_256(b"blocks").digest(3 * block + 12_345)
    with SlotWriter(new_slot(tmp_path / "slot")) as writer:
        write_all(writer, image, step=1 << 20)
        for direct in (None, False):
            progress: list[tuple[int, int]] = []
            result = writer.read_back(
                len(image),
                direct=direct,
                progress=lambda d, t, into=progress: into.append((d, t)),
            )
            assert result.digest == hashlib.sha256(image).digest(), direct
            assert result.size == len(image)
            expected = [(n * block, len(image)) for n in (1, 2, 3)] + [(len(image),) * 2]
            assert progress == expected
        assert writer.read_back(0).digest == hashlib.sha256(b"").digest()
        assert writer.read_back(1).digest == hashlib.sha256(image[:1]).digest()
        prefix = 2 * block + 1  # a last block of one byte, rounded up to one aligned page
        result = writer.read_back(prefix)
        assert result.digest == hashlib.sha256(image[:prefix]).digest()
        direct = ReadBackMethod.DIRECT if direct_io_works(tmp_path) else ReadBackMethod.CACHE_DROP
        assert result.method is direct
        assert writer.rehash_prefix(len(image)).digest() == hashlib.sha256(image).digest()


def test_an_image_exactly_the_slots_size_fits(tmp_path: Path):
    path = new_slot(tmp_path / "slot", len(DATA))
    with SlotWriter(path) as writer:
        writer.ensure_fits(len(DATA))
        write_all(writer, DATA)
        assert writer.read_back(len(DATA)).digest == hashlib.sha256(DATA).digest()
    assert path.read_bytes() == DATA


def test_a_checkpoint_falls_exactly_every_checkpoint_bytes(tmp_path: Path):
    seen: list[int] = []
    with SlotWriter(
        new_slot(tmp_path / "slot"), checkpoint_bytes=50_000, on_checkpoint=seen.append
    ) as w:
        w.write_at(0, DATA[:50_000])  # exactly one checkpoint's worth: its fsync starts
        w.write_at(50_000, DATA[50_000:100_000])  # and the next: the first is collected
        assert seen == [50_000]
        w.finish(100_000)
    assert seen == [50_000, 100_000]


def test_a_rewind_to_the_durable_offset_reports_nothing(tmp_path: Path):
    """Rewinding to where the bytes are already durable makes nothing less durable: no
    checkpoint is reported (each one is a state write)."""
    seen: list[int] = []
    with SlotWriter(
        new_slot(tmp_path / "slot"), checkpoint_bytes=50_000, on_checkpoint=seen.append
    ) as w:
        w.write_at(0, DATA[:60_000])
        assert w.sync() == 60_000
        w.write_at(60_000, DATA[60_000:70_000])
        w.write_at(60_000, DATA[60_000:65_000])  # the download restarted at the checkpoint
        w.write_at(0, DATA[:10])  # and again, from 0
        assert w.durable_offset == 0
    assert seen == [60_000, 0]


def test_a_rewind_above_the_durable_offset_keeps_it(tmp_path: Path):
    """Rewriting bytes above the durable offset makes nothing more durable: it stays where the
    last fsync left it, and is not reported again."""
    seen: list[int] = []
    with SlotWriter(
        new_slot(tmp_path / "slot"), checkpoint_bytes=1 << 30, on_checkpoint=seen.append
    ) as w:
        w.write_at(0, DATA[:50_000])
        assert w.sync() == 50_000
        w.write_at(50_000, DATA[50_000:80_000])
        w.write_at(60_000, DATA[60_000:70_000])  # 70 000 to 80 000 is no longer ours
        assert (w.durable_offset, seen) == (50_000, [50_000])
        assert w.sync() == 70_000
    assert seen == [50_000, 70_000]


def test_a_sync_that_makes_nothing_new_durable_reports_nothing(tmp_path: Path):
    """A checkpoint is reported when the durable offset moves, not at every fsync: an empty
    write, or a second sync, is no new state to save."""
    seen: list[int] = []
    with SlotWriter(
        new_slot(tmp_path / "slot"), checkpoint_bytes=1 << 30, on_checkpoint=seen.append
    ) as w:
        w.write_at(0, DATA[:1000])
        assert w.sync() == 1000
        w.write_at(1000, b"")
        assert w.sync() == 1000
        w.finish(1000)
    assert seen == [1000]


def test_finish_refuses_a_size_other_than_what_was_written(tmp_path: Path):
    with SlotWriter(new_slot(tmp_path / "slot")) as w:
        w.write_at(0, DATA[:1000])
        for wrong in (999, 1001):
            with pytest.raises(SlotError, match="finishing at"):
                w.finish(wrong)
        w.finish(1000)
        assert w.durable_offset == 1000


def test_a_short_pwrite_is_continued_at_the_right_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """pwrite may write less than asked (a signal, a full device): the rest follows at the
    offset the short write ended at, and the prefix is counted once."""
    real_pwrite = os.pwrite
    calls: list[tuple[int, int]] = []

    path = new_slot(tmp_path / "slot")

    def short(fd: int, data: memoryview, offset: int) -> int:
        if not is_slot(fd, path):
            return real_pwrite(fd, data, offset)
        calls.append((offset, len(data)))
        return real_pwrite(fd, bytes(data[:7_000]), offset)

    with SlotWriter(path, checkpoint_bytes=1 << 30) as w:
        monkeypatch.setattr(os, "pwrite", short)
        w.write_at(0, DATA[:20_000])
        w.write_at(20_000, DATA[20_000:30_000])
        monkeypatch.undo()
        w.finish(30_000)
    assert calls == [(0, 20_000), (7_000, 13_000), (14_000, 6_000), (20_000, 10_000),
                     (27_000, 3_000)]  # fmt: skip
    assert path.read_bytes()[:30_001] == DATA[:30_000] + b"\0"


def test_a_slot_that_vanished_is_a_failed_read_back(tmp_path: Path):
    """The slot's path gone before the read-back (the O_DIRECT open fails with ENOENT, or
    with ELOOP once the path is a symlink to itself): a SlotError, not a fallback to a path
    that cannot be opened either. Only EINVAL means the medium refuses O_DIRECT."""
    path = new_slot(tmp_path / "slot")
    if not direct_io_works(tmp_path):
        pytest.skip(f"{tmp_path} does not support O_DIRECT: give pytest --basetemp on ext4 or xfs")
    with SlotWriter(path) as writer:
        write_all(writer, DATA)
        path.unlink()
        with pytest.raises(SlotError, match="cannot open slot"):
            writer.read_back(len(DATA))
        path.symlink_to(path.name)
        with pytest.raises(SlotError, match="cannot open slot"):
            writer.read_back(len(DATA))


@pytest.mark.root
def test_a_device_whose_size_ioctl_fails_is_measured_by_seeking_to_its_end(
    loop_device: Path, monkeypatch: pytest.MonkeyPatch
):
    real_ioctl = fcntl.ioctl

    def no_size(fd: int, request: int, *args: object) -> object:
        if request == writer_module.BLKGETSIZE64:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        return real_ioctl(fd, request, *args)  # type: ignore[call-overload]

    monkeypatch.setattr(fcntl, "ioctl", no_size)
    with SlotWriter(loop_device) as writer:
        assert writer.capacity == 2 << 20


@pytest.mark.parametrize("call", ["pwrite", "fsync", "pread"])
def test_an_io_error_of_the_slot_is_a_slot_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
):
    """A failing medium (EIO) ends the pass with SlotError, whose status the CSMS is sent
    (DownloadFailed), never with a bare OSError."""
    path = new_slot(tmp_path / "slot")
    path.write_bytes(DATA)
    real = getattr(os, call)

    def fail(fd: int, *args: object) -> object:
        if is_slot(fd, path):  # the slot's only
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, *args)

    with SlotWriter(path) as writer:
        monkeypatch.setattr(os, call, fail)
        with pytest.raises(SlotError, match=r"write to slot|fsync of slot|cannot read slot"):
            if call == "pwrite":
                writer.write_at(0, DATA[:1000])
            elif call == "fsync":
                writer.write_at(0, DATA[:1000])
                writer.sync()
            else:
                writer.rehash_prefix(1000)
        monkeypatch.undo()


def open_files() -> list[str]:
    """What this process's descriptors point at (other threads may open and close meanwhile)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            continue
    return found


def test_closing_twice_closes_nothing_else(tmp_path: Path):
    """The second close (a `with` block after an explicit close) must not close whatever
    descriptor the number now belongs to, nor stdin, stdout or stderr."""
    slot = new_slot(tmp_path / "slot")
    writer = SlotWriter(slot)
    assert str(slot) in open_files()
    writer.close()
    assert str(slot) not in open_files()  # released (a leaked O_EXCL one would be SlotBusy)
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        writer.close()
        for fd in (other, 0, 1, 2):
            os.fstat(fd)
    finally:
        os.close(other)


@pytest.mark.root
def test_the_cache_flush_ioctl_is_the_kernels_blkflsbuf(loop_device: Path):
    """BLKFLSBUF is best effort (its failure is ignored), so only asking a real device shows
    the number is right: it succeeds and, unlike its neighbours (BLKRASET, BLKGETSIZE), neither
    fails nor changes the device's read-ahead."""
    blkraget = 0x1263  # _IO(0x12, 99)

    def read_ahead(fd: int) -> bytes:
        return bytes(fcntl.ioctl(fd, blkraget, bytes(8)))

    fd = os.open(loop_device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = read_ahead(fd)
        fcntl.ioctl(fd, writer_module.BLKFLSBUF)
        assert read_ahead(fd) == before
    finally:
        os.close(fd)


@pytest.mark.root
def test_a_cached_read_back_of_a_device_flushes_its_buffer_cache_first(
    loop_device: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Without O_DIRECT a block device's read-back asks BLKFLSBUF first (its buffer cache
    would otherwise answer); a file slot has none and is not asked."""
    real_ioctl = fcntl.ioctl
    flushed: list[str] = []

    def ioctl(fd: int, request: int, *args: object) -> object:
        if request == writer_module.BLKFLSBUF:
            flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_ioctl(fd, request, *args)  # type: ignore[call-overload]

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    for slot in (loop_device, new_slot(tmp_path / "slot")):
        with SlotWriter(slot) as writer:
            write_all(writer, DATA)
            result = writer.read_back(len(DATA), direct=False)
        assert result.digest == hashlib.sha256(DATA).digest()
    assert flushed == [str(loop_device)]


def test_each_fsync_drops_exactly_the_pages_it_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A large image must not crowd the controller's memory: every fsync asks the kernel to
    drop the range it synced, each range once, in order, and never with length 0 (which
    posix_fadvise reads as "to the end of the file"). After a rewind (a download restarted
    from 0) the rewritten pages are cached again, and are dropped again once synced."""
    path = new_slot(tmp_path / "slot")
    real_fadvise = os.posix_fadvise
    dropped: list[tuple[int, int]] = []

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED and is_slot(fd, path):
            dropped.append((offset, length))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    with SlotWriter(path, checkpoint_bytes=50_000) as w:
        w.write_at(0, DATA[:60_000])  # a checkpoint: its fsync starts
        w.write_at(60_000, DATA[60_000:120_000])  # the next one, the first collected
        assert w.sync() == 120_000  # nothing synced that was not already dropped
        w.write_at(120_000, b"")  # the same offset, another int object: still nothing new
        assert w.sync() == 120_000
        w.write_at(0, DATA[:30_000])  # the download restarted from 0
        assert w.sync() == 30_000
        w.write_at(30_000, DATA[30_000:100_000])
        w.finish(100_000)
    assert dropped == [(0, 60_000), (60_000, 60_000), (0, 30_000), (30_000, 70_000)]


def test_a_short_read_while_rehashing_continues_where_it_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """pread may return less than asked (a signal): the next read starts where it ended and
    asks only for what is left of the prefix, so no byte past it is hashed. A real file
    never reads short on demand, hence the wrapper."""
    path = new_slot(tmp_path / "slot")
    real_pread = os.pread
    asked: list[tuple[int, int]] = []

    def short(fd: int, length: int, offset: int) -> bytes:
        if not is_slot(fd, path):
            return real_pread(fd, length, offset)
        asked.append((offset, length))
        return real_pread(fd, min(length, 70_000), offset)

    with SlotWriter(path) as w:
        write_all(w, DATA)
        monkeypatch.setattr(os, "pread", short)
        digest = w.rehash_prefix(250_000).digest()
    assert digest == hashlib.sha256(DATA[:250_000]).digest()
    assert asked == [(0, 250_000), (70_000, 180_000), (140_000, 110_000), (210_000, 40_000)]


@pytest.mark.parametrize(
    "size",
    [
        len(DATA),  # 300 001: the last read starts at 286 720, whose bits size lacks
        40 * writer_module.DIRECT_ALIGN,  # every remainder already page-aligned: asked as is
    ],
)
def test_a_short_direct_read_continues_where_it_ended_and_asks_only_aligned_remainders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
):
    """An O_DIRECT preadv may return fewer (whole) pages than asked: the next read starts
    where it ended, each asks for what is left of the image rounded up to a page (not a whole
    buffer), and of the last one only the image's bytes are hashed, wherever the short reads
    left the position."""
    if not direct_io_works(tmp_path):
        pytest.skip(f"{tmp_path} does not support O_DIRECT: give pytest --basetemp on ext4 or xfs")
    path = new_slot(tmp_path / "slot")
    real_preadv = os.preadv
    step = 5 * writer_module.DIRECT_ALIGN
    asked: list[tuple[int, int]] = []

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        if not is_slot(fd, path):
            return real_preadv(fd, buffers, offset)
        asked.append((offset, len(buffers[0])))
        return real_preadv(fd, [buffers[0][:step]], offset)

    def page_rounded(length: int) -> int:
        return -(-length // writer_module.DIRECT_ALIGN) * writer_module.DIRECT_ALIGN

    with SlotWriter(path) as w:
        write_all(w, DATA)
        monkeypatch.setattr(os, "preadv", short)
        result = w.read_back(size, direct=True)
    assert result.method is ReadBackMethod.DIRECT
    assert result.digest == hashlib.sha256(DATA[:size]).digest()
    assert asked == [(offset, page_rounded(size - offset)) for offset in range(0, size, step)]


def joining_from_shutdown(thread: threading.Thread) -> bool:
    """Whether `thread` is blocked joining the executor's worker from inside its shutdown()."""
    frame = sys._current_frames().get(thread.ident or -1)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return any(name == "join" and caller == "shutdown" for name, caller in pairwise(names))


def test_closing_waits_for_the_fsync_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """close() while a checkpoint's fsync runs in the background waits for it: closing the
    descriptor under it would turn the fsync into EBADF (or, once the number is reused, an
    fsync of another file), and the bytes it was making durable would not be."""
    path = new_slot(tmp_path / "slot")
    real_fsync, real_close = os.fsync, os.close
    held, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_fsync(fd: int) -> None:
        if is_slot(fd, path):
            held.set()
            release.wait(deadline(60))
            real_fsync(fd)
            order.append("fsync")
        else:
            real_fsync(fd)

    def spy_close(fd: int) -> None:
        if is_slot(fd, path):
            order.append("close")
        real_close(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    monkeypatch.setattr(os, "close", spy_close)
    w = SlotWriter(path, checkpoint_bytes=50_000)
    w.write_at(0, DATA[:60_000])  # a checkpoint: its fsync starts and is held
    assert held.wait(deadline(60))
    closer = threading.Thread(target=w.close)
    closer.start()
    wait_until(
        lambda: not closer.is_alive() or joining_from_shutdown(closer),
        60,
        "close() to return or wait for the fsync",
    )
    still_waiting = closer.is_alive()  # close() returned while the fsync was held: a bug
    release.set()
    closer.join()
    assert still_waiting
    assert order == ["fsync", "close"]
