"""FTP and explicit FTPS (AUTH TLS) download source, passive mode, resume with REST.

OCPP lists FTP and FTPS among `SupportedFileTransferProtocols`, with the credentials in the
URL (`ftp://user:password@host:port/path`, percent-encoded). They are used for the login and
appear nowhere else: not in logs, not in error messages.

FTP has no ETag; the validator is the file's SIZE and MDTM (modification time). A resume sends
`REST <offset>` only when both are available and unchanged; otherwise the transfer starts from
byte 0 and says so, as HTTP does when a server answers 200 to a range request.
"""

from __future__ import annotations

import contextlib
import ftplib
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from agent.firmware.errors import (
    BrokenConnection,
    ConnectFailed,
    DownloadError,
    ServerRefused,
    Stalled,
    TlsFailed,
    Truncated,
    UnsupportedScheme,
)
from agent.firmware.fetch_base import FetchSettings, ResumeFrom, TransferInfo, redact_url

_T = TypeVar("_T")


class FtpSource:
    def __init__(self, url: str, context: ssl.SSLContext | None, settings: FetchSettings) -> None:
        parts = urllib.parse.urlsplit(url)
        self._secure = parts.scheme == "ftps"
        self._host = parts.hostname or ""
        try:
            self._port = parts.port or 21
        except ValueError:
            raise UnsupportedScheme(f"invalid port in {redact_url(url)}") from None
        self._user = urllib.parse.unquote(parts.username) if parts.username else "anonymous"
        self._password = urllib.parse.unquote(parts.password) if parts.password else "anonymous@"
        self._path = urllib.parse.unquote(parts.path.lstrip("/"))
        if not self._host or not self._path:
            raise UnsupportedScheme(f"FTP URL needs a host and a file path: {redact_url(url)}")
        if self._secure and context is None:  # FTP_TLS would fall back to no verification
            raise TlsFailed(f"no TLS context for {redact_url(url)}")
        self._context = context
        self._settings = settings
        self._shown = redact_url(url)
        self._ftp: ftplib.FTP | None = None
        self._data: socket.socket | None = None
        self._stream: BinaryIO | None = None

    def open(self, resume: ResumeFrom | None) -> TransferInfo:
        try:
            return self._open(resume)
        except DownloadError:
            raise
        except ftplib.error_perm as exc:
            raise ServerRefused(f"FTP server {self._shown} refused: {exc}", _code(exc)) from None
        except ftplib.error_temp as exc:
            raise ServerRefused(f"FTP server {self._shown} busy: {exc}", _code(exc)) from None
        except ssl.SSLError as exc:
            raise TlsFailed(f"TLS failure talking to {self._shown}: {exc.reason}") from None
        except TimeoutError:
            raise ConnectFailed(f"FTP server {self._shown} did not answer in time") from None
        except (OSError, EOFError, ftplib.Error) as exc:
            raise ConnectFailed(f"cannot reach {self._shown}: {exc}") from None

    def _open(self, resume: ResumeFrom | None) -> TransferInfo:
        ftp: ftplib.FTP
        if self._secure:
            ftp = ftplib.FTP_TLS(context=self._context, timeout=self._settings.connect_timeout)
        else:
            ftp = ftplib.FTP(timeout=self._settings.connect_timeout)
        self._ftp = ftp
        # ftplib.FTP.connect(), on a connection made to the checked address; `host` stays the
        # name, for the TLS server name. PASV data connections go to this peer's address.
        sock = self._settings.open_connection(self._host, self._port)
        ftp.host, ftp.port, ftp.sock, ftp.af = self._host, self._port, sock, sock.family
        ftp.file = sock.makefile("r", encoding=ftp.encoding)
        ftp.welcome = ftp.getresp()
        if ftp.sock is not None:
            ftp.sock.settimeout(self._settings.stall_timeout)
        ftp.timeout = self._settings.stall_timeout  # used for the data connections
        ftp.login(self._user, self._password)  # FTP_TLS.login() sends AUTH TLS first
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()  # the data channel is encrypted too
        ftp.set_pasv(True)
        ftp.voidcmd("TYPE I")
        total = _optional(lambda: ftp.size(self._path))
        mdtm = _optional(lambda: ftp.voidcmd(f"MDTM {self._path}")[4:].strip())
        validator = f"size={total};mdtm={mdtm}" if total is not None and mdtm else None
        offset = 0
        if resume is not None and resume.offset > 0 and validator is not None:
            offset = resume.offset if resume.validator == validator else 0
        if total is not None and offset == total:
            return TransferInfo(offset, 0, total, validator, False)
        try:
            data = ftp.transfercmd(f"RETR {self._path}", rest=offset or None)
        except (ftplib.error_perm, ftplib.error_reply):
            if not offset:
                raise
            offset = 0  # REST not supported: start over
            data = ftp.transfercmd(f"RETR {self._path}")
        data.settimeout(self._settings.stall_timeout)
        self._data = data
        self._stream = data.makefile("rb")
        restarted = resume is not None and resume.offset > 0 and offset == 0
        length = None if total is None else total - offset
        return TransferInfo(offset, length, total, validator, restarted)

    def read(self, size: int) -> bytes:
        assert self._stream is not None
        try:
            return self._stream.read(size)
        except TimeoutError:
            raise Stalled(f"no data from {self._shown} within the stall timeout") from None
        except ssl.SSLError as exc:
            raise TlsFailed(f"TLS failure reading from {self._shown}: {exc.reason}") from None
        except OSError as exc:
            raise BrokenConnection(f"FTP data connection broke: {exc}") from None

    def finish(self) -> None:
        assert self._ftp is not None
        self._close_data()
        try:
            self._ftp.voidresp()  # 226 Transfer complete
        except (ftplib.error_temp, ftplib.error_perm, ftplib.error_reply) as exc:
            raise Truncated(
                f"FTP server {self._shown} reports the transfer failed: {exc}"
            ) from None
        except (OSError, EOFError) as exc:
            raise BrokenConnection(f"FTP control connection broke: {exc}") from None
        with contextlib.suppress(Exception):
            self._ftp.quit()

    def abort(self) -> None:
        for sock in (self._data, self._ftp.sock if self._ftp is not None else None):
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self._close_data()
        if self._ftp is not None:
            with contextlib.suppress(Exception):
                self._ftp.close()

    def _close_data(self) -> None:
        for closable in (self._stream, self._data):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        self._stream = None
        self._data = None


def _optional(query: Callable[[], _T]) -> _T | None:
    """Run an FTP query whose failure (command not supported) just means "unknown"."""
    try:
        return query()
    except (ftplib.error_perm, ftplib.error_reply, ValueError):
        return None


def _code(exc: ftplib.Error) -> int | None:
    text = str(exc)
    return int(text[:3]) if text[:3].isdigit() else None
