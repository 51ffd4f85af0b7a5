"""Download one firmware image as a stream of chunks: one *attempt*, resumable, cancellable.

`Fetcher.open(url, resume=..., cancel=...)` returns a `Transfer` whose `info` says where the
bytes start (the resume offset, or 0 when the server could not resume: the caller must then
re-hash and overwrite from the start) and whose `chunks()` yields the body in bounded pieces.

A reader thread does the blocking network I/O and hands chunks over through a small bounded
queue, so memory stays flat and writing to the slot overlaps with receiving. The consumer checks
the `cancel` event at least every 0.1 s, also while the connection is still being set up; on
cancel it shuts the sockets down (which wakes a blocked read) and raises `DownloadCancelled`,
well within a second.

Every transfer failure is a `DownloadError` (never a signature problem): refused scheme, HTTP
4xx/5xx, TLS failure, connect timeout, stall, truncation or excess bytes. OCPP `retries` and
`retryInterval` belong to the caller's loop; `attempts()` says how many to make.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import ssl
import threading
import time
from collections.abc import Iterator
from types import TracebackType

from agent.firmware.errors import (
    BrokenConnection,
    DownloadCancelled,
    DownloadError,
    LengthMismatch,
    Truncated,
    UnsupportedScheme,
)
from agent.firmware.fetch_base import (
    FetchSettings,
    ResumeFrom,
    Source,
    TransferInfo,
    redact_url,
    tls_context,
)
from agent.firmware.fetch_ftp import FtpSource
from agent.firmware.fetch_http import HttpSource, make_session

log = logging.getLogger(__name__)

__all__ = [
    "FetchSettings",
    "Fetcher",
    "ResumeFrom",
    "Transfer",
    "TransferInfo",
    "attempts",
    "redact_url",
]

QUEUE_DEPTH = 4
POLL = 0.1  # how often a waiting consumer looks at the cancel event
_END = object()


def attempts(retries: int | None, default_retries: int) -> int:
    """Download attempts for a request: `retries` counts the tries *after* the first.

    The white paper's "how many times Charge Point must try" is read as retries after the first
    attempt (OCPP 1.6 errata §3.50 wording), so there is always at least one attempt; an absent
    `retries` takes the configured default, a negative one counts as 0.
    """
    chosen = default_retries if retries is None else retries
    return max(0, chosen) + 1


class Transfer:
    """One open download. Iterate `chunks()` once; always `close()` (or use `with`)."""

    def __init__(self, source: Source, info: TransferInfo, pump: _Pump) -> None:
        self._source = source
        self.info = info
        self._pump = pump
        self.received = 0

    def chunks(self) -> Iterator[bytes]:
        """The body in order; raises a DownloadError subclass or DownloadCancelled."""
        expected = self.info.length
        while True:
            item = self._pump.get()
            if isinstance(item, bytes):
                self.received += len(item)
                if expected is not None and self.received > expected:
                    self.abort()
                    raise LengthMismatch(f"server sent more than the announced {expected} bytes")
                yield item
                continue
            if isinstance(item, BrokenConnection):
                if expected is not None and self.received < expected:
                    raise Truncated(
                        f"transfer ended after {self.received} of {expected} bytes: {item.message}"
                    ) from None
                raise item
            if isinstance(item, BaseException):
                raise item
            if expected is not None and self.received < expected:
                raise Truncated(f"transfer ended after {self.received} of {expected} bytes")
            return

    def abort(self) -> None:
        """Stop the transfer now; safe from any thread."""
        self._pump.stop()

    def close(self) -> None:
        self._pump.stop()

    def __enter__(self) -> Transfer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Pump:
    """The reader thread and its bounded queue."""

    def __init__(
        self,
        source: Source,
        resume: ResumeFrom | None,
        chunk_size: int,
        cancel: threading.Event,
        max_rate: int = 0,
    ) -> None:
        self._source = source
        self._resume = resume
        self._cancel = cancel
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_DEPTH)
        self._stopped = threading.Event()
        self._throttle = _Throttle(max_rate, self._stopped) if max_rate > 0 else None
        # A throttled transfer reads small pieces, so its pauses stay short and even.
        self._chunk_size = (
            min(chunk_size, max(16 * 1024, max_rate // 8)) if max_rate else chunk_size
        )
        self._thread = threading.Thread(target=self._run, name="fw-fetch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            info = self._source.open(self._resume)
            if not self._put(info):
                return
            while not self._stopped.is_set():
                data = self._source.read(self._chunk_size)
                if not data:
                    break
                if self._throttle is not None:
                    self._throttle.pace(len(data))
                if not self._put(data):
                    return
            if not self._stopped.is_set():
                self._source.finish()
                self._put(_END)
        except BaseException as exc:
            if not self._stopped.is_set():
                self._put(exc if isinstance(exc, DownloadError) else _unexpected(exc))
        finally:
            self._source.close()

    def _put(self, item: object) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> object:
        while True:
            if self._cancel.is_set():
                self.stop()
                raise DownloadCancelled("download cancelled")
            try:
                return self._queue.get(timeout=POLL)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return DownloadError("download reader stopped unexpectedly")

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._source.abort()


class _Throttle:
    """Holds a transfer to `rate` bytes per second on average (`[firmware] max_download_rate`):
    a charger on a cellular link keeps room for its charging sessions' own traffic.

    The reader sleeps until each piece's due time. Time lost to a slow link is credited for at
    most BURST seconds, so a link that recovers does not then run flat out to catch up.
    """

    BURST = 1.0

    def __init__(self, rate: int, stopped: threading.Event) -> None:
        self._rate = rate
        self._stopped = stopped
        self._origin = time.monotonic()
        self._moved = 0

    def pace(self, size: int) -> None:
        """Account `size` bytes just read; wait (unless stopped) until they are due."""
        self._moved += size
        due = self._moved / self._rate  # seconds after the origin these bytes may be done
        now = time.monotonic()
        if now - self._origin - due > self.BURST:
            self._origin = now - due - self.BURST
        wait = due - (now - self._origin)
        if wait > 0:
            self._stopped.wait(wait)


def _unexpected(exc: BaseException) -> DownloadError:
    error = DownloadError(f"download failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class Fetcher:
    """Opens transfers for http, https, ftp and ftps URLs with one session and TLS context."""

    def __init__(self, settings: FetchSettings | None = None) -> None:
        self.settings = settings = settings or FetchSettings()
        # TLS contexts are built on first use: loading the system CA store costs ~20 ms each,
        # which an http download would otherwise pay twice before its first byte.
        self._session = make_session(
            lambda: tls_context(settings.ca_file, check_hostname=False),
            settings.check_url,
            settings.open_connection,
        )

    @functools.cached_property
    def _ftps_context(self) -> ssl.SSLContext:
        return tls_context(self.settings.ca_file)

    def _source(self, url: str) -> Source:
        scheme = self.settings.check_url(url)
        if scheme in ("http", "https"):
            return HttpSource(url, self._session, self.settings)
        if scheme in ("ftp", "ftps"):
            context = self._ftps_context if scheme == "ftps" else None
            return FtpSource(url, context, self.settings)
        raise UnsupportedScheme(f"download scheme {scheme!r} is not supported")

    def open(
        self,
        url: str,
        *,
        resume: ResumeFrom | None = None,
        cancel: threading.Event | None = None,
    ) -> Transfer:
        """Connect and read the response head; raises DownloadError or DownloadCancelled."""
        source = self._source(url)
        pump = _Pump(
            source,
            resume,
            self.settings.chunk_size,
            cancel or threading.Event(),
            self.settings.max_rate,
        )
        pump.start()
        try:
            first = pump.get()
        except BaseException:
            pump.stop()
            raise
        if isinstance(first, BaseException):
            pump.stop()
            raise first
        if not isinstance(first, TransferInfo):
            pump.stop()
            raise DownloadError("download reader ended before the response head")
        log.info(
            "download %s: from byte %d, %s bytes, total %s%s",
            redact_url(url),
            first.start,
            "unknown" if first.length is None else first.length,
            "unknown" if first.total is None else first.total,
            " (server restarted from 0)" if first.restarted else "",
        )
        return Transfer(source, first, pump)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._session.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
