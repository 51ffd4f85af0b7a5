"""Sidecar fixtures: a real charge-point OCPP stack (the `ocpp` library's v16 ChargePoint on
`websockets`, test-only) that connects to the agent as if the agent were the CSMS.

The CSMS in front is two peers (`peer` is parametrised): the `ocpp` library's (Python, its
bundled schemas) and ocpp-rpc in strict mode (Node, AJV), so every frame the agent sends or
forwards for the stack is seen by two independent validators; neither may find a violation.
Tests that make their own CSMS (TLS, Basic auth, a second server) make it with `make_csms`.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, RemoteStartStopStatus

from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, ChargerRig
from agent.demo.stack import DemoStack
from tests.integration.test_security_profiles import Pki
from tests.peers.ocpp_rpc_csms import OcppRpcCsms, TlsFiles
from tests.sidecar.charger import SidecarCharger
from tests.sidecar.charger import free_port as free_port  # the tests' import of it

PEERS = ["ocpp", "ocpp-rpc"]
# The Node peer checks the agent's frames, which do not depend on the Python libraries' versions:
# its runs (`node_peer`) are in the PyPI pass only, which balances the two passes.
NODE_PEER = pytest.param("ocpp-rpc", marks=pytest.mark.node_peer)


class _StackSide(ChargePoint):  # type: ignore[misc]
    stack: Stack

    @on(Action.remote_start_transaction)
    def on_remote_start(self, **payload: Any) -> Any:
        self.stack.remote.append(("start", payload))
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, **payload: Any) -> Any:
        self.stack.remote.append(("stop", payload))
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> Any:
        """A legacy stack's keys, with its own (now meaningless) connection keys among them."""
        self.stack.remote.append(("get_configuration", {"key": key}))
        mine = [kv for kv in STACK_KEYS if key is None or kv["key"] in key]
        unknown = [k for k in key or [] if k not in {kv["key"] for kv in STACK_KEYS}]
        return call_result.GetConfiguration(configuration_key=mine, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> Any:
        self.stack.remote.append(("change_configuration", {"key": key, "value": value}))
        return call_result.ChangeConfiguration(status="Accepted")


# What the stack reports for itself: a legacy stack still claims the connection's keys, and
# some even give the AuthorizationKey away.
STACK_KEYS = [
    {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
    {"key": "SecurityProfile", "readonly": False, "value": "0"},
    {"key": "AuthorizationKey", "readonly": False, "value": "stack-leaks-this"},
]


class Stack(DemoStack):
    """The charger's own 1.6 stack (the demo's, with more answers and no heartbeat): blocking
    verbs for the tests, its loop in a thread; the CSMS's CALLs it answered in `remote`."""

    failure = AssertionError

    def __init__(self, url: str) -> None:
        super().__init__(url, "StackVendor", "S-1", _StackSide)
        self.remote: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.stop()


class Sidecar(SidecarCharger):
    """A charger in sidecar mode: the rig's agent between the test CSMS and a 1.6 stack."""

    def __init__(
        self, rig: ChargerRig, csms: TestCsms, agents: list[AgentProcess], stacks: list[Stack]
    ) -> None:
        super().__init__(rig, csms, agents)
        self._stacks = stacks

    def stack(self) -> Stack:
        stack = Stack(self.stack_url)
        self._stacks.append(stack)
        stack.connect()
        return stack


@pytest.fixture
def sidecar(
    tmp_path: Path, csms: TestCsms, agents: list[AgentProcess], stacks: list[Stack]
) -> Sidecar:
    return Sidecar(ChargerRig(tmp_path, csms.url), csms, agents, stacks)


# --- the CSMS in front: either peer ----------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_peers: in tests/sidecar, also run against ocpp-rpc (Node), not only the Python CSMS",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test with a CSMS runs on the Python peer; those marked `both_peers` (a subset
    that sends and forwards every message type, each security profile once) on ocpp-rpc too.
    SIDECAR_PEERS=both runs them all on both (README, "Two CSMS peers")."""
    if "peer" not in metafunc.fixturenames:
        return
    both = os.environ.get("SIDECAR_PEERS") == "both"
    if both or metafunc.definition.get_closest_marker("both_peers") is not None:
        metafunc.parametrize("peer", [PEERS[0], NODE_PEER], indirect=True)
    else:
        metafunc.parametrize("peer", PEERS[:1], indirect=True)


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_csms(
    peer: str,
    *,
    pki: Pki | None = None,
    client_certs: str = "none",
    auth: Callable[[str, bytes | None], bool] | None = None,
    python_class: type[TestCsms] = TestCsms,
    port: int = 0,
) -> TestCsms:
    """A started 1.6 CSMS of the named peer: plain ws://, or with `pki` wss:// with its server
    certificate, client certificates checked as `client_certs` says ("none", "optional" for
    profiles 2 and 3 on one server, "required" for profile 3). `python_class` is the Python
    CSMS's class when a test needs more handlers (the Node peer takes `answers` instead)."""
    if peer == "ocpp":
        context = None
        if pki is not None:
            context = pki.server_context(pki.server)
            if client_certs != "none":
                context.verify_mode = (
                    ssl.CERT_REQUIRED if client_certs == "required" else ssl.CERT_OPTIONAL
                )
                context.load_verify_locations(cafile=str(pki.dir / "ca.pem"))
        return python_class(ssl_context=context, auth=auth).start(port)
    tls = None
    if pki is not None:
        tls = TlsFiles(
            cert=str(pki.write("node-server.pem", pki.server.pem.encode())),
            key=str(pki.write("node-server.key", pki.server.key_pem)),
            ca=str(pki.dir / "ca.pem"),
            client=client_certs,
        )
    return OcppRpcCsms("1.6", auth=auth, tls=tls).start(port)


def stop_csms(server: TestCsms) -> None:
    """Stop it; whatever either validator found in the frames fails the test."""
    server.stop()
    peer = getattr(server, "peer_name", "ocpp")
    assert server.schema_violations == [], f"{peer} found frames that violate the schemas"


@pytest.fixture
def csms(peer: str) -> Iterator[TestCsms]:
    server = make_csms(peer)
    yield server
    stop_csms(server)
