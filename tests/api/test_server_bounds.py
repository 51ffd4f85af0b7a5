"""The socket server's per-connection bound, in-process: a host that stops reading costs the
agent at most MAX_OUTPUT bytes; live events beyond are dropped, the connection keeps working,
and durable events wait in the journal (sent once the host reads again)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.api import protocol
from agent.api.events import EventLog, status_call
from agent.api.server import MAX_OUTPUT, ApiServer
from agent.ocpp import v16
from tests.api.conftest import wait_for

EVENTS = 12000
PADDING = "p" * 100


@pytest.fixture
def served(sockdir: Path, tmp_path: Path) -> Iterator[tuple[ApiServer, EventLog]]:
    events = EventLog(tmp_path / "api-events.json")
    server: ApiServer

    def dispatch(client: int, line: bytes) -> None:  # answered at once: every request subscribes
        request = protocol.parse_request(line)
        server.reply(client, {"id": request.id, "result": {}}, subscribe=True)

    server = ApiServer(sockdir / "api.sock", str(os.getgid()), 2, events, dispatch)
    server.start()
    yield server, events
    server.stop()


def lines_until_reply(sock: socket.socket, request_id: int) -> list[dict[str, object]]:
    reader = sock.makefile("rb")
    out = []
    for line in reader:
        message = json.loads(line)
        out.append(message)
        if message.get("id") == request_id:
            return out
    raise AssertionError("closed before the reply")


def test_a_host_that_stops_reading_costs_at_most_the_output_bound(
    served: tuple[ApiServer, EventLog],
) -> None:
    server, events = served
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(server.path))
    sock.sendall(b'{"id": 1, "method": "hello"}\n')
    assert lines_until_reply(sock, 1)[-1] == {"id": 1, "result": {}}

    for n in range(EVENTS):  # ~1.6 MB of progress while the host reads nothing
        server.broadcast({"event": "progress", "n": n, "padding": PADDING})
    events.append(*status_call(v16.FirmwareStatus.DOWNLOADING, 9))  # durable, after them

    def buffered() -> int | None:
        with server._lock:  # the live queue handed to the connection (or dropped)
            if server._live:
                return None
        (client,) = server._clients.values()
        return len(client.wbuf) or None

    held = wait_for(buffered, "the broadcasts to be taken")
    assert held <= MAX_OUTPUT + 200

    sock.sendall(b'{"id": 2, "method": "get_status"}\n')
    received = lines_until_reply(sock, 2)
    progress = [m["n"] for m in received if m.get("event") == "progress"]
    assert 0 < len(progress) < EVENTS, "live events beyond the bound are dropped"
    assert progress == sorted(progress)
    statuses = [m for m in received if m.get("event") == "status"]
    assert statuses == [{"event": "status", "seq": 1, "request_id": 9, "status": "Downloading"}]
    sock.close()
