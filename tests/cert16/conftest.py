"""OCPP 1.6 certification fixtures: the e2e charger rig, and the CSMS as two peers.

Every case here runs twice: against the `ocpp` library's CSMS (Python, its bundled schemas) and
against ocpp-rpc in strict mode (Node, AJV): two validators in two languages see every frame
the agent sends, and neither may find a violation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.demo.csms import TestCsms
from tests.e2e import conftest as e2e
from tests.peers.ocpp_rpc_csms import OcppRpcCsms

# The e2e rig, firmware server, image and charger, reused as they are (`rig` takes our `csms`).
fileserver, firmware, rig, charger = e2e.fileserver, e2e.firmware, e2e.rig, e2e.charger

# The Node peer's runs (`node_peer`) are in the PyPI pass only (Makefile).
PEERS = ["ocpp", pytest.param("ocpp-rpc", marks=pytest.mark.node_peer)]


def make_csms(peer: str, **options: object) -> TestCsms:
    """A started 1.6 CSMS of the named peer (options: `auth`)."""
    if peer == "ocpp":
        return TestCsms(**options).start()  # type: ignore[arg-type]
    return OcppRpcCsms("1.6", **options).start()  # type: ignore[arg-type]


@pytest.fixture(params=PEERS)
def peer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def csms(peer: str) -> Iterator[TestCsms]:
    server = make_csms(peer)
    yield server
    server.stop()
    assert server.schema_violations == [], f"{peer} found frames that violate the schemas"
