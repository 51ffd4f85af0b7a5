"""sd_notify as systemd sees it: a datagram socket bound by the test stands in for PID 1."""

from __future__ import annotations

import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.demo.csms import TestCsms
from tests.conftest import agent_config


class NotifySocket:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nfy"))  # AF_UNIX paths are short
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []

    def next(self, timeout: float = 60.0) -> str:
        self.sock.settimeout(timeout)
        message = self.sock.recv(4096).decode()
        self.messages.append(message)
        return message

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.next(remaining)
            if needle in message:
                return message
        raise AssertionError(f"{needle!r} never arrived; got {self.messages}")

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def test_ready_status_watchdog_and_stopping(tmp_path, csms: TestCsms, run_agent, notify):
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    agent = run_agent(agent_config(tmp_path, csms.url), env=env)
    ready = notify.wait_for("READY=1")
    assert "STATUS=" in ready
    notify.wait_for("STATUS=connected, accepted, 0 queued")
    pets = [notify.wait_for("WATCHDOG=1") for _ in range(3)]
    assert len(pets) == 3
    agent.signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
    assert agent.wait() == 0


def test_ready_does_not_wait_for_the_csms(tmp_path, run_agent, notify):
    """READY=1 once the state is loaded and the loop runs, even with the CSMS unreachable."""
    config = agent_config(tmp_path, "ws://127.0.0.1:9/ocpp")
    run_agent(config, env={"NOTIFY_SOCKET": str(notify.path)})
    assert "STATUS=offline" in notify.wait_for("READY=1")


def test_a_hung_loop_stops_petting_the_watchdog(tmp_path, csms: TestCsms, run_agent, notify):
    """The test-only hang file blocks the loop, so systemd's watchdog would fire."""
    hang = tmp_path / "hang"
    env = {
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "400000",
        "OCPP_FW_AGENT_TEST_HANG_FILE": str(hang),
    }
    run_agent(agent_config(tmp_path, csms.url), env=env)
    notify.wait_for("READY=1")
    notify.wait_for("WATCHDOG=1")
    hang.touch()
    # Pets sent before the loop reached the hang may still be on their way, and how long that
    # takes depends on the machine's load: wait (generously) for 2.5 watchdog intervals of
    # silence. A loop that kept petting every 0.2 s never leaves such a gap and fails here.
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"the watchdog kept being petted: {notify.messages}"
        try:
            notify.next(timeout=1.0)
        except TimeoutError:
            break
    hang.unlink()
    notify.wait_for("WATCHDOG=1", timeout=60)
