"""One bounded HTTP exchange for the online revocation checks (a CRL, an OCSP answer).

The URL comes from a certificate the manufacturer root signed (or from the configuration), not
from the CSMS, but the server at the other end is still treated as hostile. It gets the
guards of a firmware download, reused from the fetcher rather than written again
(`FetchSettings.check_url` and `open_connection`, `fetch_http.make_session`):

* http and https only; `[firmware] allowed_hosts`, when set, must name the host;
* loopback, link-local and unspecified addresses are refused after name resolution unless
  `allowed_hosts` names them, and the connection goes to the address that was checked;
* TLS verified against the system store plus `[firmware] ca_file`; no proxy or netrc from the
  environment.

And tighter ones of its own, as the answer is small and must come before the request is
answered: no redirect is followed (nor its body read), the answer is at most `max_bytes` (a
larger Content-Length is refused unread), and the whole exchange (connect, ask, read) ends at
`timeout`: a server that stalls or dribbles is cut off by shutting its socket down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
from pathlib import Path

import requests
import urllib3.exceptions

from agent.firmware.errors import DownloadError
from agent.firmware.fetch_base import FetchSettings, redact_url, tls_context
from agent.firmware.fetch_http import make_session

MAX_BYTES = 1 << 20
_CHUNK = 64 * 1024


class OnlineFailed(Exception):
    """No usable answer; the message says why (for the log and techInfo)."""


@dataclasses.dataclass(frozen=True)
class Guards:
    """What bounds an exchange; `hosts` and `ca_file` are the download settings', `timeout`
    (seconds for the whole exchange) is `[firmware] online_timeout`."""

    hosts: tuple[str, ...]
    ca_file: Path | None
    timeout: float
    max_bytes: int = MAX_BYTES


def exchange(
    url: str, guards: Guards, *, body: bytes | None = None, content_type: str = ""
) -> bytes:
    """GET `url` (or POST `body`) and return the answer's body; raise OnlineFailed."""
    settings = FetchSettings(
        connect_timeout=guards.timeout,
        stall_timeout=guards.timeout,
        ca_file=guards.ca_file,
        allowed_schemes=("https", "http"),
        allowed_hosts=guards.hosts,
    )
    shown = redact_url(url)
    opened: list[socket.socket] = []
    lock = threading.Lock()
    expired = threading.Event()

    def connect(host: str, port: int) -> socket.socket:
        sock = settings.open_connection(host, port)
        with lock:
            opened.append(sock)
            if expired.is_set():
                _shut(sock)
        return sock

    def cut() -> None:
        with lock:
            expired.set()
            for sock in opened:
                _shut(sock)

    session = make_session(
        lambda: tls_context(guards.ca_file, check_hostname=False), settings.check_url, connect
    )
    headers = {"Accept-Encoding": "identity"}
    if content_type:
        headers["Content-Type"] = content_type
    timer = threading.Timer(guards.timeout, cut)
    timer.daemon = True
    timer.start()
    late = OnlineFailed(f"no complete answer within {guards.timeout:g} s")
    try:
        answer = _ask(session, url, shown, headers, body, guards)
        if expired.is_set():  # urllib3 1.26 ends a body cut short as if it were whole
            raise late
        return answer
    except OnlineFailed:
        if expired.is_set():
            raise late from None
        raise
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        timed_out = requests.exceptions.Timeout | urllib3.exceptions.ReadTimeoutError
        if expired.is_set() or isinstance(exc, timed_out):
            raise late from None
        raise OnlineFailed(f"not fetched ({type(exc).__name__})") from None
    except DownloadError as exc:  # a refused scheme, host or address; no connection
        raise OnlineFailed(exc.message) from None
    finally:
        timer.cancel()
        with contextlib.suppress(Exception):
            session.close()


def _ask(
    session: requests.Session,
    url: str,
    shown: str,
    headers: dict[str, str],
    body: bytes | None,
    guards: Guards,
) -> bytes:
    with session.request(
        "GET" if body is None else "POST",
        url,
        data=body,
        headers=headers,
        stream=True,
        timeout=(guards.timeout, guards.timeout),
        allow_redirects=False,
    ) as response:
        code = response.status_code
        if 300 <= code < 400:
            target = redact_url(response.headers.get("Location", "(none)"))[:200]
            raise OnlineFailed(f"HTTP {code} redirect to {target} from {shown}: not followed")
        if code != 200:
            raise OnlineFailed(f"HTTP {code} from {shown}")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise OnlineFailed(f"{shown} sent Content-Encoding {encoding}, asked identity")
        announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > guards.max_bytes:
            raise OnlineFailed(
                f"{shown} announced {announced} bytes, larger than {guards.max_bytes} bytes"
            )
        data = bytearray()
        while chunk := response.raw.read(_CHUNK, decode_content=False):
            data += chunk
            if len(data) > guards.max_bytes:
                raise OnlineFailed(f"answer from {shown} larger than {guards.max_bytes} bytes")
        if announced.isdigit() and len(data) != int(announced):
            raise OnlineFailed(
                f"answer from {shown} is {len(data)} bytes, not the {announced} announced"
            )
        return bytes(data)


def _shut(sock: socket.socket) -> None:
    """Wake a recv() blocked in another thread (close() would not)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
