"""One download pass: network -> SHA-256 -> slot, in a single stream.

Each chunk is hashed and `pwrite`n to the slot as it arrives; nothing is staged, and the chunk
size and queue depth (see `fetch`) bound the memory whatever the image size. The digest that
comes out is the one the signature is checked against, so the image is not read again for it
(the read-back in `writer` is a separate check of the medium).

Resume: given the durable offset and validator of an earlier pass, the prefix already in the
slot is re-hashed locally and only the rest is requested. If the server cannot resume (answers
200, or the file changed) the pass silently starts over from byte 0: hash state reset, slot
overwritten from the start, and the checkpoint rewound so no stale offset survives.

Checkpoints: the writer fsyncs the slot every `checkpoint_bytes`; the caller hears of a new
durable offset (and saves its job, an atomic write with two more fsyncs) at most every
`CHECKPOINT_INTERVAL` seconds. On a fast link that is what costs: saving the job every 4 MiB
took ~2 s per GiB on the benchmark's disk. A rewind, the end of the pass and a failure are
always reported at once; what is reported is always durable, so a power cut costs at most
CHECKPOINT_INTERVAL seconds (or `checkpoint_bytes`) of transfer, and a failed attempt nothing.

No policy lives here: no retries, no OCPP statuses. A failed pass raises; the caller decides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable

from agent.firmware.errors import LengthMismatch, RestartRequired, SlotError
from agent.firmware.fetch import Fetcher, ResumeFrom, Transfer
from agent.firmware.fetch_base import redact_url
from agent.firmware.writer import Hasher, SlotWriter

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 0.25  # seconds: at most ~4 job saves per second, whatever the speed


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What to persist to resume later: bytes durable in the slot and the file's validator."""

    offset: int
    validator: str | None
    total: int | None


@dataclasses.dataclass(frozen=True)
class Progress:
    done: int  # bytes of the image in the slot (including a resumed prefix)
    total: int | None
    fetched: int  # bytes received in this pass (speed = fetched / elapsed)


@dataclasses.dataclass(frozen=True)
class PassResult:
    digest: bytes  # SHA-256 of the whole image
    size: int
    validator: str | None
    resumed_from: int  # 0 when the pass fetched the whole file
    fetched: int  # bytes that crossed the network in this pass


def run_pass(
    fetcher: Fetcher,
    url: str,
    writer: SlotWriter,
    *,
    resume: Checkpoint | None = None,
    cancel: threading.Event | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    before_first_byte: Callable[[], None] | None = None,
) -> PassResult:
    """Download `url` into `writer`'s slot, resuming from `resume` when the server allows.

    `before_first_byte` runs once, after the response was accepted and right before the first
    byte of this pass is written (the caller marks the slot unbootable there): a request that
    fails earlier leaves the slot and the bootloader untouched.

    On failure the slot is fsynced and a last checkpoint reported before the error (a
    DownloadError, DownloadCancelled or SlotError) propagates, so the next attempt loses
    nothing it already received. The pipeline owns `writer.on_checkpoint` while it runs.
    """
    cancel = cancel or threading.Event()
    hasher: Hasher = hashlib.sha256()
    offset = 0
    if resume is not None and resume.offset > 0 and resume.validator is not None:
        try:
            hasher = writer.rehash_prefix(resume.offset)
            offset = resume.offset
        except SlotError as exc:
            log.warning("cannot resume from %d: %s; starting over", resume.offset, exc)
            hasher = hashlib.sha256()
    asked = ResumeFrom(offset, resume.validator if resume is not None else None)
    try:
        transfer = fetcher.open(url, resume=asked if offset else None, cancel=cancel)
    except RestartRequired as exc:
        log.info("%s; fetching %s from byte 0", exc.message, redact_url(url))
        offset, hasher = 0, hashlib.sha256()
        transfer = fetcher.open(url, resume=None, cancel=cancel)
    with transfer:
        return _stream(
            transfer, writer, hasher, offset, on_checkpoint, on_progress, before_first_byte
        )


def _stream(
    transfer: Transfer,
    writer: SlotWriter,
    hasher: Hasher,
    offset: int,
    on_checkpoint: Callable[[Checkpoint], None] | None,
    on_progress: Callable[[Progress], None] | None,
    before_first_byte: Callable[[], None] | None,
) -> PassResult:
    info = transfer.info
    if info.start != offset:  # the server sends the whole file: start over
        hasher, offset = hashlib.sha256(), info.start
    if info.total is not None:
        writer.ensure_fits(info.total)
    elif info.end is not None:
        writer.ensure_fits(info.end)

    def report(durable: int) -> None:
        if on_checkpoint is not None:
            on_checkpoint(Checkpoint(durable, info.validator, info.total))

    checkpoint = _Coalesced(report, CHECKPOINT_INTERVAL)
    writer.on_checkpoint = checkpoint
    position = offset
    fetched = 0
    first = before_first_byte
    try:
        if info.start == 0 and writer.durable_offset > 0:
            writer.write_at(0, b"")  # rewinds the durable offset before any new byte lands
        for chunk in transfer.chunks():
            if first is not None:
                first()
                first = None
            hasher.update(chunk)
            writer.write_at(position, chunk)
            position += len(chunk)
            fetched += len(chunk)
            if on_progress is not None:
                on_progress(Progress(position, info.total, fetched))
        writer.finish(position)
        checkpoint.flush()
    except BaseException:
        try:
            writer.sync()  # keep what arrived: the next attempt resumes after it
        except SlotError as exc:
            log.warning("could not make the partial image durable: %s", exc)
        checkpoint.flush()
        raise
    finally:
        writer.on_checkpoint = None
    if info.total is not None and position != info.total:
        raise LengthMismatch(f"received {position} bytes, the server announced {info.total}")
    return PassResult(hasher.digest(), position, info.validator, offset, fetched)


class _Coalesced:
    """Forwards durable offsets at most every `interval` seconds; a rewind at once.

    `flush()` forwards the latest one not yet forwarded (end of pass, failure)."""

    def __init__(self, forward: Callable[[int], None], interval: float) -> None:
        self._forward = forward
        self._interval = interval
        self._pending: int | None = None
        self._reported: int | None = None
        self._at = float("-inf")

    def __call__(self, durable: int) -> None:
        self._pending = durable
        rewind = self._reported is not None and durable < self._reported
        if rewind or time.monotonic() - self._at >= self._interval:
            self.flush()

    def flush(self) -> None:
        durable = self._pending
        if durable is None or durable == self._reported:
            return
        self._reported, self._at = durable, time.monotonic()
        self._forward(durable)
