"""A real OCSP responder on loopback for the tests: HTTP POST (RFC 6960 A.1), answers built by
cryptography's OCSPResponseBuilder, signed as `answer` says; it can misbehave on the wire too
(redirect, oversized or endless body, dribble, hang).
"""

from __future__ import annotations

import dataclasses
import http.server
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.x509 import ocsp

Answer = Callable[[ocsp.OCSPRequest], bytes]


@dataclasses.dataclass
class Asked:
    path: str
    serial: int | None  # the serial the request asked about (None if it did not parse)
    nonce: bytes | None
    content_type: str = ""
    nonce_critical: bool | None = None  # a responder that does not know a critical one refuses


class OcspServer:
    """`answer(request) -> DER` builds the response; `wire` says how it is sent:
    "ok", "redirect" (a 302; "redirect 300" another code), "status 400" (that code, no body),
    "endless" (200 without a length, bytes until the client leaves), "unsized" (the answer
    without a length, ended by closing), "short" (the answer, 100 bytes fewer than announced),
    "announced" (a 2 MiB Content-Length), "chunked and sized" (the whole answer in chunks, with
    a Content-Length 100 bytes short of it, which http.client ignores), "dribble" (a byte every
    50 ms), "hang" (nothing), "held" (the answer, once the test sets `released`; `holding` is
    set when one waits)."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.scheme = "https" if tls is not None else "http"
        self.wire = "ok"
        self.asked: list[Asked] = []
        self.released = threading.Event()
        self.holding = threading.Event()
        self.location = ""  # a redirect's Location; empty: /elsewhere on this server
        self.dribbled_whole: bool | None = None  # whether a dribbled answer was sent whole
        self.dribble_ended = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    request = ocsp.load_der_ocsp_request(body)
                    nonce = request.extensions.get_extension_for_class(x509.OCSPNonce)
                    kind = self.headers.get("Content-Type", "")
                    serial = request.serial_number
                    asked = Asked(self.path, serial, nonce.value.nonce, kind, nonce.critical)
                    server.asked.append(asked)
                except (ValueError, x509.ExtensionNotFound):
                    server.asked.append(Asked(self.path, None, None))
                    self.send_error(400)
                    return
                try:
                    server.send(self, request)
                except OSError:  # the client hung up (as it must on an endless body)
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/ocsp", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def send(self, handler: http.server.BaseHTTPRequestHandler, request: ocsp.OCSPRequest) -> None:
        wire = self.wire
        if wire == "hang":
            self.released.wait(60)
            return
        if wire == "held":
            self.holding.set()
            self.released.wait(60)
        if wire.startswith(("redirect", "status ")):  # "redirect" is a 302
            handler.send_response(int(wire.split()[1]) if " " in wire else 302)
            if wire.startswith("redirect"):
                handler.send_header("Location", self.location or self.url("/elsewhere"))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/ocsp-response")
        if wire == "endless":
            handler.send_header("Connection", "close")
            handler.end_headers()
            chunk = b"\x30" * 65536
            while not self.released.is_set():
                handler.wfile.write(chunk)
            return
        if wire == "announced":
            handler.send_header("Content-Length", str(2 << 20))
            handler.end_headers()
            return  # the client must refuse it unread
        body = self.answer(request)
        if wire == "chunked and sized":  # chunks, and a Content-Length 100 bytes short of them
            handler.send_header("Transfer-Encoding", "chunked")
            handler.send_header("Content-Length", str(len(body) - 100))
            handler.end_headers()
            handler.wfile.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body))
            return
        if wire != "unsized":  # unsized: no length, the body ends where the connection does
            announced = len(body) + (100 if wire == "short" else 0)  # short: 100 bytes early
            handler.send_header("Content-Length", str(announced))
        if wire in ("unsized", "short"):  # the whole answer, then the connection ends
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(body)
            handler.close_connection = True
            return
        handler.end_headers()
        if wire == "dribble":
            try:
                for index in range(len(body)):
                    if self.released.is_set():
                        return
                    handler.wfile.write(body[index : index + 1])
                    handler.wfile.flush()
                    time.sleep(0.05)  # the slow responder itself, not a wait in a test
                self.dribbled_whole = True
            except OSError:  # the client cut the exchange off
                self.dribbled_whole = False
                raise
            finally:
                self.dribble_ended.set()
            return
        handler.wfile.write(body)

    def __enter__(self) -> OcspServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
