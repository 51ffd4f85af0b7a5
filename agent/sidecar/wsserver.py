"""The local websocket server the charger's OCPP stack connects to (RFC 6455, stdlib only).

Just enough of the protocol for one trusted-but-checked local peer: one subprotocol (the
`[csms] ocpp_version` the agent speaks to the CSMS, `ocpp1.6` by default; a stack that does
not offer it is refused at the handshake), masked text frames, fragmentation, ping/pong and
close. Every bound the CSMS side has holds here too: a message longer than MAX_MESSAGE is
refused (1009) unread, the handshake is size- and time-bounded, and at most PENDING_MESSAGES
messages wait for the daemon's loop (past that the reader stops reading). One stack at a
time: a second connection is refused with HTTP 409 and one log line; while the CSMS is
unreachable the handshake is refused with 503, so the stack sees its own link down exactly
as it would without the agent in between.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable

from agent.ocpp.connection import MAX_MESSAGE, PENDING_MESSAGES, STATUS_TOO_BIG

LOG = logging.getLogger(__name__)
SUBPROTOCOL = "ocpp1.6"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
HANDSHAKE_LIMIT = 8192
HANDSHAKE_SECONDS = 10.0  # for the whole upgrade request, not per read
HANDSHAKES = 4  # connections in their handshake at once; more are closed at once
SEND_SECONDS = 10  # a stack that stops reading blocks the daemon's loop no longer than this
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
STATUS_PROTOCOL, STATUS_UNSUPPORTED, STATUS_BAD_DATA = 1002, 1003, 1007


@dataclasses.dataclass(frozen=True)
class StackConnected:
    generation: int
    path: str


@dataclasses.dataclass(frozen=True)
class StackReceived:
    generation: int
    text: str


@dataclasses.dataclass(frozen=True)
class StackDisconnected:
    generation: int
    reason: str


StackEvent = StackConnected | StackReceived | StackDisconnected


class _Closed(Exception):
    """The peer closed, broke the protocol or went away; `status` is our close code."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class StackServer:
    """Listens on `address`; events go to `post`; `send` from the loop's thread."""

    def __init__(
        self,
        address: tuple[str, int],
        charge_point_id: str,
        post: Callable[[StackEvent], None],
        accepting: Callable[[], bool],
        *,
        max_message: int = MAX_MESSAGE,
        subprotocol: str = SUBPROTOCOL,
    ) -> None:
        self._address = address
        self._subprotocol = subprotocol
        self._charge_point_id = charge_point_id
        self._post = post
        self._accepting = accepting
        self._max_message = max_message
        self._credits = threading.Semaphore(PENDING_MESSAGES)
        self._lock = threading.Lock()  # guards _conn and serialises writers
        self._conn: socket.socket | None = None
        self._generation = 0
        self._stop = threading.Event()
        self._handshakes = threading.BoundedSemaphore(HANDSHAKES)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._thread = threading.Thread(target=self._accept_loop, name="stack-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        self._listener.bind(self._address)
        self._listener.listen(4)
        self._listener.settimeout(0.5)
        LOG.info("sidecar: waiting for the charger's OCPP stack on %s:%d", *self._address)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.drop()
        self._thread.join(timeout=5)
        self._listener.close()

    def consumed(self) -> None:
        """The loop handled one StackReceived: the reader may read one more message."""
        self._credits.release()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def send(self, text: str) -> None:
        """One text frame to the stack; raises ConnectionError when none is connected."""
        self._send_frame(OP_TEXT, text.encode("utf-8"))

    def drop(self, status: int = 1001, reason: str = "going away") -> None:
        """Close the stack's connection (it reconnects when it likes)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            with contextlib.suppress(OSError):
                conn.sendall(_frame(OP_CLOSE, struct.pack("!H", status) + reason.encode()))
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        with self._lock:
            if self._conn is None:
                raise ConnectionError("the charging stack is not connected")
            self._conn.sendall(_frame(opcode, payload))

    # --- accepting --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self._handshakes.acquire(blocking=False):
                LOG.warning("sidecar: refused %s: %d handshakes under way", peer[0], HANDSHAKES)
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn, peer), name="stack-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with conn:
            try:
                path, refusal = self._handshake(conn)
            except (OSError, _Closed, UnicodeDecodeError) as exc:
                LOG.warning("sidecar: handshake from %s failed: %s", peer[0], exc)
                return
            finally:
                self._handshakes.release()
            if refusal:
                return
            with self._lock:
                self._generation += 1
                generation = self._generation
            LOG.info("sidecar: the charging stack connected from %s:%d", *peer[:2])
            self._post(StackConnected(generation, path))
            reason = self._read_messages(conn, generation)
            with self._lock:
                if self._conn is conn:
                    self._conn = None
            LOG.warning("sidecar: the charging stack disconnected: %s", reason)
            self._post(StackDisconnected(generation, reason))

    def _handshake(self, conn: socket.socket) -> tuple[str, bool]:
        """Read the upgrade request and answer it; (path, refused)."""
        deadline = time.monotonic() + HANDSHAKE_SECONDS
        data = b""
        while b"\r\n\r\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Closed(f"no complete handshake within {HANDSHAKE_SECONDS:.0f}s")
            conn.settimeout(remaining)
            chunk = conn.recv(1024)
            if not chunk:
                raise _Closed("closed during the handshake")
            data += chunk
            if len(data) > HANDSHAKE_LIMIT:
                _respond(conn, 431, "Request Header Fields Too Large")
                raise _Closed(f"handshake over {HANDSHAKE_LIMIT} bytes")
        head = data.split(b"\r\n\r\n", 1)[0].decode("iso-8859-1")
        request_line, *lines = head.split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        method, _, rest = request_line.partition(" ")
        path = rest.partition(" ")[0]
        protocols = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        key = headers.get("sec-websocket-key", "")
        problem = ""
        if method != "GET" or "websocket" not in headers.get("upgrade", "").lower() or not key:
            problem, status = "not a websocket upgrade", 400
        elif headers.get("sec-websocket-version") != "13":
            problem, status = "websocket version is not 13", 426
        elif self._subprotocol not in protocols:
            offered = ", ".join(p for p in protocols if p)[:100] or "none"
            problem = (
                f"the stack did not offer subprotocol {self._subprotocol} (offered: {offered})"
            )
            status = 400
        elif path.rstrip("/").rsplit("/", 1)[-1] != _quoted(self._charge_point_id):
            problem, status = f"path {path[:100]!r} does not end with our charge point id", 404
        elif not self._accepting():
            problem, status = "the CSMS is not connected (the stack will retry)", 503
        if not problem:
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            with self._lock:
                # The slot is checked, taken and the 101 sent under one lock: a second stack's
                # handshake finds it taken (409) even when it arrives before this one's 101 is
                # out, and no frame for the stack can go out before the 101.
                if self._conn is not None:
                    problem, status = "a charging stack is already connected; one at a time", 409
                else:
                    conn.settimeout(None)  # reads block; sends give up after SEND_SECONDS
                    send_limit = struct.pack("ll", SEND_SECONDS, 0)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, send_limit)
                    conn.sendall(
                        (
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                            f"Sec-WebSocket-Protocol: {self._subprotocol}\r\n\r\n"
                        ).encode()
                    )
                    self._conn = conn
        if problem:
            LOG.warning("sidecar: refused a stack connection: %s", problem)
            _respond(conn, status, problem)
            return path, True
        return path, False

    # --- reading ----------------------------------------------------------------------------

    def _read_messages(self, conn: socket.socket, generation: int) -> str:
        reader = _FrameReader(conn, self._max_message)
        try:
            while True:
                if not self._take_credit():
                    return "stopping"
                try:
                    opcode, payload = reader.message()
                except BaseException:
                    self._credits.release()
                    raise
                if opcode == OP_PING:
                    self._credits.release()
                    self._send_frame(OP_PONG, payload)
                    continue
                if opcode == OP_PONG:
                    self._credits.release()
                    continue
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._credits.release()
                    raise _Closed("a text message is not UTF-8", STATUS_BAD_DATA) from None
                self._post(StackReceived(generation, text))
        except _Closed as exc:
            with self._lock:
                ours = self._conn is conn
                if ours:
                    self._conn = None
                    with contextlib.suppress(OSError):
                        code = struct.pack("!H", exc.status or 1000)
                        conn.sendall(_frame(OP_CLOSE, code + str(exc)[:100].encode()))
            if ours:
                _discard_until_closed(conn)
            return str(exc)
        except (OSError, ConnectionError) as exc:
            return f"{type(exc).__name__}: {exc}"

    def _take_credit(self) -> bool:
        while not self._credits.acquire(timeout=0.2):
            if self._stop.is_set():
                return False
        return True


class _FrameReader:
    """Reads whole messages (fragments joined); control frames are returned as they come."""

    def __init__(self, conn: socket.socket, limit: int) -> None:
        self._conn = conn
        self._limit = limit
        # The message being assembled: a control frame may arrive between its fragments.
        self._parts: list[bytes] = []
        self._first = -1
        self._total = 0

    def _exact(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self._conn.recv(min(left, 65536))
            if not chunk:
                raise _Closed("the connection ended")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def message(self) -> tuple[int, bytes]:
        while True:
            b0, b1 = self._exact(2)
            fin, opcode, masked, length = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if b0 & 0x70:
                raise _Closed("reserved bits set (no extension was agreed)", STATUS_PROTOCOL)
            if not masked:
                raise _Closed("an unmasked client frame", STATUS_PROTOCOL)
            if length == 126:
                length = struct.unpack("!H", self._exact(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._exact(8))[0]
            if opcode >= OP_CLOSE:
                if length > 125 or not fin:
                    raise _Closed("a malformed control frame", STATUS_PROTOCOL)
                payload = _unmask(self._exact(4), self._exact(length))
                if opcode == OP_CLOSE:
                    raise _Closed("the stack closed the connection", 1000)
                if opcode in (OP_PING, OP_PONG):
                    return opcode, payload
                raise _Closed(f"unknown control opcode {opcode}", STATUS_PROTOCOL)
            if (opcode == OP_CONT) != (self._first >= 0):
                raise _Closed("a continuation frame out of place", STATUS_PROTOCOL)
            if opcode not in (OP_CONT, OP_TEXT):
                status = STATUS_UNSUPPORTED if opcode == OP_BINARY else STATUS_PROTOCOL
                raise _Closed(f"opcode {opcode} (OCPP-J uses text frames only)", status)
            self._total += length
            if self._total > self._limit:
                raise _Closed(
                    f"a stack message of {self._total} bytes is over the {self._limit}-byte limit",
                    STATUS_TOO_BIG,
                )
            if self._first < 0:
                self._first = opcode
            self._parts.append(_unmask(self._exact(4), self._exact(length)))
            if fin:
                message = self._first, b"".join(self._parts)
                self._parts, self._first, self._total = [], -1, 0
                return message


def _discard_until_closed(conn: socket.socket, seconds: float = 2.0, limit: int = 1 << 20) -> None:
    """After our close frame, drop what the stack still sends, a moment and 1 MiB at most:
    closing with unread data sends a TCP reset, which could destroy our close frame."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(seconds)
        while limit > 0 and (data := conn.recv(65536)):
            limit -= len(data)


def _unmask(mask: bytes, data: bytes) -> bytes:
    if not data:
        return data
    key = int.from_bytes((mask * (len(data) // 4 + 1))[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


def _frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked server frame."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


def _respond(conn: socket.socket, status: int, reason: str) -> None:
    body = reason.encode("utf-8", "replace") + b"\n"
    with contextlib.suppress(OSError):
        conn.sendall(
            f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain\r\nContent-Length: "
            f"{len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )


def _quoted(charge_point_id: str) -> str:
    return urllib.parse.quote(charge_point_id, safe="")
