"""The strict Node peer is not a no-op: it refuses bad frames in each direction and says so.

A raw websocket client stands in for a broken charge point, so each violation is one we made
on purpose; the peer must answer CALLERROR where the protocol says so and list the violation in
`schema_violations` (which the fixtures of tests/cert16 and tests/v201 require to be empty).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from cryptography.hazmat.primitives import serialization
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from agent.demo import pki as fwpki
from tests.integration.test_security_profiles import Pki
from tests.peers.ocpp_rpc_csms import OcppRpcCsms, TlsFiles

# The Node peer's runs are in the PyPI pass only (Makefile).
pytestmark = pytest.mark.node_peer

CP = "CP-RAW-1"


@pytest.fixture(params=["1.6", "2.0.1"])
def peer(request: pytest.FixtureRequest) -> Iterator[OcppRpcCsms]:
    server = OcppRpcCsms(request.param).start()
    yield server
    server.stop()


def connect(peer: OcppRpcCsms) -> websocket.WebSocket:
    ws = websocket.create_connection(f"{peer.url}/{CP}", subprotocols=[f"ocpp{peer.version}"])
    peer.wait_for(lambda: peer.connected(CP), what="the raw client")
    return ws


def exchange(ws: websocket.WebSocket, frame: list[Any]) -> list[Any]:
    ws.send(json.dumps(frame))
    answer = json.loads(ws.recv())
    assert isinstance(answer, list)
    return answer


# A CALL each version's schema refuses and a valid one, as a charge point would send them.
BAD_CALL = {
    "1.6": ("BootNotification", {"chargePointModel": "AB-Charger"}),  # no chargePointVendor
    "2.0.1": ("FirmwareStatusNotification", {"status": "Bogus", "requestId": 1}),
}
BAD_TIME = {"type": "FirmwareUpdated", "timestamp": "yesterday"}  # not an RFC 3339 date-time


def test_a_call_from_the_charge_point_that_violates_the_schema_is_refused_and_reported(
    peer: OcppRpcCsms,
):
    """Strict mode checks the charger's CALLs before anything answers them: a CALLERROR goes
    back, the CALL is never handled, and the violation is listed; a valid CALL passes."""
    ws = connect(peer)
    action, payload = BAD_CALL[peer.version]
    answer = exchange(ws, [2, "bad-1", action, payload])
    assert answer[0] == 4 and answer[1] == "bad-1"
    assert answer[2].endswith("Violation"), answer  # which one depends on the rule broken
    answer = exchange(ws, [2, "bad-2", "SecurityEventNotification", BAD_TIME])
    assert answer[0] == 4 and "date-time" in answer[3], answer
    # The CALLERROR reaches the raw client on the websocket; the report of the violation comes
    # over the peer's stdout: either may be first.
    peer.wait_for(lambda: len(peer.schema_violations) >= 2, what="both violations reported")
    assert peer.messages(action) == [] and peer.messages("SecurityEventNotification") == []
    assert len(peer.schema_violations) == 2, peer.schema_violations
    assert peer.schema_violations[0].startswith(f"ocpp-rpc: {action} CALL")
    assert "date-time" in peer.schema_violations[1]

    assert exchange(ws, [2, "good-1", "Heartbeat", {}])[0] == 3
    assert [m.action for m in peer.messages()] == ["Heartbeat"]
    assert len(peer.schema_violations) == 2
    ws.close()


def test_an_answer_from_the_charge_point_that_violates_the_schema_is_reported(
    peer: OcppRpcCsms,
):
    """The charger's CALLRESULT to our CALL is checked too: the call fails and says why."""
    ws = connect(peer)

    def charge_point() -> None:
        frame = json.loads(ws.recv())
        ws.send(json.dumps([3, frame[1], {"status": "Perhaps"}]))

    answering = threading.Thread(target=charge_point)
    answering.start()
    trigger = (
        call16.ExtendedTriggerMessage(requested_message="FirmwareStatusNotification")
        if peer.version == "1.6"
        else call201.TriggerMessage(requested_message="FirmwareStatusNotification")
    )
    with pytest.raises(AssertionError, match="strict mode refused"):
        peer.call(CP, trigger)
    answering.join(15)
    assert len(peer.schema_violations) == 1
    assert "answer from the agent" in peer.schema_violations[0]
    ws.close()


def test_a_call_the_test_makes_that_violates_the_schema_is_never_sent(peer: OcppRpcCsms):
    """The peer checks our own CALLs before sending: a firmware request without a signing
    certificate (required in 1.6; in 2.0.1 a location longer than 512) never leaves."""
    ws = connect(peer)
    if peer.version == "1.6":
        firmware = {"location": "http://x/", "retrieveDateTime": "2020-01-01T00:00:00Z"}
        request: Any = call16.SignedUpdateFirmware(
            request_id=1, firmware={**firmware, "signature": "c2ln"}
        )
    else:
        firmware = {"location": "http://x/" + "a" * 600, "retrieveDateTime": "2020-01-01T00:00:00Z"}
        request = call201.UpdateFirmware(request_id=1, firmware=firmware)
    with pytest.raises(AssertionError, match="strict mode refused"):
        peer.call(CP, request)
    assert peer.frames == []
    assert len(peer.schema_violations) == 1
    assert "CALL from the test CSMS" in peer.schema_violations[0]
    ws.close()


@pytest.mark.parametrize("client_certs", ["optional", "required"])
def test_over_tls_client_certificates_are_checked_as_told_and_reported(
    tmp_path: Path, client_certs: str
):
    """wss:// for security profiles 2 and 3 (tests/sidecar): the server certificate is served,
    a client certificate from another CA ends the connection either way, none is fine only
    when optional, and the one that verifies is reported with its connection (`peer_certs`)."""
    pki = Pki(tmp_path)
    stranger = fwpki.issue("SN-0043", fwpki.ec_key("secp256r1", 14), pki.other_ca)
    tls = TlsFiles(
        cert=str(pki.write("server.pem", pki.server.pem.encode())),
        key=str(pki.write("server.key", pki.server.key_pem)),
        ca=str(pki.dir / "ca.pem"),
        client=client_certs,
    )
    peer = OcppRpcCsms("1.6", tls=tls).start()
    try:
        assert peer.url.startswith("wss://localhost:")

        def connect_as(name: str, cert: fwpki.Issued | None) -> websocket.WebSocket:
            sslopt: dict[str, Any] = {"ca_certs": tls.ca}
            if cert is not None:
                sslopt["certfile"] = str(pki.write(f"{name}.pem", cert.pem.encode()))
                sslopt["keyfile"] = str(pki.write(f"{name}.key", cert.key_pem))
            url = f"{peer.url}/{name}"
            return websocket.create_connection(
                url, subprotocols=["ocpp1.6"], sslopt=sslopt, timeout=30
            )

        with pytest.raises((OSError, websocket.WebSocketException)):
            connect_as("CP-STRANGER", stranger)
        if client_certs == "required":
            with pytest.raises((OSError, websocket.WebSocketException)):
                connect_as("CP-NONE", None)
        else:
            connect_as("CP-NONE", None).close()
        connect_as("CP-GOOD", pki.client).close()
        expected = [None, der(pki.client)] if client_certs == "optional" else [der(pki.client)]
        peer.wait_for(lambda: len(peer.peer_certs) == len(expected), what="the connections")
        assert peer.peer_certs == expected
        assert peer.connections == len(expected)
    finally:
        peer.stop()


def der(cert: fwpki.Issued) -> bytes:
    return cert.cert.public_bytes(serialization.Encoding.DER)
