"""The websocket transport to the CSMS, per OCPP 1.6 security profiles 0-3.

One background thread connects (with exponential back-off and jitter), then reads frames until
the connection drops, then backs off and connects again. It never touches protocol state: it
posts `Connected`, `Received`, `Disconnected` and `CertificateRejected` events to the daemon's
loop. Sending happens from the loop's thread (websocket-client serialises writers).

Profiles: 0 plain ws://; 1 ws:// + HTTP Basic; 2 wss:// + Basic + server certificate checked
against `ca_file` with hostname verification, TLS 1.2 or newer; 3 wss:// + client certificate.
The Basic password is the hex-DECODED AuthorizationKey (OCTT TC_085_CS). The subprotocol of
`[csms] ocpp_version` (`ocpp1.6`, `ocpp2.0.1` or `ocpp2.1`) is offered and required.

Nothing the server says changes where the charger connects or how: a redirect answer to the
handshake is refused, never followed (websocket-client follows up to 3 by default, in 1.2.3 as
in current releases, resending our headers, Basic key included, to any scheme and host).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import logging
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import websocket
from websocket._abnf import ABNF, frame_buffer  # the same names in 1.2.3 and current

from agent.config import CsmsConfig
from agent.ocpp.dialect import DIALECTS

LOG = logging.getLogger(__name__)
# The defaults of the three bounds below; each is configurable in [csms] (the Transport reads
# them from its CsmsConfig, the ranges are config.LIMITS).
# The largest legitimate CSMS message (a SignedUpdateFirmware with a certificate chain) is
# ~7 KB; anything past this is refused unread and the connection closed with 1009.
MAX_MESSAGE = 64 * 1024  # max_message_bytes
# Messages read but not yet handled by the daemon's loop. Past this the reader stops reading,
# so a flooding CSMS fills its own TCP window, not our memory.
PENDING_MESSAGES = 8  # max_pending_messages
STATUS_TOO_BIG = 1009  # RFC 6455 §7.4.1
# The server's answer to the handshake (status line and headers, ~300 bytes from a CSMS, a few
# KiB behind a load balancer's cookies) may not exceed this; websocket-client bounds neither
# its lines nor a refusal's body, and reads header lines a byte at a time (~1 ms a byte on the
# test VM: 16 KiB is refused in seconds, 64 KiB took a minute).
MAX_HANDSHAKE = 16 * 1024  # max_handshake_bytes


@dataclasses.dataclass(frozen=True)
class Connected:
    generation: int


@dataclasses.dataclass(frozen=True)
class Received:
    generation: int
    text: str


@dataclasses.dataclass(frozen=True)
class Disconnected:
    generation: int
    reason: str


@dataclasses.dataclass(frozen=True)
class CertificateRejected:
    """The CSMS's server certificate failed verification (InvalidCentralSystemCertificate)."""

    reason: str


TransportEvent = Connected | Received | Disconnected | CertificateRejected


class RedirectRefused(ConnectionError):
    """The CSMS answered the handshake with a redirect; the configured URL is the only one."""


class HandshakeTooBig(Exception):
    """The handshake answer passed max_handshake_bytes (not an OSError: websocket-client
    would inspect it as one)."""


