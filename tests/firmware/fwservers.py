"""The FTP server for the download tests: pyftpdlib on 127.0.0.1, recording REST offsets.

The HTTP server lives in `agent.demo.fileserver` (the demo and the benchmark use it too).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from agent.demo.fileserver import FirmwareHttpServer

__all__ = ["FirmwareFtpServer", "FirmwareHttpServer"]


# --- FTP --------------------------------------------------------------------------------------


class FirmwareFtpServer:
    """pyftpdlib on 127.0.0.1 with one user; records REST offsets and can cut a transfer."""

    def __init__(self, root: Path, user: str, password: str, tls_files: tuple[Path, Path] | None):
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import DTPHandler, FTPHandler
        from pyftpdlib.servers import FTPServer

        self.rest: list[int] = []
        self.retr: list[str] = []
        self.cut_after: int | None = None
        owner = self
        authorizer = DummyAuthorizer()
        authorizer.add_user(user, password, str(root), perm="elr")

        class CuttingDTP(DTPHandler):  # type: ignore[misc]
            def send(self, data: bytes) -> int:
                limit = owner.cut_after
                if limit is not None and self.tot_bytes_sent + len(data) >= limit:
                    keep = max(0, limit - self.tot_bytes_sent)
                    sent = super().send(data[:keep]) if keep else 0
                    self.handle_close()  # data still queued -> "426 Transfer aborted"
                    return int(sent)
                return int(super().send(data))

        base: Any = FTPHandler
        dtp: Any = CuttingDTP
        if tls_files is not None:
            from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

            base, dtp = TLS_FTPHandler, TLS_DTPHandler

        class Handler(base):  # type: ignore[misc, valid-type]
            def ftp_REST(self, line: str) -> Any:
                owner.rest.append(int(line))
                return super().ftp_REST(line)

            def ftp_RETR(self, file: str) -> Any:
                owner.retr.append(file)
                return super().ftp_RETR(file)

        Handler.authorizer = authorizer
        Handler.dtp_handler = dtp
        Handler.passive_ports = None
        Handler.use_sendfile = False  # so CuttingDTP.send sees every byte
        Handler.auth_failed_timeout = 0.05
        if tls_files is not None:
            Handler.certfile = str(tls_files[0])
            Handler.keyfile = str(tls_files[1])
            Handler.tls_control_required = True
            Handler.tls_data_required = True
        self.server = FTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        self.server.close_all()

    def __enter__(self) -> FirmwareFtpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
