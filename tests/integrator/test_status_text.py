"""`ocpp-fw-agent status` in text (issue 12, stumble 4): what an offline daemon last met, and a
finished update's outcome even when the job file is gone. The published document comes from
the daemon; these are the lines a person reads from it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from agent.demo.rig import AgentProcess
from agent.service import status
from tests.conftest import agent_config
from tests.e2e.conftest import wait_until


def test_offline_status_shows_the_last_connection_error() -> None:
    """The daemon publishes `connection_error` (wired in by the lead); offline, it is shown."""
    document = {"running": True, "pid": 7, "connection": "offline", "registration": "accepted",
                "queued": 2, "connection_error": "cannot connect to wss://csms.example/ocpp/CP-1:"
                " SSLCertVerificationError: certificate has expired"}  # fmt: skip
    lines = status.human(document).splitlines()
    assert lines[3] == (
        "last error:   cannot connect to wss://csms.example/ocpp/CP-1: SSLCertVerificationError: "
        "certificate has expired"
    )
    document["connection"] = "connected"
    assert "last error:" not in status.human(document)


def test_a_finished_job_without_its_file_still_shows_its_outcome() -> None:
    job = {"request_id": 5, "phase": "finished", "outcome": "InstallationFailed",
           "error": "health: exit 1"}  # fmt: skip
    document = {"running": True, "pid": 7, "connection": "connected", "registration": "accepted",
                "queued": 0, "job": job}  # fmt: skip
    text = status.human(document)
    assert "update:       request 5: finished, InstallationFailed" in text.splitlines()
    assert "last error:   health: exit 1" in text.splitlines()


def test_the_running_daemon_publishes_why_it_is_offline(tmp_path: Path) -> None:
    """End to end: a daemon whose CSMS refuses connections; `status` (text) names the error."""
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = agent_config(tmp_path, f"ws://127.0.0.1:{port}/ocpp")
    daemon = AgentProcess(config).start()
    try:

        def shown() -> str | None:
            done = subprocess.run(
                [sys.executable, "-m", "agent", "-c", str(config), "status"],
                capture_output=True,
                text=True,
                check=False,
            )
            return done.stdout if "last error:" in done.stdout else None

        text = wait_until(shown, 60, "status to show the connection error")
        assert f"last error:   cannot connect to ws://127.0.0.1:{port}/ocpp/CP-TEST-1" in text
    finally:
        daemon.stop()
