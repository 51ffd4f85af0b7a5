"""The API's Unix socket: connections, peer credentials, framing, bounds, event delivery.

One thread (`selectors`) owns every connection. It never runs a method: each request line is
handed to `dispatch` (the daemon's loop thread answers it and calls `reply`), so replies keep
the order of their requests. Durable events are read from the event log and written to each
connection that said `hello`, in `seq` order, as far as the holds allow (`hold`/`release`);
before a reply is written, every event deliverable by then is written first.

Bounds: `max_clients` connections, `MAX_LINE` bytes a line, `MAX_PENDING` requests awaiting
their reply and `MAX_OUTPUT` bytes unsent a connection (beyond either the connection is not
read; durable events wait in the log, live ones are dropped). A connection that takes none of
its output for `SEND_TIMEOUT` seconds, or has not taken its last (error) line `CLOSE_TIMEOUT`
seconds after it, is closed: a host that stopped reading does not keep its place among the
`max_clients`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import grp
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.api.events import EventLog, entry_seq, wire_event
from agent.api.protocol import BUSY, FORBIDDEN, LINE_TOO_LONG, MAX_LINE, encode, error_line

LOG = logging.getLogger(__name__)
MAX_PENDING = 32
MAX_OUTPUT = 1 << 20
SEND_TIMEOUT = 30.0  # seconds a connection may leave its output untouched
CLOSE_TIMEOUT = 5.0  # seconds a connection closed after an error line may take to read it
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not named by Python 3.11
MAX_GROUPS = 256
MAX_SOCKET_PATH = 107  # sun_path, less its terminating NUL


class SocketError(Exception):
    """The socket cannot be made (path, group, another agent listening)."""


def resolve_group(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise SocketError(f"no group named {text!r} (create it, or give a numeric gid)") from None


@dataclasses.dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid} gid {self.gid}"


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    groups: tuple[int, ...] = ()
    with contextlib.suppress(OSError):  # an older kernel: the primary group only
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * MAX_GROUPS)
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return Peer(pid, uid, gid, groups)


@dataclasses.dataclass
class _Client:
    number: int
    sock: socket.socket
    peer: Peer
    rbuf: bytearray = dataclasses.field(default_factory=bytearray)
    wbuf: bytearray = dataclasses.field(default_factory=bytearray)
    pending: int = 0  # requests handed on, not yet answered
    subscribed: bool = False  # said hello: events are written to it
    sent_seq: int = 0  # the last durable event written to it
    closing: bool = False  # close once wbuf is written
    write_by: float | None = None  # unsent output must move by then (monotonic)
    close_by: float | None = None  # closing: closed by then, written or not

    @property
    def readable(self) -> bool:
        return not self.closing and self.pending < MAX_PENDING and len(self.wbuf) < MAX_OUTPUT


@dataclasses.dataclass(frozen=True)
class _Reply:
    client: int
    line: bytes
    subscribe: bool = False
    live: tuple[dict[str, Any], ...] = ()
    unhold: int | None = None  # the hold that ends once this line is written


@dataclasses.dataclass
class _Hold:
    request_id: int
    first_seq: int
    until: float
    token: int = 0


# dispatch(client number, request line): the line is answered by a later `reply`.
Dispatch = Callable[[int, bytes], None]


class ApiServer:
    def __init__(
        self,
        path: Path,
        group: str,
        max_clients: int,
        events: EventLog,
        dispatch: Dispatch,
        *,
        send_timeout: float = SEND_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.path = path
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._group_name = group
        self._max_clients = max_clients
        self._events = events
        self._dispatch = dispatch
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()  # guards the three below, shared with other threads
        self._replies: list[_Reply] = []
        self._live: list[dict[str, Any]] = []
        self._holds: list[_Hold] = []
        self._hold_tokens = 0
        self._clients: dict[int, _Client] = {}
        self._numbers = 0
        self._running = False
        self._thread: threading.Thread | None = None
        self._gid = -1

    # --- the socket ---------------------------------------------------------------------------

    def start(self) -> None:
        """Make the socket (0660, root:group) and serve it; SocketError names what failed."""
        self._gid = resolve_group(self._group_name)
        path = self.path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise SocketError(f"{path}: longer than {MAX_SOCKET_PATH} bytes")
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise SocketError(f"cannot create {path.parent}: {exc.strerror}") from None
        if someone_listens(path):
            raise SocketError(f"{path}: another process is listening there (a second agent?)")
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            listener.bind(str(tmp))  # under a name nobody uses, until its mode is right
            os.chown(tmp, -1, self._gid)
            os.chmod(tmp, 0o660)
            listener.listen(16)
            os.replace(tmp, path)
        except OSError as exc:
            listener.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            why = exc.strerror or str(exc)
            if exc.errno == errno.EPERM:
                why += (
                    " (without CAP_CHOWN the daemon must be a member of the group to give it"
                    " the socket: SupplementaryGroups= in the unit, and the unit's system call"
                    " filter must allow chown: SystemCallFilter=@chown, as the shipped"
                    " examples/api-mode.conf drop-in does)"
                )
            raise SocketError(f"{path}: {why}") from None
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="api", daemon=True)
        self._thread.start()
        LOG.info("local API on %s (0660, group %s)", path, self._group_name)

    def stop(self) -> None:
        self._running = False
        self.wake()
        if self._thread is not None:
            self._thread.join(5)
        for client in list(self._clients.values()):
            self._close(client)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    @property
    def clients(self) -> int:
        return len(self._clients)

    # --- from other threads -------------------------------------------------------------------

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def reply(
        self,
        client: int,
        message: dict[str, Any] | bytes,
        *,
        subscribe: bool = False,
        live: tuple[dict[str, Any], ...] = (),
        unhold: int | None = None,
    ) -> None:
        """The answer to the client's oldest request; `subscribe`: start (again) its events;
        `unhold`: a hold (`hold`'s token) that ends as soon as this answer is written."""
        line = message if isinstance(message, bytes) else encode(message)
        with self._lock:
            self._replies.append(_Reply(client, line, subscribe, live, unhold))
        self.wake()

    def broadcast(self, event: dict[str, Any]) -> None:
        """A live event (no seq, no ack) for every subscribed connection with room for it."""
        with self._lock:
            self._live.append(event)
        self.wake()

    def hold(self, request_id: int, first_seq: int, seconds: float) -> int:
        """Events from `first_seq` on wait until `release(request_id)` or `seconds` passed;
        the token names this hold for `drop_hold` and `reply(unhold=)`."""
        with self._lock:
            self._hold_tokens += 1
            token = self._hold_tokens
            until = time.monotonic() + seconds
            self._holds.append(_Hold(request_id, first_seq, until, token))
        return token

    def drop_hold(self, token: int) -> None:
        with self._lock:
            self._holds = [h for h in self._holds if h.token != token]
        self.wake()

    def release(self, request_id: int) -> bool:
        with self._lock:
            kept = [h for h in self._holds if h.request_id != request_id]
            released = len(kept) != len(self._holds)
            self._holds = kept
        self.wake()
        return released

    # --- the thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        while self._running:
            for key, mask in self._selector.select(self._timeout()):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                else:
                    client = self._clients.get(key.data)
                    if client is not None and mask & selectors.EVENT_WRITE:
                        self._flush(client)
                    client = self._clients.get(key.data)
                    if client is not None and mask & selectors.EVENT_READ:
                        self._read(client)
            self._deliver()
            self._expire()
            for client in list(self._clients.values()):
                self._rearm(client)

    def _timeout(self) -> float:
        with self._lock:
            until = min((h.until for h in self._holds), default=None)
        if until is None:
            return 1.0
        return max(0.0, min(1.0, until - time.monotonic()))

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the next turn tries again
                LOG.error("local API: cannot accept: %s", exc)
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        try:
            peer = peer_of(sock)
        except OSError as exc:
            LOG.warning("local API: refused a client whose credentials cannot be read: %s", exc)
            sock.close()
            return
        if not (peer.uid == 0 or peer.gid == self._gid or self._gid in peer.groups):
            LOG.warning(
                "local API: refused client %s: not root and not in group %s",
                peer,
                self._group_name,
            )
            why = f"uid {peer.uid} is not root and not in group {self._group_name}"
            _refuse(sock, FORBIDDEN, why)
            return
        if len(self._clients) >= self._max_clients:
            LOG.warning(
                "local API: refused client %s: %d clients already connected",
                peer,
                len(self._clients),
            )
            _refuse(sock, BUSY, f"{self._max_clients} clients are connected already")
            return
        sock.setblocking(False)
        self._numbers += 1
        client = _Client(self._numbers, sock, peer)
        self._clients[client.number] = client
        self._selector.register(sock, selectors.EVENT_READ, client.number)
        LOG.info("local API: client %d connected (%s)", client.number, peer)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            LOG.info("local API: client %d disconnected", client.number)
            self._close(client)
            return
        client.rbuf += data
        self._lines(client)

    def _lines(self, client: _Client) -> None:
        while client.readable:
            end = client.rbuf.find(b"\n", 0, MAX_LINE)
            if end < 0:
                if len(client.rbuf) >= MAX_LINE:
                    LOG.warning(
                        "local API: client %d sent a line over %d bytes; closing",
                        client.number,
                        MAX_LINE,
                    )
                    client.wbuf += error_line(None, LINE_TOO_LONG, f"a line over {MAX_LINE} bytes")
                    client.closing = True
                    client.close_by = time.monotonic() + self._close_timeout
                    client.rbuf.clear()
                return
            line = bytes(client.rbuf[: end + 1])
            del client.rbuf[: end + 1]
            if not line.strip():
                continue
            client.pending += 1
            self._dispatch(client.number, line)

    def _deliver(self) -> None:
        """Replies, then durable events and live ones, to whom they are due."""
        with self._lock:
            replies, self._replies = self._replies, []
            live, self._live = self._live, []
            now = time.monotonic()
            self._holds = [h for h in self._holds if h.until > now]
            barrier = min((h.first_seq for h in self._holds), default=None)
        entries = self._events.entries()
        for reply in replies:
            client = self._clients.get(reply.client)
            if client is not None:
                self._send_events(client, entries, barrier)  # what was queued before it
                client.pending -= 1
                client.wbuf += reply.line
                if reply.subscribe:
                    client.subscribed, client.sent_seq = True, 0
                    for event in reply.live:
                        client.wbuf += encode(event)
            if reply.unhold is not None:  # the answer is out (or its client gone)
                with self._lock:
                    self._holds = [h for h in self._holds if h.token != reply.unhold]
                    barrier = min((h.first_seq for h in self._holds), default=None)
        for client in list(self._clients.values()):
            self._send_events(client, entries, barrier)
            for event in live:
                if client.subscribed and len(client.wbuf) < MAX_OUTPUT:
                    client.wbuf += encode(event)
            if client.wbuf:
                self._flush(client)

    def _send_events(self, client: _Client, entries: list[Any], barrier: int | None) -> None:
        if not client.subscribed:
            return
        for entry in entries:
            seq = entry_seq(entry)
            if seq <= client.sent_seq:
                continue
            if (barrier is not None and seq >= barrier) or len(client.wbuf) >= MAX_OUTPUT:
                return
            event = wire_event(entry)
            if event is not None:
                client.wbuf += encode(event)
            client.sent_seq = seq

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        del client.wbuf[:sent]
        if sent:
            client.write_by = time.monotonic() + self._send_timeout if client.wbuf else None
        if client.closing and not client.wbuf:
            self._close(client)
        elif client.rbuf and client.readable:
            self._lines(client)  # room again: the lines it sent meanwhile

    def _expire(self) -> None:
        """Close the connections whose output stands still (their host stopped reading)."""
        now = time.monotonic()
        for client in list(self._clients.values()):
            if not client.wbuf:
                client.write_by = None
            elif client.write_by is None:
                client.write_by = now + self._send_timeout
            if client.close_by is not None and now >= client.close_by:
                LOG.warning(
                    "local API: client %d did not read its error line within %.0f s; closed",
                    client.number,
                    self._close_timeout,
                )
            elif client.write_by is not None and now >= client.write_by:
                LOG.warning(
                    "local API: client %d took none of its output (%d bytes) for %.0f s; closed",
                    client.number,
                    len(client.wbuf),
                    self._send_timeout,
                )
            else:
                continue
            self._close(client)

    def _rearm(self, client: _Client) -> None:
        if client.number not in self._clients:
            return
        mask = (selectors.EVENT_READ if client.readable else 0) | (
            selectors.EVENT_WRITE if client.wbuf else 0
        )
        if mask == 0:  # waiting for its answers with a full queue: the wake will come
            with contextlib.suppress(KeyError):
                self._selector.unregister(client.sock)
            return
        try:
            self._selector.modify(client.sock, mask, client.number)
        except KeyError:
            self._selector.register(client.sock, mask, client.number)

    def _close(self, client: _Client) -> None:
        self._clients.pop(client.number, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()


def _refuse(sock: socket.socket, code: str, message: str) -> None:
    """One error line to a peer that is not let in, then close (it is never read)."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(error_line(None, code, message))
    sock.close()


def someone_listens(path: Path) -> bool:
    """A process accepts connections on the socket at `path` (also used by the self-check)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
