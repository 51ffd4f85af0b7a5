"""Hardening of the local API against its own group (any member may connect): what a host
may move, hold or keep, bounded. The agent is a real process in API mode behind its Unix
socket, except where the server's own bound is the subject."""

from __future__ import annotations

import datetime
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import RELEASE_DATE
from agent.api import protocol
from agent.api.events import EventLog
from agent.api.server import MAX_OUTPUT, ApiServer
from agent.demo import pki
from agent.demo.rig import ChargerRig, Firmware
from agent.firmware.clock import MAX_AHEAD, CsmsTimeOffset, TrustedClock
from tests.api.client import WAIT, ApiCallError
from tests.api.conftest import ApiCharger, wait_for


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- boot_accepted.csms_time: the trusted clock's offset is bounded --------------------------


def test_boot_accepted_refuses_a_csms_time_that_cannot_be_right(charger: ApiCharger) -> None:
    """A time before the release date or past MAX_AHEAD is answered bad_params and logged;
    a plausible one far from the system clock is taken, and the jump is logged."""
    agent = charger.start()
    client = charger.connect()
    now = datetime.datetime.now(datetime.UTC)

    early = rfc3339(RELEASE_DATE - datetime.timedelta(days=400))
    with pytest.raises(ApiCallError) as refused:
        client.call("boot_accepted", csms_time=early)
    assert refused.value.code == "bad_params"
    assert "before the agent's release date" in str(refused.value)
    assert "nothing was recorded" in str(refused.value)

    late = rfc3339(now + MAX_AHEAD + datetime.timedelta(days=30))
    with pytest.raises(ApiCallError) as refused:
        client.call("boot_accepted", csms_time=late)
    assert refused.value.code == "bad_params" and "years after" in str(refused.value)
    wait_for(lambda: agent.log.count("boot_accepted csms_time refused") == 2, "the refusals")
    assert "the host's BootNotification was accepted" not in agent.log  # nothing happened

    far = rfc3339(now + datetime.timedelta(days=3 * 365))
    assert client.call("boot_accepted", csms_time=far) == {}
    wait_for(lambda: "from the system clock" in agent.log, "the jump's log line")
    assert f"csms_time {far} is +3.0 years from the system clock" in agent.log
    assert client.call("boot_accepted", csms_time=rfc3339(now)) == {}
    wait_for(lambda: "from the last CSMS time" in agent.log, "the jump back's log line")


def test_a_refused_csms_time_leaves_the_trusted_clock_where_it_was() -> None:
    """A charger whose system clock is before the release date (no RTC) checks certificates
    by the CSMS time: a refused one does not move it."""
    system = (RELEASE_DATE - datetime.timedelta(days=20000)).timestamp()  # 1972-ish
    offset = CsmsTimeOffset(system=lambda: system)
    clock = TrustedClock(offset, system=lambda: system)
    good = RELEASE_DATE + datetime.timedelta(days=10)
    assert offset.propose(good, "test") is None
    assert clock.read().now == good
    for wrong in (RELEASE_DATE - datetime.timedelta(days=1), good + MAX_AHEAD):
        assert offset.propose(wrong, "test") is not None
        assert clock.read().now == good


# --- start_update: only an accepted request holds the events -------------------------------


def lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    with sock.makefile("rb") as reader:
        for line in reader:
            yield json.loads(line)


