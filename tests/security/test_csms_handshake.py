"""A CSMS endpoint that answers the websocket handshake with too much: a refusal with a 256 MiB
body (current websocket-client reads a non-101 answer's whole body into memory), or a header
line that never ends (read a byte at a time into a list, ~40 bytes of memory per byte).
The handshake's answer is bounded (16 KiB); past it the attempt fails with one log line and
the agent tries again after its back-off; its peak RSS stays flat.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import agent_config
from tests.security.hostile_net import Peer, RawServer, peak_rss_mib, wait_until

RSS_BOUND_MIB = 100


def answering(head: bytes, then: bytes):
    """Send `head`, then `then` over and over until the agent hangs up."""

    def handler(peer: Peer) -> None:
        peer.read_head()
        peer.send(head)
        while not peer.server.done.is_set():
            peer.send(then)

    return handler


@pytest.mark.parametrize(
    ("head", "then"),
    [
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 268435456\r\n\r\n", b"u" * 65536),
        (b"HTTP/1.1 101 Switching Protocols\r\nX-Endless: ", b"e" * 65536),
    ],
    ids=["256MiB-refusal-body", "endless-header-line"],
)
def test_an_oversized_handshake_answer_is_cut_off(tmp_path: Path, run_agent, head, then):
    with RawServer(answering(head, then)) as endpoint:
        url = f"ws://127.0.0.1:{endpoint.port}/ocpp"
        agent = run_agent(agent_config(tmp_path, url))
        # websocket-client 1.2.3 never reads a refusal's body: it fails at the status line.
        wait_until(
            lambda: "handshake answer over" in agent.log or "Handshake status 401" in agent.log,
            180,
            "the attempt to fail",
        )
        wait_until(lambda: endpoint.connections >= 2, 180, "the next attempt")
        peak = peak_rss_mib(agent.proc.pid)
    assert peak < RSS_BOUND_MIB, f"peak RSS {peak:.0f} MiB"
