"""systemd integration: sd_notify (READY, STATUS, WATCHDOG, STOPPING) and journald logging.

systemd-python is used when importable. Without it, or without NOTIFY_SOCKET, notifications are
sent by a small datagram fallback or not at all, and logs go to stderr: the agent runs the same.
Structured journal fields (REQUEST_ID, PHASE, ...) are passed with `logging`'s `extra=`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping

try:  # python3-systemd / systemd-python
    from systemd import daemon as sd_daemon  # type: ignore[attr-defined]
    from systemd import journal as sd_journal  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised on machines without libsystemd
    sd_daemon = None
    sd_journal = None

SYSLOG_IDENTIFIER = "ocpp-fw-agent"


class Notifier:
    """sd_notify for the service manager; every method is a no-op outside systemd."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._socket_path = environ.get("NOTIFY_SOCKET") or None
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        enabled = usec is not None and usec.isdigit() and (pid is None or pid == str(os.getpid()))
        # Pet at half the timeout, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval: float | None = int(usec) / 2e6 if enabled and usec else None

    def _send(self, message: str) -> None:
        if self._socket_path is None:
            return
        if sd_daemon is not None:
            sd_daemon.notify(message)
            return
        address = self._socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message.encode("utf-8"), address)
            except OSError as exc:
                logging.getLogger(__name__).debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        if self.watchdog_interval is not None:
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")


def setup_logging(verbose: bool = False, environ: Mapping[str, str] = os.environ) -> None:
    """Journal when started by systemd (JOURNAL_STREAM/INVOCATION_ID), otherwise stderr."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    under_systemd = "JOURNAL_STREAM" in environ or "INVOCATION_ID" in environ
    handler: logging.Handler
    if sd_journal is not None and under_systemd:
        handler = sd_journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("websocket").setLevel(logging.CRITICAL)