def test_a_refused_start_update_does_not_hold_the_events_until_response_sent(
    charger: ApiCharger, rig: ChargerRig, firmware: Firmware
) -> None:
    """L01.FR.24/.02 through the API: InvalidCertificate is answered, then its security event
    follows at once, though the host never calls response_sent (and response_timeout is long);
    an accepted request still holds its events until response_sent."""
    charger.start(response_timeout=3600)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)  # a line that never comes fails the test instead of hanging it
    sock.connect(str(charger.socket))
    received = lines(sock)
    sock.sendall(b'{"id": 1, "method": "hello", "params": {"api": 1}}\n')
    assert next(received)["id"] == 1

    rogue = pki.issue("Rogue Signing", pki.ec_key(n=7))  # issued by no manufacturer root
    params = charger.update_params(firmware, 31, signing_certificate=rogue.pem)
    request = {"id": 2, "method": "start_update", "params": params}
    sock.sendall(json.dumps(request).encode() + b"\n")
    answer = next(received)  # the answer comes first, the event after it
    assert answer == {"id": 2, "result": {"status": "InvalidCertificate"}}
    event = next(received)
    assert event["event"] == "security_event"
    assert event["type"] == "InvalidFirmwareSigningCertificate"

    request = {"id": 3, "method": "start_update", "params": charger.update_params(firmware, 32)}
    sock.sendall(json.dumps(request).encode() + b"\n")
    assert next(received) == {"id": 3, "result": {"status": "Accepted"}}
    sock.sendall(b'{"id": 4, "method": "get_status"}\n')
    status = next(received)  # Downloading is held: no event before this answer
    assert status["id"] == 4 and status["result"]["request_id"] == 32, status
    sock.sendall(b'{"id": 5, "method": "response_sent", "params": {"request_id": 32}}\n')
    released = [next(received), next(received)]  # the answer and the event released
    assert {"id": 5, "result": {}} in released
    (event,) = [m for m in released if "event" in m]
    assert (event["event"], event["request_id"]) == ("status", 32), released
    sock.close()


# --- a host that never reads does not keep its place ---------------------------------------


@pytest.fixture
def one_slot(sockdir: Path, tmp_path: Path) -> Iterator[ApiServer]:
    """The real server on a real socket, in-process: one client at most, short timeouts."""
    server: ApiServer

    def dispatch(client: int, line: bytes) -> None:  # every request subscribes
        request = protocol.parse_request(line)
        server.reply(client, {"id": request.id, "result": {}}, subscribe=True)

    events = EventLog(tmp_path / "api-events.json")
    server = ApiServer(
        sockdir / "api.sock", str(os.getgid()), 1, events, dispatch, send_timeout=1, close_timeout=1
    )
    server.start()
    yield server
    server.stop()


def stalled_subscriber(server: ApiServer) -> socket.socket:
    """A client that said hello and reads nothing more: live events until the agent holds
    output it cannot send (the socket's buffer is full), well under MAX_OUTPUT."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(str(server.path))
    sock.sendall(b'{"id": 1, "method": "hello"}\n')
    wait_for(lambda: server.clients == 1 and _unsent(server) is not None, "the hello")
    while not _unsent(server):
        for n in range(200):
            server.broadcast({"event": "progress", "n": n, "padding": "p" * 200})
        wait_for(lambda: not server._live, "the broadcasts to be taken")
    assert _unsent(server) < MAX_OUTPUT // 2
    return sock


def _unsent(server: ApiServer) -> int | None:
    with server._lock:
        clients = list(server._clients.values())
    return len(clients[0].wbuf) if clients else None


def busy(server: ApiServer) -> bool:
    """A second client is refused with `busy` (the one slot is taken)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(str(server.path))
        line = sock.makefile("rb").readline()
    return json.loads(line)["error"]["code"] == "busy"


def closed_by_the_agent(sock: socket.socket) -> bool:
    """The stream ends: what the agent wrote can be read, then EOF (or a reset, when the
    agent closed with the client's unread input still queued)."""
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize("error_line", [False, True], ids=["output", "error-line"])
def test_a_host_that_never_reads_loses_its_slot(one_slot: ApiServer, error_line: bool) -> None:
    """Its output stands still for send_timeout (or its line_too_long error line is not taken
    within close_timeout): closed with a log line, and the next host gets the slot."""
    server = one_slot
    stalled = stalled_subscriber(server)
    assert busy(server)
    if error_line:  # over MAX_LINE without a newline: the agent answers and will close
        stalled.sendall(b"x" * (protocol.MAX_LINE + 1))
        wait_for(lambda: all(c.closing for c in server._clients.values()), "the error line")
    wait_for(lambda: server.clients == 0, "the stalled host to be closed")
    assert closed_by_the_agent(stalled)
    stalled.close()
    host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host.settimeout(WAIT)
    host.connect(str(server.path))
    host.sendall(b'{"id": 7, "method": "hello"}\n')
    assert json.loads(host.makefile("rb").readline()) == {"id": 7, "result": {}}
    host.close()
