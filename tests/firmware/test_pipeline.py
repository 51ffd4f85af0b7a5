"""One pass fetch -> SHA-256 -> slot, with resume across cuts (issue #3, §8.4 of the design)."""

from __future__ import annotations

import hashlib
import tempfile
import threading
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.firmware.errors import DownloadCancelled, ImageTooLarge, Truncated
from agent.firmware.fetch import Fetcher, FetchSettings
from agent.firmware.pipeline import Checkpoint, Progress, run_pass
from agent.firmware.writer import SlotWriter
from tests.firmware.conftest import FTP_PASSWORD, FTP_USER
from tests.firmware.fwservers import FirmwareHttpServer
from tests.firmware.slotfiles import new_slot

CHECKPOINT = 64 * 1024


def test_full_pass(fetcher, http_server, image, tmp_path: Path):
    http_server.put("/fw.bin", image)
    checkpoints: list[Checkpoint] = []
    progress: list[Progress] = []
    with SlotWriter(new_slot(tmp_path / "slot"), checkpoint_bytes=CHECKPOINT) as writer:
        result = run_pass(
            fetcher,
            http_server.url("/fw.bin"),
            writer,
            on_checkpoint=checkpoints.append,
            on_progress=progress.append,
        )
    assert result.digest == hashlib.sha256(image).digest()
    assert (result.size, result.resumed_from, result.fetched) == (len(image), 0, len(image))
    assert (tmp_path / "slot").read_bytes()[: len(image)] == image
    offsets = [c.offset for c in checkpoints]
    assert offsets == sorted(offsets) and offsets[-1] == len(image)
    assert all(c.validator == http_server.files["/fw.bin"].etag for c in checkpoints)
    assert progress[-1] == Progress(len(image), len(image), len(image))


def cut_then_resume(
    fetcher: Fetcher, server: FirmwareHttpServer, image: bytes, slot: Path, cut: int
) -> tuple[bytes, list[Checkpoint]]:
    """First pass dies at `cut`; the second resumes from the last checkpoint."""
    checkpoints: list[Checkpoint] = []
    url = server.url("/fw.bin")
    server.faults.cut_after = cut
    with (
        SlotWriter(new_slot(slot), checkpoint_bytes=CHECKPOINT) as writer,
        pytest.raises(Truncated),
    ):
        run_pass(fetcher, url, writer, on_checkpoint=checkpoints.append)
    server.faults.cut_after = None
    # A new writer, as after a daemon restart: only the persisted checkpoint is known.
    with SlotWriter(new_slot(slot), checkpoint_bytes=CHECKPOINT) as writer:
        result = run_pass(fetcher, url, writer, resume=checkpoints[-1])
    return result.digest, checkpoints


def test_resume_after_cut_fetches_only_the_rest(fetcher, http_server, image, tmp_path: Path):
    """Chargepoint-peers §7.1: Range + If-Range resume; nothing is fetched twice."""
    http_server.put("/fw.bin", image)
    cut = int(len(image) * 0.9)
    digest, checkpoints = cut_then_resume(fetcher, http_server, image, tmp_path / "slot", cut)
    assert digest == hashlib.sha256(image).digest()
    assert checkpoints[-1].offset == cut  # the partial tail was made durable too
    first, second = http_server.requests
    assert first.header("Range") is None
    assert second.header("Range") == f"bytes={cut}-"
    assert second.header("If-Range") == http_server.files["/fw.bin"].etag
    assert http_server.sent() == len(image)


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(cut=st.integers(min_value=1, max_value=(1 << 20) + 122))
def test_any_cut_point_gives_the_image_digest(fetcher, image, cut):
    with FirmwareHttpServer() as server, tempfile.TemporaryDirectory() as folder:
        server.put("/fw.bin", image)
        digest, _ = cut_then_resume(fetcher, server, image, Path(folder) / "slot", cut)
        assert digest == hashlib.sha256(image).digest()
        assert server.sent() == len(image)


def test_changed_file_starts_over_and_rewinds_checkpoint(
    fetcher, http_server, image, tmp_path: Path
):
    http_server.put("/fw.bin", image)
    slot = tmp_path / "slot"
    http_server.faults.cut_after = 500_000
    checkpoints: list[Checkpoint] = []
    with (
        SlotWriter(new_slot(slot), checkpoint_bytes=CHECKPOINT) as writer,
        pytest.raises(Truncated),
    ):
        run_pass(fetcher, http_server.url("/fw.bin"), writer, on_checkpoint=checkpoints.append)
    http_server.faults.cut_after = None
    new_image = image[::-1][:900_000]
    http_server.put("/fw.bin", new_image)
    after: list[Checkpoint] = []
    with SlotWriter(new_slot(slot), checkpoint_bytes=CHECKPOINT) as writer:
        result = run_pass(
            fetcher,
            http_server.url("/fw.bin"),
            writer,
            resume=checkpoints[-1],
            on_checkpoint=after.append,
        )
    assert result.digest == hashlib.sha256(new_image).digest()
    assert result.resumed_from == 0
    assert slot.read_bytes()[: len(new_image)] == new_image
    assert after[0].offset == 0  # the stale offset is withdrawn before new bytes land
    assert after[-1] == Checkpoint(len(new_image), http_server.files["/fw.bin"].etag, 900_000)


def test_server_ignoring_if_range_is_refetched_from_zero(
    fetcher, http_server, image, tmp_path: Path
):
    http_server.put("/fw.bin", image)
    slot = tmp_path / "slot"
    slot.write_bytes(image[:300_000])
    stale = Checkpoint(300_000, http_server.files["/fw.bin"].etag, len(image))
    http_server.put("/fw.bin", image[::-1])
    http_server.faults.ignore_if_range = True
    with SlotWriter(new_slot(slot)) as writer:
        result = run_pass(fetcher, http_server.url("/fw.bin"), writer, resume=stale)
    assert result.digest == hashlib.sha256(image[::-1]).digest()
    assert [r.status for r in http_server.requests] == [206, 200]


