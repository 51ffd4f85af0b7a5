"""The firmware package's error family.

Every failure of the update pipeline is a `FirmwareError`, and each one carries the OCPP
status it maps to, so the updater turns an exception into the right `SignedUpdateFirmware.conf`
or `SignedFirmwareStatusNotification` without guessing:

* a signing certificate that fails its checks -> `InvalidCertificate` / `RevokedCertificate`
  (answered in the `.conf`, L01.FR.24/.25);
* a download that fails -> `DownloadFailed` (never `InvalidSignature`: a 404 or a cut
  connection must not look like a forged image);
* a signature that does not verify, or is missing -> `InvalidSignature` (L01.FR.03);
* a slot that reads back different from what was streamed -> `InstallVerificationFailed`.

`retryable` tells the caller's retry loop whether another attempt can help (a refused URL
scheme or an image larger than the slot will fail the same way every time).
"""

from __future__ import annotations


class FirmwareError(Exception):
    """Root of the package's errors; `status` is the OCPP status the failure maps to."""

    status: str | None = None
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UntrustedTime(FirmwareError):
    """Neither the system clock nor a CSMS-derived time can be trusted to check validity."""

    status = "InvalidCertificate"


class CertificateRejected(FirmwareError):
    """The signing certificate failed a check; `tech_info` is the short reason (<= 255 chars)."""

    def __init__(self, status: str, tech_info: str) -> None:
        if status not in ("InvalidCertificate", "RevokedCertificate"):
            raise ValueError(f"not a certificate status: {status}")
        tech_info = tech_info if len(tech_info) <= 255 else tech_info[:252] + "..."
        super().__init__(tech_info)
        self.status = status
        self.tech_info = tech_info


class SignatureInvalid(FirmwareError):
    """The firmware signature is missing, undecodable or does not verify (L01.FR.03)."""

    status = "InvalidSignature"


class DownloadError(FirmwareError):
    """The transfer failed; the image in the slot is incomplete (status DownloadFailed)."""

    status = "DownloadFailed"
    retryable = True


class UnsupportedScheme(DownloadError):
    """The URL's scheme is not one we download from (or not allowed by the configuration)."""

    retryable = False


class HostNotAllowed(DownloadError):
    """The URL (or a redirect) points at a host outside `[firmware] allowed_hosts`."""

    retryable = False


class ConnectFailed(DownloadError):
    """No connection to the server (DNS, refused, connect timeout)."""


class TlsFailed(DownloadError):
    """The TLS handshake or certificate verification failed (verification is never off)."""


class ServerRefused(DownloadError):
    """The server answered with an error (HTTP 4xx/5xx, an FTP error reply)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Stalled(DownloadError):
    """No byte arrived within the stall timeout."""


class Truncated(DownloadError):
    """The connection ended before the announced length arrived."""


class BrokenConnection(DownloadError):
    """The connection failed mid-body; `fetch` restates it as truncation when bytes are missing."""


class LengthMismatch(DownloadError):
    """The server sent more bytes than announced, or a range other than the one asked for."""


class RestartRequired(DownloadError):
    """A resume is impossible (the file changed under us); start again from byte 0."""


class DownloadCancelled(FirmwareError):
    """The transfer was cancelled on request (a newer SignedUpdateFirmware); not a failure."""


class SlotError(FirmwareError):
    """The target slot cannot be written or read (device busy, I/O error)."""

    status = "DownloadFailed"


class SlotBusy(SlotError):
    """The block device is in use (mounted, or held open exclusively)."""


class ImageTooLarge(SlotError):
    """The image does not fit the slot; raised before any byte is written past its end."""