class _Budgeted:
    """The connection's socket, made by us (so nothing but the configuration picks where it
    goes: no proxy from the environment), counting what the handshake answer brings in.

    websocket-client reads the answer through `recv`; every other attribute is the socket's.
    `lift()` ends the budget once the handshake is done: frames have their own bound."""

    def __init__(self, sock: socket.socket, budget: int) -> None:
        self._sock = sock
        self._limit = budget
        self._budget: int | None = budget

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if self._budget is not None:
            self._budget -= len(data)
            if self._budget < 0:
                raise HandshakeTooBig(
                    f"the CSMS's handshake answer over {self._limit} bytes: not read further"
                )
        return data

    def lift(self) -> None:
        self._budget = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class MessageTooBig(Exception):
    """A CSMS message longer than the limit was announced; its payload is never read."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a CSMS message of {size} bytes is over the {limit}-byte limit")
        self.size, self.limit = size, limit


class _BoundedFrames(frame_buffer):  # type: ignore[misc]
    """websocket-client's frame reader, refusing a message once its announced length passes
    `limit`, before any of its payload is read. Fragments of one message count together (a
    message split into many small frames is as big as their sum); control frames alone."""

    def __init__(self, recv: Callable[[int], bytes], skip_utf8: bool, limit: int) -> None:
        super().__init__(recv, skip_utf8)
        self.limit = limit
        self.partial = 0  # bytes announced so far by the fragments of the current message

    def recv_length(self) -> None:
        super().recv_length()
        assert self.header is not None  # recv_frame reads the header first
        fin, opcode = self.header[0], self.header[4]
        size = int(self.length or 0)
        if opcode < ABNF.OPCODE_CLOSE:
            size += self.partial if opcode == ABNF.OPCODE_CONT else 0
            self.partial = 0 if fin else size
        if size > self.limit:
            raise MessageTooBig(size, self.limit)


class _CsmsSocket(websocket.WebSocket):  # type: ignore[misc]
    """A websocket that refuses redirects on every websocket-client version.

    With `redirect_limit=0`, current releases raise "Redirect limit exhausted" while 1.2.3
    (Debian 12) returns a "connected" socket whose handshake status is 3xx. Both cases are
    turned into one `RedirectRefused` that names the status and the target. Its frame reader
    is `_BoundedFrames`."""

    def __init__(self, *args: Any, max_message: int = MAX_MESSAGE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        skip_utf8 = bool(getattr(self.frame_buffer, "skip_utf8_validation", False))
        self.frame_buffer = _BoundedFrames(self._recv, skip_utf8, max_message)

    def connect(self, url: str, **options: Any) -> None:
        options["redirect_limit"] = 0
        try:
            super().connect(url, **options)  # type: ignore[no-untyped-call]
        except websocket.WebSocketBadStatusException as exc:  # 1.2.3: 307/308 end up here
            _refuse_redirect(exc.status_code, getattr(exc, "resp_headers", None))
            raise
        except websocket.WebSocketException:
            self._refuse_redirect()
            raise
        try:
            self._refuse_redirect()
        except RedirectRefused:
            self.shutdown()  # type: ignore[no-untyped-call]
            raise

    def _refuse_redirect(self) -> None:
        response = getattr(self, "handshake_response", None)
        _refuse_redirect(getattr(response, "status", 101), getattr(response, "headers", None))


def _refuse_redirect(status: int, headers: dict[str, str] | None) -> None:
    if not 300 <= status < 400:
        return
    location = str((headers or {}).get("location", "(none)"))[:200]
    raise RedirectRefused(
        f"the CSMS answered the handshake with HTTP {status} to {location!r}: redirects are "
        "not followed (the configured URL and security profile are the only ones used)"
    )


def basic_auth_header(charge_point_id: str, key: bytes) -> str:
    """`Authorization: Basic base64(<id>:<decoded key bytes>)` (A00.FR.202, OCTT TC_085_CS)."""
    token = base64.b64encode(charge_point_id.encode("utf-8") + b":" + key).decode("ascii")
    return f"Authorization: Basic {token}"


def tls_context(csms: CsmsConfig) -> ssl.SSLContext:
    """The client TLS context for profiles 2 and 3: our CA only, hostname checked, TLS >= 1.2."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION  # A00.FR.320
    context.load_verify_locations(cafile=str(csms.ca_file))
    if csms.security_profile == 3 and csms.client_cert is not None:
        context.load_cert_chain(str(csms.client_cert), str(csms.client_key))
    return context


