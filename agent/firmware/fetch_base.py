"""What every download source shares: settings, the resume point, what a server announced,
the TLS context and URL redaction.

A *source* (HTTP(S) in `fetch_http`, FTP(S) in `fetch_ftp`) knows one protocol: it opens a
transfer from a resume point, reads bytes, and can be aborted from another thread. The
protocol-neutral machinery around it (reader thread, cancel, length accounting) is `fetch`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import ssl
import urllib.parse
from pathlib import Path
from typing import Protocol

from agent.config import DOWNLOAD_SCHEMES, FirmwareConfig
from agent.firmware.errors import ConnectFailed, HostNotAllowed, TlsFailed, UnsupportedScheme

CHUNK_SIZE = 256 * 1024  # one queue item; a few of them in flight bound the memory used
# Addresses of this machine or its link that a CSMS must not reach through the charger (blind
# SSRF: a local admin API, a cloud metadata service) unless allowed_hosts names them.
_INTERNAL = tuple(
    ipaddress.ip_network(net)
    for net in ("127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8", "::1/128", "fe80::/10", "::/128")
)


@dataclasses.dataclass(frozen=True)
class FetchSettings:
    connect_timeout: float = 30.0
    stall_timeout: float = 60.0  # no byte for this long -> Stalled
    ca_file: Path | None = None  # added to the system CA store, never replacing it
    allowed_schemes: tuple[str, ...] = DOWNLOAD_SCHEMES
    allowed_hosts: tuple[str, ...] = ()  # empty: any host; "*.example.com": its subdomains
    max_rate: int = 0  # bytes per second on average; 0: as fast as the link goes
    chunk_size: int = CHUNK_SIZE

    @classmethod
    def from_config(cls, firmware: FirmwareConfig) -> FetchSettings:
        return cls(
            connect_timeout=firmware.connect_timeout,
            stall_timeout=firmware.stall_timeout,
            ca_file=firmware.ca_file,
            allowed_schemes=firmware.allowed_schemes,
            allowed_hosts=firmware.allowed_hosts,
            max_rate=firmware.max_download_rate,
        )

    def check_url(self, url: str) -> str:
        """The URL's scheme, once its scheme and host are allowed; raises UnsupportedScheme or
        HostNotAllowed. Applied to the request's URL and to every redirect before it is sent."""
        try:
            parts = urllib.parse.urlsplit(url)
            scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        except ValueError:
            raise UnsupportedScheme(f"not a URL: {redact_url(url)}") from None
        if scheme not in self.allowed_schemes:
            shown = f"download scheme {scheme or '(none)'!r} of {redact_url(url)}"
            if scheme not in DOWNLOAD_SCHEMES:
                raise UnsupportedScheme(f"{shown} is not supported ({', '.join(DOWNLOAD_SCHEMES)})")
            allowed = ", ".join(self.allowed_schemes)
            raise UnsupportedScheme(f"{shown} is not allowed (allowed: {allowed})")
        if self.allowed_hosts and not any(host_matches(host, p) for p in self.allowed_hosts):
            raise HostNotAllowed(
                f"download host {host or '(none)'!r} of {redact_url(url)} is not in "
                f"allowed_hosts ({', '.join(self.allowed_hosts)})"
            )
        return scheme

    def open_connection(self, host: str, port: int) -> socket.socket:
        """A TCP connection to `host`, made to the very address that was checked.

        The name is resolved once; loopback, link-local and unspecified addresses are dropped
        unless allowed_hosts names the host or the address exactly (a `*.domain` pattern does
        not: a name under it could be made to resolve anywhere). Nothing else resolves the
        name again, so a DNS answer that changes between check and connect cannot redirect
        the connection."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise ConnectFailed(f"cannot resolve {host!r}: {exc}") from None
        permitted = [info for info in infos if self._address_allowed(host, str(info[4][0]))]
        if not permitted:
            shown = ", ".join(sorted({str(info[4][0]) for info in infos}))
            raise HostNotAllowed(
                f"download host {host!r} resolves to {shown}: loopback, link-local and "
                "unspecified addresses are refused unless [firmware] allowed_hosts names them"
            )
        failure: OSError | None = None
        for family, kind, proto, _, address in permitted:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                sock.close()
                failure = exc
        if isinstance(failure, TimeoutError):
            raise ConnectFailed(f"connect to {host}:{port} timed out")
        raise ConnectFailed(f"cannot connect to {host}:{port}: {failure}")

    def _address_allowed(self, host: str, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None:
            ip = mapped
        if not any(ip in net for net in _INTERNAL if net.version == ip.version):
            return True
        named = {p.lower().rstrip(".") for p in self.allowed_hosts if not p.startswith("*.")}
        return host.lower().rstrip(".") in named or str(ip) in named


def host_matches(host: str, pattern: str) -> bool:
    """`pattern` is a host name or address, or `*.domain` for any name below that domain."""
    host, pattern = host.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclasses.dataclass(frozen=True)
class ResumeFrom:
    """Where a previous attempt stopped: the durable offset and the file's validator then."""

    offset: int
    validator: str | None  # HTTP: strong ETag, else Last-Modified; FTP: SIZE + MDTM


@dataclasses.dataclass(frozen=True)
class TransferInfo:
    """What the server announced for this transfer."""

    start: int  # offset in the file of the first byte this transfer yields
    length: int | None  # bytes this transfer should yield, when announced
    total: int | None  # size of the whole file, when known
    validator: str | None  # keep it with the checkpoint to resume later
    restarted: bool  # a resume was asked for but the server sends from byte 0

    @property
    def end(self) -> int | None:
        return None if self.length is None else self.start + self.length


class Source(Protocol):
    """One protocol's transfer. `open` and `read` run in the reader thread; `abort` in any."""

    def open(self, resume: ResumeFrom | None) -> TransferInfo: ...

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the end. Raises DownloadError subclasses."""
        ...

    def finish(self) -> None:
        """After the last byte: collect the server's final word (FTP 226)."""
        ...

    def abort(self) -> None:
        """Unblock a read from another thread (shut the sockets down)."""
        ...

    def close(self) -> None: ...


def tls_context(ca_file: Path | None, *, check_hostname: bool = True) -> ssl.SSLContext:
    """The system CA store plus, if configured, an extra CA bundle. Verification stays on.

    `check_hostname=False` is only for urllib3, which matches the name itself (also for IP
    addresses, where urllib3 1.26 passes no server_hostname and OpenSSL's check would refuse).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = check_hostname
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsFailed(f"cannot load the CA file {ca_file}: {exc}") from None
    return context


def redact_url(url: str) -> str:
    """The URL without user and password, for logs and error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:
        return "<unparsable URL>"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
