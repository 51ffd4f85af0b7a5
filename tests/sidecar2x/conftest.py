"""Sidecar fixtures for OCPP 2.0.1 and 2.1: a real charge-point stack (the `ocpp` library's v201
or v21 ChargePoint on `websockets`, test-only) connects to the agent as if it were the CSMS, and
the 2.x test CSMS (`Csms2x`, which checks every CALL it receives against that version's
schemas) sits in front, taking the stack's transaction messages as a CSMS does."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from websockets.asyncio.client import ClientConnection, connect

from agent.demo.csms import Csms2x, _side_2x
from agent.demo.rig import AgentProcess, ChargerRig
from tests.e2e.conftest import wait_until
from tests.sidecar.conftest import free_port


def library(version: str) -> Any:
    """The `ocpp` library's module for `version` (ocpp.v201, ocpp.v21)."""
    return importlib.import_module("ocpp.v" + version.replace(".", ""))


class SidecarCsms(Csms2x):
    """The 2.x test CSMS, also taking what a charging stack sends (TransactionEvent)."""

    __test__ = False

    def __init__(self, version: str) -> None:
        super().__init__(version)
        results = library(version).call_result

        class Side(_side_2x(version)):  # type: ignore[misc]
            @on("TransactionEvent")
            def on_transaction_event(self, **payload: Any) -> Any:
                self.csms._note(self.id, "TransactionEvent", payload)
                return results.TransactionEvent()

        self.side_class = Side


class _Recording:
    """The stack's websocket, every frame recorded as it crossed the wire."""

    def __init__(self, ws: ClientConnection, stack: Stack2x) -> None:
        self._ws, self._stack = ws, stack

    async def recv(self) -> str:
        text = await self._ws.recv()
        assert isinstance(text, str)
        self._stack.frames.append(("in", text))
        return text

    async def send(self, text: str) -> None:
        self._stack.frames.append(("out", text))
        await self._ws.send(text)


def _stack_side(version: str) -> type[Any]:
    """The stack's own ChargePoint: it answers the device-model and trigger CALLs a CSMS
    sends it (the agent must forward them), noting each."""
    module = library(version)
    results = module.call_result

    class StackSide(module.ChargePoint):  # type: ignore[misc,name-defined]
        stack: Stack2x

        @on("GetVariables")
        def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
            self.stack.handled.append("GetVariables")
            answers = [
                {
                    "attributeStatus": "Accepted",
                    "attributeValue": "stack's",
                    "component": item["component"],
                    "variable": item["variable"],
                }
                for item in get_variable_data
            ]
            return results.GetVariables(get_variable_result=answers)

        @on("TriggerMessage")
        def on_trigger(self, requested_message: str, **_: Any) -> Any:
            self.stack.handled.append(f"TriggerMessage {requested_message}")
            return results.TriggerMessage(status="Accepted")

    return StackSide


