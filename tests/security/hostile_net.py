"""Hostile peers for the network attack tests: raw TCP/TLS servers that say exactly what a test
scripts, record every byte they receive, and helpers that read a process's memory and threads.

`agent.demo.fileserver` and `agent.demo.csms` are well-behaved servers with injected faults; an
attacker is not bound by HTTP or websocket framing, so these speak raw bytes on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from agent.demo import pki
from tests.e2e.conftest import wait_until

__all__ = [
    "NotifySink",
    "Peer",
    "RawServer",
    "peak_rss_mib",
    "record_all",
    "server_tls",
    "threads",
    "wait_until",
]

Handler = Callable[["Peer"], None]


class Peer:
    """One accepted connection: its socket and where what it sends is recorded."""

    def __init__(self, sock: socket.socket, server: RawServer, index: int) -> None:
        self.sock, self.server, self.index = sock, server, index

    def note(self, data: bytes) -> None:
        with self.server.lock:
            self.server.received[self.index] += data

    def read_head(self) -> bytes:
        """Read a request head (up to the blank line); record it."""
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(4096)
            if not data:
                break
            head += data
            self.note(data)
        return head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


class RawServer:
    """Accepts connections on a loopback address and runs `handler(peer)` for each, in a thread.

    `received` holds what each connection sent (as far as its handler read it);
    `connections` counts accepted connections (a host that must never be contacted keeps 0).
    """

    def __init__(
        self, handler: Handler, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        self.done = threading.Event()  # handlers that hold a connection end when this is set
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.received.append(b"")
                index = len(self.received) - 1
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(10)
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(10)
            self.handler(Peer(conn, self, index))
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def everything(self) -> bytes:
        with self.lock:
            return b"".join(self.received)


def record_all(peer: Peer) -> None:
    """A handler that only listens: whatever arrives is recorded, nothing is answered."""
    while not peer.server.done.is_set():
        try:
            data = peer.sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return
        peer.note(data)


class NotifySink:
    """Stands in for PID 1's notify socket (the daemon's watchdog needs one): reads and drops."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nfy"))  # AF_UNIX paths are short
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        threading.Thread(target=self._drop, daemon=True).start()

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            while self.sock.recv(4096):
                pass

    def __enter__(self) -> NotifySink:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


def status_of(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had, in MiB."""
    return int(status_of(pid)["VmHWM"].split()[0]) / 1024


def threads(pid: int) -> int:
    return int(status_of(pid)["Threads"].strip())


def server_tls(directory: Path, host: str = "localhost") -> tuple[ssl.SSLContext, Path]:
    """A server context for `host` under a fresh CA; returns it and the CA file to trust."""
    ca = pki.issue("Hostile Test CA", pki.ec_key("secp256r1", 41), ca=True)
    leaf = pki.issue(host, pki.ec_key("secp256r1", 42), ca, sans=[host])
    cert, key, ca_file = directory / "srv.pem", directory / "srv.key", directory / "ca.pem"
    cert.write_text(leaf.pem)
    key.write_bytes(leaf.key_pem)
    ca_file.write_text(ca.pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, ca_file