def test_image_larger_than_slot_fails_before_first_byte(
    fetcher, http_server, image, tmp_path: Path
):
    http_server.put("/fw.bin", image)
    slot = tmp_path / "slot"
    new_slot(slot, len(image) - 1)
    with SlotWriter(slot) as writer, pytest.raises(ImageTooLarge):
        run_pass(fetcher, http_server.url("/fw.bin"), writer)
    assert slot.read_bytes() == bytes(len(image) - 1)  # not a byte written


def test_image_of_unknown_length_stops_at_slot_end(fetcher, http_server, image, tmp_path: Path):
    http_server.put("/fw.bin", image)
    http_server.faults.no_length = True
    slot = tmp_path / "slot"
    with SlotWriter(new_slot(slot), capacity=500_000) as writer, pytest.raises(ImageTooLarge):
        run_pass(fetcher, http_server.url("/fw.bin"), writer)
    assert slot.read_bytes()[500_000:] == bytes(slot.stat().st_size - 500_000)


def test_resume_beyond_slot_content_starts_over(fetcher, http_server, image, tmp_path: Path):
    """A checkpoint claiming more bytes than the slot holds cannot be trusted."""
    http_server.put("/fw.bin", image)
    slot = tmp_path / "slot"
    slot.write_bytes(image[:1000])
    claim = Checkpoint(5000, http_server.files["/fw.bin"].etag, len(image))
    # A 1000-byte slot (fixed size): the claim is not trusted, nothing is resumed, and the
    # whole image is then refused before a byte is written.
    with SlotWriter(slot) as writer, pytest.raises(ImageTooLarge):
        run_pass(fetcher, http_server.url("/fw.bin"), writer, resume=claim)
    assert http_server.requests[0].header("Range") is None
    assert slot.read_bytes() == image[:1000]


def test_cancel_keeps_the_durable_prefix(http_server, image, tmp_path: Path):
    """A cancelled pass stops promptly and leaves what arrived durable for a later resume."""
    http_server.put("/fw.bin", image)
    http_server.faults.stall_after = 400_000
    cancel = threading.Event()
    checkpoints: list[Checkpoint] = []
    chunk = 64 * 1024

    def on_progress(progress: Progress) -> None:
        if progress.done >= 2 * chunk:
            cancel.set()  # as the updater would on a newer SignedUpdateFirmware

    with (
        Fetcher(
            FetchSettings(stall_timeout=30, chunk_size=chunk, allowed_hosts=("127.0.0.1",))
        ) as fetcher,
        SlotWriter(new_slot(tmp_path / "slot"), checkpoint_bytes=1 << 20) as writer,
        pytest.raises(DownloadCancelled),
    ):
        run_pass(
            fetcher,
            http_server.url("/fw.bin"),
            writer,
            cancel=cancel,
            on_checkpoint=checkpoints.append,
            on_progress=on_progress,
        )
    durable = checkpoints[-1].offset
    assert durable == 2 * chunk  # synced on the way out, although below the watermark
    http_server.faults.stall_after = None
    with (
        Fetcher(FetchSettings(allowed_hosts=("127.0.0.1",))) as fetcher,
        SlotWriter(new_slot(tmp_path / "slot")) as writer,
    ):
        result = run_pass(fetcher, http_server.url("/fw.bin"), writer, resume=checkpoints[-1])
    assert result.digest == hashlib.sha256(image).digest()
    assert http_server.requests[-1].header("Range") == f"bytes={durable}-"


def test_memory_stays_flat(http_server, tmp_path: Path):
    """No staging copy: peak Python allocations do not grow with the image size."""
    peaks = []
    for size in (4 << 20, 32 << 20):
        big = hashlib.shake_256(str(size).encode()).digest(1 << 16) * (size >> 16)
        http_server.put(f"/{size}.bin", big)
        with (
            Fetcher(FetchSettings(allowed_hosts=("127.0.0.1",))) as fetcher,
            SlotWriter(new_slot(tmp_path / f"slot{size}", size)) as writer,
        ):
            tracemalloc.start()
            result = run_pass(fetcher, http_server.url(f"/{size}.bin"), writer)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        assert result.size == size
        del big
    assert peaks[1] < 8 << 20
    assert peaks[1] < peaks[0] * 1.5 + (1 << 20)


def test_ftp_pass_resumes_with_rest(fetcher, ftp_server, ftp_root: Path, image, tmp_path: Path):
    from urllib.parse import quote

    (ftp_root / "fw.bin").write_bytes(image)
    url = f"ftp://{FTP_USER}:{quote(FTP_PASSWORD, safe='')}@127.0.0.1:{ftp_server.port}/fw.bin"
    ftp_server.cut_after = 600_000
    checkpoints: list[Checkpoint] = []
    slot = tmp_path / "slot"
    with (
        SlotWriter(new_slot(slot), checkpoint_bytes=CHECKPOINT) as writer,
        pytest.raises(Truncated),
    ):
        run_pass(fetcher, url, writer, on_checkpoint=checkpoints.append)
    ftp_server.cut_after = None
    with SlotWriter(new_slot(slot)) as writer:
        result = run_pass(fetcher, url, writer, resume=checkpoints[-1])
    assert result.digest == hashlib.sha256(image).digest()
    assert ftp_server.rest == [checkpoints[-1].offset]
    assert result.resumed_from == checkpoints[-1].offset > 0
