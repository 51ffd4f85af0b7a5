"""A CSMS endpoint that answers the websocket handshake with a redirect (security profiles 1-3).

The AuthorizationKey travels in the handshake's Basic header. A redirect, followed, would hand
it to whatever origin the answer names, over whatever scheme it names: `wss://` -> `ws://`
puts the key in clear text and runs the session without TLS (OCPP 1.6 security whitepaper
§2.4: the profile is fixed by configuration, A00.FR.* "the Charge Point SHALL NOT fall back").
So the charger never follows a redirect on the CSMS connection, on any websocket-client version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import agent_config
from tests.security.hostile_net import Peer, RawServer, record_all, server_tls, wait_until

CP = "CP-REDIR-1"
KEY_HEX = "00112233445566778899AABBCCDDEEFF"


def redirecting(status: int, location: str):
    def handler(peer: Peer) -> None:
        peer.read_head()
        peer.send(
            f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
        )

    return handler


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_handshake_is_never_followed_and_the_key_never_leaves(
    tmp_path: Path, run_agent, status: int
):
    context, ca_file = server_tls(tmp_path)
    with RawServer(record_all) as elsewhere:
        target = f"ws://127.0.0.1:{elsewhere.port}/ocpp/{CP}"
        with RawServer(redirecting(status, target), tls=context) as endpoint:
            url = f"wss://localhost:{endpoint.port}/ocpp"
            csms = {
                "url": url,
                "charge_point_id": CP,
                "security_profile": 2,
                "authorization_key": KEY_HEX,
                "ca_file": str(ca_file),
            }
            agent = run_agent(agent_config(tmp_path, url, csms=csms))
            # Two handshakes at the endpoint: the first redirect was dealt with, either way.
            wait_until(lambda: endpoint.connections >= 2, 30, "a second connection attempt")
            agent.wait_log("redirects are not followed")
            assert b"Authorization: Basic" in endpoint.everything()  # the configured CSMS
            assert elsewhere.connections == 0, elsewhere.everything()
    lines = [line for line in agent.log.splitlines() if f"HTTP {status}" in line]
    assert lines and all("redirects are not followed" in line for line in lines), lines
    assert target in lines[0]  # where it wanted us to go, for the operator
    assert KEY_HEX.lower() not in agent.log.lower()
