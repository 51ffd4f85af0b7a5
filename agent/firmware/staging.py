"""Staging an image into the target slot: the download pass and the read-back, with progress.

Glue between the job and the streaming pieces (`fetch`, `pipeline`, `writer`): it opens the
target slot and a fetcher per pass, keeps the job's resume checkpoint current, and measures
speed and ETA for `ocpp-fw-agent status`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from agent.config import Config
from agent.firmware.fetch import Fetcher
from agent.firmware.fetch_base import FetchSettings
from agent.firmware.job import Job
from agent.firmware.pipeline import Checkpoint, PassResult, Progress, run_pass
from agent.firmware.writer import SlotWriter
from agent.slots.base import BootBackend


class Stager:
    def __init__(self, config: Config, backend: BootBackend) -> None:
        self._config = config
        self._backend = backend
        self._lock = threading.Lock()
        self._progress: dict[str, Any] = {}
        self._started = 0.0

    def _writer(self, job: Job) -> SlotWriter:
        assert job.target is not None
        return SlotWriter(
            self._backend.slots[job.target],
            checkpoint_bytes=self._config.firmware.checkpoint_bytes,
        )

    def download(
        self,
        job: Job,
        cancel: threading.Event,
        on_checkpoint: Callable[[], None],
        before_first_byte: Callable[[], None],
    ) -> PassResult:
        """One download pass into the target slot, resuming from the job's checkpoint. The
        slot is opened (busy? mounted?) before anything is fetched."""

        def checkpoint(point: Checkpoint) -> None:
            job.offset, job.validator, job.total = point.offset, point.validator, point.total
            on_checkpoint()

        resume = Checkpoint(job.offset, job.validator, job.total) if job.offset else None
        self._started = time.monotonic()
        self._set(phase_bytes=job.offset, total=job.total, fetched=0)
        fetcher = Fetcher(FetchSettings.from_config(self._config.firmware))
        writer = self._writer(job)
        try:
            return run_pass(
                fetcher,
                job.location,
                writer,
                resume=resume,
                cancel=cancel,
                on_checkpoint=checkpoint,
                on_progress=self._on_progress,
                before_first_byte=before_first_byte,
            )
        finally:
            writer.close()
            fetcher.close()

    def read_back(self, job: Job, cancel: threading.Event) -> str:
        """SHA-256 (hex) of the image's bytes in the target slot, read past the page cache:
        what the bootloader will boot. DownloadCancelled when `cancel` is set meanwhile."""
        assert job.size is not None
        self._started = time.monotonic()
        writer = self._writer(job)
        try:
            result = writer.read_back(
                job.size,
                progress=lambda done, total: self._set(phase_bytes=done, total=total, fetched=done),
                cancel=cancel,
            )
        finally:
            writer.close()
        return result.digest.hex()

    def _on_progress(self, progress: Progress) -> None:
        self._set(phase_bytes=progress.done, total=progress.total, fetched=progress.fetched)

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._progress.update(values)

    def progress(self, job: Job) -> dict[str, Any]:
        """bytes_done, bytes_total, speed (bytes/s) and ETA (s) of the running pass."""
        with self._lock:
            progress = dict(self._progress)
        if not progress:
            return {}
        done, total = progress.get("phase_bytes", 0), progress.get("total")
        elapsed = time.monotonic() - self._started
        moved = progress.get("fetched", done)
        speed = moved / elapsed if elapsed > 0.5 and moved else None
        eta = (total - done) / speed if speed and total else None
        return {"bytes_done": done, "bytes_total": total, "speed": speed, "eta": eta}
