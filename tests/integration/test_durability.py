"""The outbox and the daemon under kill -9, restarts and an offline CSMS."""

from __future__ import annotations

import json
import signal
import socket

from agent.demo.csms import TestCsms
from agent.ocpp.outbox import Outbox
from tests.conftest import agent_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_queued_messages_survive_kill_9_and_arrive_in_order(tmp_path, run_agent):
    """Messages queued while the CSMS is offline survive kill -9 and a restart, and are
    delivered in order once the CSMS is back (A04.FR.02, peers' gap #4)."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ocpp"
    config = agent_config(tmp_path, url)
    state = tmp_path / "state"
    state.mkdir()
    outbox = Outbox(state / "outbox.json")
    for n in range(5):
        outbox.append("SignedFirmwareStatusNotification", {"status": "Downloading", "requestId": n})
    agent = run_agent(config)
    agent.wait_log("cannot connect")  # the CSMS is offline; the agent holds the queue
    agent.wait_log("ocpp-fw-agent running")  # the status is published before this line
    assert json.loads((state / "status.json").read_text())["queued"] == 5
    agent.kill9()

    csms = TestCsms().start(port)
    try:
        run_agent(config)
        statuses = csms.wait_message("SignedFirmwareStatusNotification", count=5)
        assert [s.payload["request_id"] for s in statuses] == [0, 1, 2, 3, 4]
        csms.wait_for(lambda: len(Outbox(state / "outbox.json")) == 0, what="outbox drained")
        assert csms.schema_violations == []
    finally:
        csms.stop()


def test_an_entry_is_resent_until_its_callresult_arrives(tmp_path, csms: TestCsms, run_agent):
    """A CALLERROR answer is retried with back-off, not dropped (issue #2, outbox)."""
    state = tmp_path / "state"
    state.mkdir()
    Outbox(state / "outbox.json").append(
        "SecurityEventNotification",
        {"type": "StartupOfTheDevice", "timestamp": "2026-01-01T00:00:00Z"},
    )
    refusals = [True]

    def refuse_once(action: str, payload: dict) -> bool:
        return not (refusals and refusals.pop())

    csms.answer_filter = refuse_once
    run_agent(agent_config(tmp_path, csms.url))
    events = csms.wait_message("SecurityEventNotification", count=2, timeout=60)
    assert [e.payload["type"] for e in events] == ["StartupOfTheDevice"] * 2
    assert events[1].at - events[0].at >= 4.5  # the retry waited for its back-off
    csms.wait_for(lambda: len(Outbox(state / "outbox.json")) == 0, what="delivered")


def test_sigterm_keeps_the_outbox(tmp_path, run_agent):
    port = free_port()
    config = agent_config(tmp_path, f"ws://127.0.0.1:{port}/ocpp")
    state = tmp_path / "state"
    state.mkdir()
    Outbox(state / "outbox.json").append(
        "SignedFirmwareStatusNotification", {"status": "Downloading", "requestId": 7}
    )
    agent = run_agent(config)
    agent.wait_log("cannot connect")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert "1 message(s) kept in the outbox" in agent.log
    assert len(Outbox(state / "outbox.json")) == 1
