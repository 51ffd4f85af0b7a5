"""The strict Node peer is not a no-op: it refuses bad frames in each direction and says so.

A raw websocket client stands in for a broken charge point, so each violation is one we made
on purpose; the peer must answer CALLERROR where the protocol says so and list the violation in
`schema_violations` (which the fixtures of tests/cert16 and tests/v201 require to be empty).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from tests.peers.ocpp_rpc_csms import OcppRpcCsms

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