def reconnect_waits(low: float, high: float, jitter: Callable[[], float]) -> Iterator[float]:
    """Seconds to wait before each reconnection attempt after a failure or a loss.

    The base wait starts at `low` and doubles up to `high`; each wait lies between the base and
    twice the base (`jitter()` in [0, 1) picks where), never above `high` nor below `low`. Once
    the base nears `high` the range becomes [high / 2, high] rather than collapsing onto `high`:
    chargers that lost the CSMS together would otherwise all come back in the same second,
    every time.
    """
    base = low
    while True:
        floor = min(base, max(high / 2, low))
        ceiling = min(2 * base, high)
        yield floor + jitter() * (ceiling - floor)
        base = min(2 * base, high)


class Transport:
    """Keeps a websocket to the CSMS open, reconnecting with back-off; events go to `post`."""

    def __init__(
        self,
        csms: CsmsConfig,
        post: Callable[[TransportEvent], None],
        *,
        jitter: Callable[[], float] = random.random,
        settings: Callable[[], CsmsConfig] | None = None,
    ) -> None:
        self._csms = csms
        # What each attempt uses: the configured settings, or those the CSMS changed over OCPP
        # (profile, AuthorizationKey, CA stores: agent.security.credentials).
        self._settings = settings or (lambda: csms)
        self._endpoint = csms.endpoint  # of the last attempt, for the log
        self._post = post
        self._jitter = jitter
        self._max_message = csms.max_message_bytes
        self._credits = threading.Semaphore(csms.max_pending_messages)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ws: Any = None
        self._generation = 0
        # Why the last connection failed or ended, for `ocpp-fw-agent status` while offline.
        # Written by the transport thread only; a str assignment is atomic for the reader.
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="csms-transport", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Close the connection and end the thread (used on SIGTERM)."""
        self._stop.set()
        self._close_socket()
        self._thread.join(timeout=5)

    def consumed(self) -> None:
        """The loop handled one `Received`: the reader may read one more message."""
        self._credits.release()

    def _take_credit(self) -> bool:
        """Wait until fewer than max_pending_messages await the loop; False on stop."""
        while not self._credits.acquire(timeout=0.2):
            if self._stop.is_set():
                return False
        return True

    def send(self, text: str) -> None:
        """Send one text frame; raises when not connected (the session treats it as a loss)."""
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        ws.send(text)

    def ping(self) -> None:
        ws = self._ws
        if ws is not None:
            try:
                ws.ping()
            except Exception as exc:
                LOG.info("ping failed: %s", exc)
                self._close_socket()

    def peer_certificate(self) -> bytes | None:
        """The CSMS's TLS server certificate (DER) on the current connection, if any."""
        ws = self._ws
        sock = getattr(ws, "sock", None)
        getpeercert = getattr(sock, "getpeercert", None)
        if getpeercert is None:
            return None
        try:
            der = getpeercert(binary_form=True)
        except (OSError, ValueError):
            return None
        return der if isinstance(der, bytes) else None

    def drop(self) -> None:
        """Close the current connection; the thread reconnects after its back-off."""
        self._close_socket()

    def _close_socket(self) -> None:
        with self._lock:
            ws, self._ws = self._ws, None
        if ws is None:
            return
        # Never ws.close() here: it waits for the peer's close frame under the read lock the
        # reader thread holds. Send our close frame, then abort to wake the blocked reader.
        for step in (ws.send_close, ws.abort):
            try:
                step()
            except Exception as exc:
                LOG.debug("closing: %s", exc)

    def _connect(self) -> Any:
        csms = self._settings()
        self._endpoint = csms.endpoint
        subprotocol = DIALECTS[csms.ocpp_version].subprotocol
        options: dict[str, Any] = {
            "timeout": csms.call_timeout,
            "subprotocols": [subprotocol],
            "enable_multithread": True,
            "suppress_origin": True,
        }
        if csms.security_profile in (1, 2) and csms.authorization_key is not None:
            options["header"] = [basic_auth_header(csms.charge_point_id, csms.authorization_key)]
        sock = _Budgeted(self._open_socket(csms), csms.max_handshake_bytes)
        make: Any = functools.partial(_CsmsSocket, max_message=self._max_message)
        try:
            ws = websocket.create_connection(csms.endpoint, class_=make, socket=sock, **options)
        except BaseException:
            sock.close()
            raise
        sock.lift()
        if ws.getsubprotocol() != subprotocol:
            ws.close()
            raise ConnectionError(f"the CSMS did not agree to subprotocol {subprotocol}")
        # recv() times out when neither data nor a pong arrived for two ping intervals.
        ws.settimeout(max(2 * csms.ping_interval, 30.0) if csms.ping_interval > 0 else None)
        return ws

    def _open_socket(self, csms: CsmsConfig) -> socket.socket:
        """TCP (and for profiles 2 and 3 TLS, server name checked) to the configured URL."""
        parts = urllib.parse.urlsplit(csms.endpoint)
        secure = parts.scheme == "wss"
        host = parts.hostname or ""
        sock = socket.create_connection(
            (host, parts.port or (443 if secure else 80)), timeout=csms.call_timeout
        )
        if not secure:
            return sock
        try:
            return tls_context(csms).wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    def _run(self) -> None:
        waits = reconnect_waits(self._csms.reconnect_min, self._csms.reconnect_max, self._jitter)
        rejected_reported = False
        while not self._stop.is_set():
            try:
                ws = self._connect()
            except ssl.SSLCertVerificationError as exc:
                self.last_error = f"CSMS certificate rejected: {exc.verify_message or exc}"
                LOG.error("CSMS certificate rejected: %s", exc.verify_message or exc)
                if not rejected_reported:  # once per run of failures (A00.FR.309 note)
                    self._post(CertificateRejected(str(exc.verify_message or exc)[:200]))
                    rejected_reported = True
            except Exception as exc:
                self.last_error = f"cannot connect to {self._endpoint}: {_describe(exc)}"
                LOG.warning("%s", self.last_error)
            else:
                rejected_reported = False
                waits = reconnect_waits(
                    self._csms.reconnect_min, self._csms.reconnect_max, self._jitter
                )
                self._serve(ws)
                if self._stop.is_set():
                    break
            self._stop.wait(next(waits))

    def _serve(self, ws: Any) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._ws = ws
        LOG.info("connected to %s", self._endpoint)
        self._post(Connected(generation))
        reason = "closed"
        try:
            while self._take_credit():
                try:
                    text = ws.recv()
                except BaseException:
                    self._credits.release()
                    raise
                if not text:  # close frame, or an empty message we cannot act on
                    self._credits.release()
                    if not ws.connected:
                        break
                    continue
                if isinstance(text, bytes):
                    text = text.decode("utf-8", errors="replace")
                self._post(Received(generation, text))
        except MessageTooBig as exc:
            reason = f"{exc}, closed with {STATUS_TOO_BIG} (message too big)"
            with contextlib.suppress(Exception):
                ws.send_close(STATUS_TOO_BIG, b"message too big")
                _discard_until_closed(ws.sock)
        except Exception as exc:
            reason = _describe(exc)
        self._close_socket()
        try:
            ws.shutdown()
        except Exception as exc:
            LOG.debug("shutdown: %s", exc)
        if not self._stop.is_set():
            self.last_error = f"disconnected from the CSMS: {reason}"
            LOG.warning("%s", self.last_error)
        self._post(Disconnected(generation, reason))


def _discard_until_closed(sock: Any, seconds: float = 2.0, limit: int = 8 << 20) -> None:
    """After our close frame, read and drop what the peer still sends until it closes, for a
    moment and a few MiB at most. Closing with unread data would send a TCP reset, and the
    peer could lose our close frame (and its 1009) with it."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while limit > 0 and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return
        limit -= len(data)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
