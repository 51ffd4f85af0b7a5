"""HTTP(S) download source: resume with Range + If-Range, and errors that say what went wrong.

Resume follows RFC 9110: `Range: bytes=N-` is only sent together with `If-Range` carrying the
validator the file had when the earlier bytes came (a strong ETag, else Last-Modified). A server
that answers 206 serves the same file from N; one that answers 200 (file changed, or no range
support) sends the whole file and the caller starts over from byte 0. Without a validator we do
not resume at all: splicing two versions of a file would surface much later as a bad signature.

The body is read raw (`Accept-Encoding: identity`, no decoding) because the signature covers
the file's bytes as stored on the server.

Redirects are followed here, not by requests (which reads a redirect's whole body into memory
to reuse the connection, even with `allow_redirects=False`): at most MAX_REDIRECTS, each target
checked against the allow-lists before it is requested, the redirect's body never read, and no
credentials carried to the next hop. Every connection goes through
`FetchSettings.open_connection`, which connects to the address it checked.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from agent.firmware.errors import (
    BrokenConnection,
    ConnectFailed,
    LengthMismatch,
    RestartRequired,
    ServerRefused,
    Stalled,
    TlsFailed,
    UnsupportedScheme,
)
from agent.firmware.fetch_base import FetchSettings, ResumeFrom, TransferInfo, redact_url

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


Connect = Callable[[str, int], socket.socket]


def _pool_classes(connect: Connect) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pools whose connections are opened by `connect` (resolve, check, connect)."""

    class Checked(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return connect(self._dns_host, self.port)

    class CheckedTls(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return connect(self._dns_host, self.port)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Checked

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = CheckedTls

    return {"http": Pool, "https": TlsPool}


class _CheckedAdapter(HTTPAdapter):
    """No retries; connections through `connect`; for https, our SSLContext (system store +
    extra CA)."""

    def __init__(self, connect: Connect, context: ssl.SSLContext | None = None) -> None:
        self._connect = connect
        self._context = context
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._context is not None:
            kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._connect)


class _Session(requests.Session):
    """A session that checks every URL it is about to send to and builds its https adapter
    when an https URL is first asked for.

    Every request, redirects included, goes through `get_adapter` before anything is sent: a
    redirect to a scheme or host the configuration does not allow is refused there, and no
    https request can reach requests' default adapter and its own trust store. Loading the
    system CA store costs ~20 ms of CPU; a plain-http download need not pay it.
    """

    def __init__(
        self, context: Callable[[], ssl.SSLContext], check: Callable[[str], str], connect: Connect
    ) -> None:
        super().__init__()
        self.trust_env = False
        self.max_redirects = 0
        self._make_context = context
        self._check = check
        self._connect = connect
        self._https_mounted = False
        self.mount("http://", _CheckedAdapter(connect))

    def get_adapter(self, url: str) -> BaseAdapter:
        self._check(url)
        if not self._https_mounted and url[:8].lower() == "https://":
            self.mount("https://", _CheckedAdapter(self._connect, self._make_context()))
            self._https_mounted = True
        return super().get_adapter(url)

    def get_redirect_target(self, resp: requests.Response) -> None:
        """Never: requests would read the redirect's body to follow it (HttpSource does)."""
        return None


def make_session(
    context: Callable[[], ssl.SSLContext], check: Callable[[str], str], connect: Connect
) -> requests.Session:
    """One session for all attempts. Environment proxies/netrc/CA variables are not consulted:
    the daemon's behaviour must follow its configuration only. `context` is called once, on
    the first https request; `check` on every URL before it is requested (it raises);
    `connect` opens every connection."""
    return _Session(context, check, connect)


def validator_of(response: requests.Response) -> str | None:
    """A validator usable in If-Range: a strong ETag, else Last-Modified (weak ETags can't)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


class HttpSource:
    def __init__(self, url: str, session: requests.Session, settings: FetchSettings) -> None:
        self._url = url
        self._session = session
        self._settings = settings
        self._response: requests.Response | None = None
        self._shown = redact_url(url)

    def open(self, resume: ResumeFrom | None) -> TransferInfo:
        headers = {"Accept-Encoding": "identity"}
        asked = resume is not None and resume.offset > 0 and resume.validator is not None
        if asked:
            assert resume is not None and resume.validator is not None
            headers["Range"] = f"bytes={resume.offset}-"
            headers["If-Range"] = resume.validator
        url = self._url
        for _ in range(MAX_REDIRECTS + 1):
            response = self._get(url, headers)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or location is None:
                break
            response.close()  # unread: a redirect's body is never taken in
            url = _next_hop(url, location)
            self._settings.check_url(url)  # before anything is sent to it
            self._shown = redact_url(url)
        else:
            response.close()
            raise ServerRefused(f"more than {MAX_REDIRECTS} redirects from {redact_url(self._url)}")
        self._response = response
        return self._announced(response, resume if asked else None, resume)

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        timeout = (self._settings.connect_timeout, self._settings.stall_timeout)
        shown = redact_url(url)
        try:
            return self._session.get(
                url, headers=headers, stream=True, timeout=timeout, allow_redirects=False
            )
        except requests.exceptions.SSLError as exc:
            raise TlsFailed(f"TLS failure talking to {shown}: {_reason(exc)}") from None
        except requests.exceptions.ConnectTimeout:
            raise ConnectFailed(f"connect to {shown} timed out") from None
        except requests.exceptions.ReadTimeout:
            raise Stalled(f"no response from {shown} within the stall timeout") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise UnsupportedScheme(f"invalid URL {shown}: {_reason(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise ConnectFailed(f"cannot reach {shown}: {_reason(exc)}") from None

    def _announced(
        self,
        response: requests.Response,
        asked: ResumeFrom | None,
        wanted: ResumeFrom | None,
    ) -> TransferInfo:
        code = response.status_code
        validator = validator_of(response)
        if code == 416 and asked is not None:
            match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == asked.offset:
                # Every byte arrived before; the server confirms the size.
                return TransferInfo(asked.offset, 0, asked.offset, asked.validator, False)
            raise RestartRequired(f"{self._shown}: range from {asked.offset} not satisfiable")
        if code >= 400:
            raise ServerRefused(f"HTTP {code} {response.reason} from {self._shown}", code)
        if code not in (200, 206):
            raise ServerRefused(
                f"unexpected HTTP {code} {response.reason} from {self._shown}", code
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise LengthMismatch(f"{self._shown} sent Content-Encoding {encoding}, asked identity")
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if code == 200:
            restarted = wanted is not None and wanted.offset > 0
            return TransferInfo(0, length, length, validator, restarted)
        if asked is None:
            raise LengthMismatch(f"{self._shown} answered 206 to a request without Range")
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None:
            raise LengthMismatch(f"{self._shown}: 206 without a usable Content-Range")
        first, last = int(match.group(1)), int(match.group(2))
        total = None if match.group(3) == "*" else int(match.group(3))
        if first != asked.offset:
            raise LengthMismatch(
                f"{self._shown}: asked for bytes from {asked.offset}, got a range from {first}"
            )
        if validator is not None and validator != asked.validator:
            # The server ignored If-Range: these bytes belong to another version of the file.
            raise RestartRequired(f"{self._shown} changed since the earlier bytes; start over")
        span = last - first + 1
        if length is not None and length != span:
            raise LengthMismatch(f"{self._shown}: Content-Length {length} != range of {span}")
        return TransferInfo(first, span, total, asked.validator, False)

    def read(self, size: int) -> bytes:
        assert self._response is not None
        try:
            data: bytes = self._response.raw.read(size, decode_content=False)
        except urllib3.exceptions.ReadTimeoutError:
            raise Stalled(f"no data from {self._shown} within the stall timeout") from None
        except urllib3.exceptions.SSLError as exc:
            raise TlsFailed(f"TLS failure reading from {self._shown}: {_reason(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BrokenConnection(f"connection to {self._shown} broke: {_reason(exc)}") from None
        return data

    def finish(self) -> None:
        return None

    def abort(self) -> None:
        response = self._response
        if response is None:
            return
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if sock is None:
            # A response that ends the connection (HTTP/1.0, `Connection: close`) was detached
            # from it by http.client: its socket only lives on in the body's reader.
            body = getattr(getattr(response.raw, "_fp", None), "fp", None)
            sock = getattr(getattr(body, "raw", None), "_sock", None)
        if isinstance(sock, socket.socket):
            # shutdown() wakes a recv() blocked in another thread; close() would not.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()


def _next_hop(url: str, location: str) -> str:
    """The redirect's absolute target, without any user:password (ours or the server's):
    credentials never follow a redirect."""
    try:
        target = urllib.parse.urlsplit(urllib.parse.urljoin(url, location.strip()))
    except ValueError:
        raise UnsupportedScheme(f"unusable redirect target from {redact_url(url)}") from None
    netloc = target.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((target.scheme, netloc, target.path, target.query, ""))


def _reason(exc: BaseException) -> str:
    """The innermost message, without URLs that might carry credentials."""
    inner: BaseException = exc
    while True:
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        reason = getattr(inner, "reason", None)
        if isinstance(reason, BaseException):
            nested = reason
        if nested is None or nested is inner:
            break
        inner = nested
    text = str(inner)
    return re.sub(r"[a-z][a-z0-9+.-]*://[^\s'\"]+", "<url>", text, flags=re.IGNORECASE)[:200]