class Stack2x:
    """The charger's own 2.x stack; blocking verbs for the tests, its loop in a thread."""

    def __init__(self, url: str, version: str, offer: str | None = None) -> None:
        self.url, self.version = url, version
        self.offer = offer or f"ocpp{version}"
        self.library = library(version)
        self.frames: list[tuple[str, str]] = []  # (direction, text)
        self.handled: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ws: ClientConnection | None = None
        self._side: Any = None
        self._task: Any = None
        self._seq = 0

    def texts(self, direction: str) -> list[str]:
        return [text for d, text in list(self.frames) if d == direction]

    def _run(self, coroutine: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def connect(self, timeout: float = 30) -> None:
        """Connect, retrying while the agent answers 503 (its CSMS link not yet up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run(self._connect())
                return
            except websockets.InvalidStatus as exc:
                if exc.response.status_code != 503 or time.monotonic() > deadline:
                    raise
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the stack could not connect: {exc}") from exc
            time.sleep(0.2)

    async def _connect(self) -> None:
        ws = await connect(self.url, subprotocols=[self.offer], open_timeout=5)  # type: ignore[list-item]
        self._ws = ws
        side = _stack_side(self.version)(self.url.rsplit("/", 1)[-1], _Recording(ws, self))
        side.stack = self
        self._side = side
        self._task = asyncio.ensure_future(self._serve(side))

    async def _serve(self, side: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await side.start()

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    def call(self, payload: Any) -> Any:
        assert self._side is not None
        return self._run(self._side.call(payload, suppress=False))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._ws is not None and self.connected:
            with contextlib.suppress(Exception):
                self._run(self._ws.close())
        if self._task is not None:
            wait_until(lambda: self._task.done(), 10, "the stack's reader to end")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # --- the verbs a charging session uses ---

    def boot(self, reason: str = "PowerUp") -> Any:
        station = {"model": "S-2", "vendorName": "StackVendor"}
        return self.call(
            self.library.call.BootNotification(charging_station=station, reason=reason)
        )

    def heartbeat(self) -> Any:
        return self.call(self.library.call.Heartbeat())

    def transaction_event(self, kind: str, transaction: str, wh: int) -> Any:
        """TransactionEvent Started/Updated/Ended with one energy reading."""
        self._seq += 1
        extra: dict[str, Any] = {}
        if kind == "Started":
            extra["evse"] = {"id": 1, "connectorId": 1}
            extra["id_token"] = {"idToken": "TAG-1", "type": "ISO14443"}
        reading = {"timestamp": _now(), "sampledValue": [{"value": wh}]}
        reasons = {
            "Started": "Authorized",
            "Updated": "MeterValuePeriodic",
            "Ended": "StopAuthorized",
        }
        return self.call(
            self.library.call.TransactionEvent(
                event_type=kind,
                timestamp=_now(),
                trigger_reason=reasons[kind],
                seq_no=self._seq,
                transaction_info={"transactionId": transaction},
                meter_value=[reading],
                **extra,
            )
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Sidecar2x:
    """A charger in sidecar mode speaking `version`: the rig's agent between the 2.x test
    CSMS and a 2.x stack."""

    def __init__(
        self, rig: ChargerRig, csms: SidecarCsms, version: str, agents: list[AgentProcess]
    ) -> None:
        self.rig, self.csms, self.version, self._agents = rig, csms, version, agents
        self.port = free_port()
        self.stacks: list[Stack2x] = []
        self.agent: AgentProcess | None = None

    @property
    def stack_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{self.rig.charge_point_id}"

    def start(self, **sections: Any) -> AgentProcess:
        csms = sections.setdefault("csms", {})
        csms.update(mode="sidecar", ocpp_version=self.version)
        sections.setdefault("sidecar", {})["listen"] = f"127.0.0.1:{self.port}"
        self.agent = AgentProcess(self.rig.config(**sections)).start()
        self._agents.append(self.agent)
        return self.agent

    def restart(self) -> AgentProcess:
        self.agent = AgentProcess(self.rig.base / "agent.toml").start()
        self._agents.append(self.agent)
        return self.agent

    def stack(self, offer: str | None = None) -> Stack2x:
        stack = Stack2x(self.stack_url, self.version, offer)
        self.stacks.append(stack)
        stack.connect()
        return stack


def _sidecar(tmp_path: Path, version: str, agents: list[AgentProcess]) -> Iterator[Sidecar2x]:
    server = SidecarCsms(version).start()
    sidecar = Sidecar2x(ChargerRig(tmp_path, server.url), server, version, agents)
    try:
        yield sidecar
    finally:
        for stack in sidecar.stacks:
            stack.stop()
        for agent in agents:
            agent.stop()
        server.stop()
    assert server.schema_violations == [], "frames at the CSMS that violate the schemas"


@pytest.fixture
def sidecar201(tmp_path: Path, agents: list[AgentProcess]) -> Iterator[Sidecar2x]:
    yield from _sidecar(tmp_path, "2.0.1", agents)


@pytest.fixture
def sidecar21(tmp_path: Path, agents: list[AgentProcess]) -> Iterator[Sidecar2x]:
    yield from _sidecar(tmp_path, "2.1", agents)
