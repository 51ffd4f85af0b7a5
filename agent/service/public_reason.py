"""What a failed update's statusInfo tells the CSMS: a standard reasonCode and, as
additionalInfo, what went wrong in fixed words, never the core's own message.

The firmware core's failure reasons are written for the local log: they name slot devices and
files, CA files, `[firmware] allowed_hosts` and other configuration, the addresses a name
resolved to. A CSMS (or whoever reads its logs) learns nothing of the charger's layout from
2.1's statusInfo: the reason is matched against the core's wording and one of the phrases
below is sent, with an HTTP status code as the only detail taken over (three digits). The full
reason stays in the journal. Direct 2.x mode puts both in its statusInfo; API mode gives them
to the host next to the full reason, to forward instead of it.
"""

from __future__ import annotations

import re

from agent.ocpp import v16

FAILURES = frozenset(
    {
        v16.FirmwareStatus.DOWNLOAD_FAILED,
        v16.FirmwareStatus.INVALID_SIGNATURE,
        v16.FirmwareStatus.INSTALL_VERIFICATION_FAILED,
        v16.FirmwareStatus.INSTALLATION_FAILED,
    }
)
# Standard reason codes (2.x appendix "reason codes") for a failure, chosen by the words the
# firmware core uses for its cause (`agent.firmware.errors` and its raisers); the first match
# wins. Otherwise InvalidValue for a signature that does not verify, else Unspecified ("some
# extra information is in additionalInfo").
_DOWNLOAD_CODES = (
    ("does not fit", "OutOfStorage"),  # ImageTooLarge
    ("allowed_hosts", "InvalidURL"),  # HostNotAllowed, both kinds
    ("download scheme", "InvalidURL"),  # UnsupportedScheme: not supported / not allowed
    ("not a url", "InvalidURL"),
    ("invalid url", "InvalidURL"),
    ("invalid port", "InvalidURL"),
    ("needs a host", "InvalidURL"),
)
LOG_HINT = " (details in the charging station's log)"
Phrases = tuple[tuple[tuple[str, ...], str], ...]
# (words in the core's reason, lower case) -> what the CSMS is told; the first match wins:
# first the ones for any status, then those of the status, then the slot's and the trial's.
_FIRST: Phrases = (
    (("internal error",), "internal error in the firmware agent"),
    (("cancelled by the host",), "cancelled by the charging station's own stack"),
    (("cancelled",), "cancelled"),
)
_DOWNLOAD: Phrases = (
    (("does not fit",), "the image does not fit the charging station's inactive slot"),
    (("allowed_hosts",), "the download host is not allowed by the charging station"),
    (("download scheme",), "the download URL's scheme is not supported or not allowed"),
    (("not a url", "invalid url", "invalid port", "needs a host"), "the download URL is invalid"),
    (("redirects",), "the firmware server redirected too often"),
    (("tls",), "the TLS connection to the firmware server failed"),
    (("cannot resolve",), "the firmware server's name does not resolve"),
    (("timed out", "in time", "stall timeout"), "the firmware server did not answer in time"),
    (("cannot connect", "cannot reach", "broke"), "the connection to the firmware server failed"),
    (("ftp server",), "the FTP server refused the download"),
    (
        ("content-length", "content-range", "content-encoding", "range", "206", "changed since"),
        "the firmware server's answer did not match the request",
    ),
)
_SIGNATURE: Phrases = (
    (("base64",), "the signature is not valid Base64"),
    (
        ("not allowed by the configuration", "not supported"),
        "the signature's key type is not accepted by the charging station",
    ),
)
_LAST: Phrases = (
    (
        ("trial failed", "rolled back", "restarts of this update"),
        "the new firmware did not prove healthy; the previous firmware runs again",
    ),
    (("read-back",), "the image read back from the slot does not match the download"),
    (("slot",), "the inactive slot could not be written or read"),
)
_BY_STATUS = {
    v16.FirmwareStatus.DOWNLOAD_FAILED: _DOWNLOAD,
    v16.FirmwareStatus.INVALID_SIGNATURE: _SIGNATURE,
}
_HTTP = re.compile(r"\bhttp (\d{3})\b")
_DEFAULTS = {
    v16.FirmwareStatus.DOWNLOAD_FAILED: "the download failed",
    v16.FirmwareStatus.INVALID_SIGNATURE: "the firmware signature does not verify",
    v16.FirmwareStatus.INSTALL_VERIFICATION_FAILED: "the installed image did not verify",
    v16.FirmwareStatus.INSTALLATION_FAILED: "the installation failed",
}


def reason_code(status: v16.FirmwareStatus, reason: str | None) -> str | None:
    """The 2.x reasonCode of a failure status (None for any other status)."""
    if status not in FAILURES:
        return None
    text = (reason or "").lower()
    if text.startswith("internal error"):
        return "InternalError"
    if status is v16.FirmwareStatus.INVALID_SIGNATURE:
        return "InvalidValue"
    if status is v16.FirmwareStatus.DOWNLOAD_FAILED:
        return next((code for words, code in _DOWNLOAD_CODES if words in text), "Unspecified")
    return "Unspecified"


def public_reason(status: v16.FirmwareStatus, reason: str | None) -> str:
    """The failure `reason` (the core's words) as the CSMS may read it."""
    text = (reason or "").lower()
    http = _HTTP.search(text)
    if status is v16.FirmwareStatus.DOWNLOAD_FAILED and http is not None:
        return f"the firmware server answered HTTP {http.group(1)}{LOG_HINT}"
    for words, phrase in (*_FIRST, *_BY_STATUS.get(status, ()), *_LAST):
        if any(w in text for w in words):
            return phrase + LOG_HINT
    return _DEFAULTS.get(status, "the update failed") + LOG_HINT
