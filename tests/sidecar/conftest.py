"""Sidecar fixtures: a real charge-point OCPP stack (the `ocpp` library's v16 ChargePoint on
`websockets`, test-only) that connects to the agent as if the agent were the CSMS.

The CSMS in front is two peers (`peer` is parametrised): the `ocpp` library's (Python, its
bundled schemas) and ocpp-rpc in strict mode (Node, AJV), so every frame the agent sends or
forwards for the stack is seen by two independent validators; neither may find a violation.
Tests that make their own CSMS (TLS, Basic auth, a second server) make it with `make_csms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, RemoteStartStopStatus
from websockets.asyncio.client import ClientConnection, connect

from agent.demo.csms import TestCsms
from agent.demo.rig import AgentProcess, ChargerRig
from tests.e2e.conftest import wait_until
from tests.integration.test_security_profiles import Pki
from tests.peers.ocpp_rpc_csms import OcppRpcCsms, TlsFiles

PEERS = ["ocpp", "ocpp-rpc"]
# The Node peer checks the agent's frames, which do not depend on the Python libraries' versions:
# its runs (`node_peer`) are in the PyPI pass only, which balances the two passes.
NODE_PEER = pytest.param("ocpp-rpc", marks=pytest.mark.node_peer)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Recording:
    def __init__(self, ws: ClientConnection, stack: Stack) -> None:
        self._ws, self._stack = ws, stack

    async def recv(self) -> str:
        text = await self._ws.recv()
        assert isinstance(text, str)
        self._stack.record("in", text)
        return text

    async def send(self, text: str) -> None:
        self._stack.record("out", text)
        await self._ws.send(text)


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


class Stack:
    """The charger's own OCPP stack; blocking verbs for the tests, its loop in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: list[tuple[str, str]] = []  # (direction, text) as they crossed the wire
        self.remote: list[tuple[str, dict[str, Any]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ws: ClientConnection | None = None
        self._side: _StackSide | None = None
        self._task: Any = None

    def record(self, direction: str, text: str) -> None:
        self.frames.append((direction, text))

    def texts(self, direction: str) -> list[str]:
        return [text for d, text in list(self.frames) if d == direction]

    def _run(self, coroutine: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def connect(self, timeout: float = 30) -> None:
        """Connect, retrying while the agent refuses (the CSMS is down, or not yet up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run(self._connect())
                return
            except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake) as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the stack could not connect: {exc}") from exc
                time.sleep(0.2)

    async def _connect(self) -> None:
        ws = await connect(self.url, subprotocols=["ocpp1.6"], open_timeout=5)  # type: ignore[list-item]
        self._ws = ws
        side = _StackSide(self.url.rsplit("/", 1)[-1], _Recording(ws, self))
        side.stack = self
        self._side = side
        self._task = asyncio.ensure_future(self._serve(side))

    async def _serve(self, side: _StackSide) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await side.start()

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    def call(self, payload: Any) -> Any:
        assert self._side is not None
        return self._run(self._side.call(payload, suppress=False))

    def close(self) -> None:
        if self._ws is not None and self.connected:
            with contextlib.suppress(Exception):
                self._run(self._ws.close())
        if self._task is not None:
            wait_until(lambda: self._task.done(), 10, "the stack's reader to end")

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # --- the verbs a charging session uses ---

    def boot(self) -> Any:
        return self.call(
            call.BootNotification(charge_point_vendor="StackVendor", charge_point_model="S-1")
        )

    def start_transaction(self, id_tag: str = "TAG-1") -> int:
        reply = self.call(
            call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=100, timestamp=_now())
        )
        return int(reply.transaction_id)

    def meter_values(self, transaction_id: int, wh: int) -> None:
        sample = {"timestamp": _now(), "sampledValue": [{"value": str(wh)}]}
        self.call(
            call.MeterValues(connector_id=1, transaction_id=transaction_id, meter_value=[sample])
        )

    def stop_transaction(self, transaction_id: int, wh: int) -> None:
        self.call(
            call.StopTransaction(meter_stop=wh, timestamp=_now(), transaction_id=transaction_id)
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.stop()


class Sidecar:
    """A charger in sidecar mode: the rig's agent between the test CSMS and a stack."""

    def __init__(
        self, rig: ChargerRig, csms: TestCsms, agents: list[AgentProcess], stacks: list[Stack]
    ) -> None:
        self.rig, self.csms, self._agents, self._stacks = rig, csms, agents, stacks
        self.port = free_port()
        self.agent: AgentProcess | None = None

    @property
    def stack_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{self.rig.charge_point_id}"

    def start(self, **sections: Any) -> AgentProcess:
        sections.setdefault("csms", {})["mode"] = "sidecar"
        sections.setdefault("sidecar", {})["listen"] = f"127.0.0.1:{self.port}"
        self.agent = AgentProcess(self.rig.config(**sections)).start()
        self._agents.append(self.agent)
        return self.agent

    def restart(self) -> AgentProcess:
        self.agent = AgentProcess(self.rig.base / "agent.toml").start()
        self._agents.append(self.agent)
        return self.agent

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
