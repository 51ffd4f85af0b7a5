"""A firmware HTTP server on loopback for the demo, the benchmark and the tests.

`FirmwareHttpServer` implements Range / If-Range / ETag / Last-Modified as RFC 9110 says and
can be told to misbehave (status codes, stall, cut after N bytes, ignore Range, ignore If-Range,
shift the range start, compress). Every request's headers, arrival time and the body bytes
actually written are recorded, so tests can assert what crossed the wire; a stalled request also
records when the client closed the connection (a cancelled download must let go promptly).
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import http.server
import re
import select
import socket
import ssl
import threading
import time
from typing import Any

STALL_LIMIT = 20.0  # a stalled handler gives up after this long if nobody releases it


@dataclasses.dataclass
class Served:
    path: str
    headers: dict[str, str]
    status: int = 0
    sent: int = 0  # body bytes written to the socket
    at: float = dataclasses.field(default_factory=time.time)  # when the request arrived
    closed_at: float | None = None  # when the client hung up on a stalled response

    def header(self, key: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == key.lower():
                return v
        return None


@dataclasses.dataclass
class Faults:
    statuses: list[int] = dataclasses.field(default_factory=list)  # popped one per request
    ignore_range: bool = False
    ignore_if_range: bool = False
    stall_before_headers: bool = False
    stall_after: int | None = None  # body bytes, then hold the connection open
    cut_after: int | None = None  # body bytes, then close the connection
    shift_range: int = 0
    content_encoding: str | None = None
    no_length: bool = False
    rate: int | None = None  # bytes per second: a slow link (the demo shows its progress)


@dataclasses.dataclass
class Entry:
    data: bytes
    etag: str | None
    last_modified: str | None
    redirect: str | None = None


class FirmwareHttpServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.files: dict[str, Entry] = {}
        self.faults = Faults()
        self.requests: list[Served] = []
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(_Handler):
            server_owner = owner

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, addr = self.socket.accept()
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                return sock, addr

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # failed handshakes and reset connections are part of the tests

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FirmwareHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str, host: str = "127.0.0.1", userinfo: str = "") -> str:
        return f"{self.scheme}://{userinfo}{host}:{self.port}{path}"

    def put(
        self,
        path: str,
        data: bytes,
        *,
        etag: str | bool | None = True,
        last_modified: str | bool | None = True,
    ) -> None:
        """Publish `data`; a new version gets a new strong ETag and Last-Modified."""
        if etag is True:
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if last_modified is True:
            last_modified = email.utils.formatdate(time.time() - len(self.files), usegmt=True)
        self.files[path] = Entry(data, etag or None, last_modified or None)

    def redirect(self, path: str, location: str) -> None:
        self.files[path] = Entry(b"", None, None, redirect=location)

    def record(self, served: Served) -> None:
        with self._lock:
            self.requests.append(served)

    def sent(self, path: str | None = None) -> int:
        return sum(r.sent for r in self.requests if path is None or r.path == path)


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    server_owner: FirmwareHttpServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server_owner
        served = Served(self.path.split("?")[0], dict(self.headers.items()))
        owner.record(served)
        faults = owner.faults
        if faults.stall_before_headers:
            self._stall(served)
            return
        if faults.statuses:
            served.status = faults.statuses.pop(0)
            self._plain(served.status, b"injected failure\n")
            return
        entry = owner.files.get(served.path)
        if entry is None:
            served.status = 404
            self._plain(404, b"no such firmware\n")
            return
        if entry.redirect is not None:
            served.status = 302
            self.send_response(302)
            self.send_header("Location", entry.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, start, status = entry.data, 0, 200
        wanted = _RANGE.match(self.headers.get("Range", ""))
        if wanted and not faults.ignore_range:
            if_range = self.headers.get("If-Range")
            valid = (entry.etag, entry.last_modified)
            if if_range is None or faults.ignore_if_range or if_range in valid:
                start, status = int(wanted.group(1)), 206
        if status == 206 and start >= len(data):
            served.status = 416
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        served.status = status
        self.send_response(status)
        if entry.etag:
            self.send_header("ETag", entry.etag)
        if entry.last_modified:
            self.send_header("Last-Modified", entry.last_modified)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            shown = start + faults.shift_range
            self.send_header("Content-Range", f"bytes {shown}-{len(data) - 1}/{len(data)}")
        if not faults.no_length:
            self.send_header("Content-Length", str(len(body)))
        if faults.content_encoding:
            self.send_header("Content-Encoding", faults.content_encoding)
        self.end_headers()
        self._body(served, body)

    def _body(self, served: Served, body: bytes) -> None:
        faults = self.server_owner.faults
        limit = len(body)
        for cut in (faults.cut_after, faults.stall_after):
            if cut is not None:
                limit = min(limit, cut)
        view = memoryview(body)
        try:
            for offset in range(0, limit, 65536):
                piece = view[offset : min(offset + 65536, limit)]
                self.wfile.write(piece)
                served.sent += len(piece)
                if faults.rate:
                    time.sleep(len(piece) / faults.rate)
            if faults.stall_after is not None and limit < len(body):
                self.wfile.flush()
                self._stall(served)
                return
            if faults.cut_after is not None and limit < len(body):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _stall(self, served: Served) -> None:
        """Hold the connection until released, noting when the client closes it."""
        owner = self.server_owner
        owner.stalled.set()
        deadline = time.monotonic() + STALL_LIMIT
        while not owner.release.wait(0.02) and time.monotonic() < deadline:
            if self._peer_closed():
                served.closed_at = time.time()
                return

    def _peer_closed(self) -> bool:
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
        except ConnectionError:
            return True
        except (OSError, ValueError):
            return False

    def _plain(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)
