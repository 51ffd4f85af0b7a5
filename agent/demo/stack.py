"""A small charge-point OCPP 1.6 stack for `ocpp-fw-agent demo --sidecar`.

It plays the charger's own charging stack: the `ocpp` library's ChargePoint on a `websockets`
client, pointed at the agent's sidecar listener as if the agent were the CSMS. It boots, beats
at the interval the CSMS gave, reports connector status and runs a transaction; the demo drives
it with blocking verbs while its loop runs in a thread. Every frame it sent or received is kept
(`frames`), so the demo can tell its traffic from the agent's on the CSMS's side of the link.
Like the demo CSMS it needs the test-only libraries; the daemon never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, ChargePointErrorCode, RemoteStartStopStatus
from websockets.asyncio.client import ClientConnection, connect


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Recorded:
    """What ChargePoint needs (recv/send), keeping every frame in the stack's record."""

    def __init__(self, ws: ClientConnection, stack: DemoStack) -> None:
        self._ws, self._stack = ws, stack

    async def recv(self) -> str:
        text = await self._ws.recv()
        assert isinstance(text, str)
        self._stack.frames.append(("in", text))
        return text

    async def send(self, text: str) -> None:
        self._stack.frames.append(("out", text))
        await self._ws.send(text)


class _Side(ChargePoint):  # type: ignore[misc]
    """The stack's answers to the CSMS's CALLs (those the agent forwards to it)."""

    stack: DemoStack

    @on(Action.remote_start_transaction)  # type: ignore[untyped-decorator,misc]
    def on_remote_start(self, id_tag: str, **_: Any) -> Any:
        self.stack.remote_starts.append(id_tag)
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)


class DemoStack:
    """One charger's charging stack; reconnects (after a power cycle) keep the same record."""

    def __init__(self, url: str, vendor: str, model: str) -> None:
        self.url = url
        self.vendor, self.model = vendor, model
        self.frames: list[tuple[str, str]] = []  # (direction, text), as they crossed the wire
        self.remote_starts: list[str] = []  # idTags of RemoteStartTransaction, accepted
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ws: ClientConnection | None = None
        self._side: _Side | None = None
        self._tasks: list[asyncio.Future[Any]] = []

    def _run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # --- the link ---------------------------------------------------------------------------

    def connect(self, timeout: float = 60) -> None:
        """Connect, retrying while nobody listens or the agent refuses (HTTP 503 until it is
        on the CSMS), as a charger's stack does after its own boot."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run(self._connect())
                return
            except (OSError, websockets.InvalidHandshake) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the stack could not reach {self.url}: {exc}") from exc
                time.sleep(0.2)

    async def _connect(self) -> None:
        ws = await connect(self.url, subprotocols=["ocpp1.6"], open_timeout=5)  # type: ignore[list-item]
        side = _Side(self.url.rsplit("/", 1)[-1], _Recorded(ws, self))
        side.stack = self
        self._ws, self._side = ws, side
        self._tasks = [asyncio.ensure_future(self._serve(side))]

    async def _serve(self, side: _Side) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await side.start()

    def power_off(self) -> None:
        """The charger goes down: the heartbeat stops and the link closes."""
        if self._ws is not None:
            self._run(self._close(self._ws, self._tasks))
            self._ws, self._side, self._tasks = None, None, []

    @staticmethod
    async def _close(ws: ClientConnection, tasks: list[asyncio.Future[Any]]) -> None:
        for task in tasks[1:]:  # the heartbeat; the reader ends with the connection
            task.cancel()
        await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.power_off()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # --- what a charging stack sends --------------------------------------------------------

    def _call(self, payload: Any) -> Any:
        assert self._side is not None, "not connected"
        return self._run(self._side.call(payload, suppress=False))

    def boot(self, firmware_version: str) -> str:
        """BootNotification; once accepted, Heartbeats at the interval the CSMS gave."""
        reply = self._call(
            call.BootNotification(
                charge_point_vendor=self.vendor,
                charge_point_model=self.model,
                firmware_version=firmware_version,
            )
        )
        if reply.status == "Accepted":
            self._run(self._start_heartbeat(int(reply.interval)))
        return str(reply.status)

    async def _start_heartbeat(self, interval: int) -> None:
        self._tasks.append(asyncio.ensure_future(self._beat(max(interval, 1))))

    async def _beat(self, interval: int) -> None:
        while self._side is not None:
            await asyncio.sleep(interval)
            side = self._side
            if side is None:
                return
            with contextlib.suppress(asyncio.TimeoutError, websockets.ConnectionClosed):
                await side.call(call.Heartbeat())

    def status(self, connector: int, status: str) -> None:
        self._call(
            call.StatusNotification(
                connector_id=connector,
                error_code=ChargePointErrorCode.no_error,
                status=status,
                timestamp=_now(),
            )
        )

    def start_transaction(self, connector: int, id_tag: str, meter_wh: int) -> int:
        reply = self._call(
            call.StartTransaction(
                connector_id=connector, id_tag=id_tag, meter_start=meter_wh, timestamp=_now()
            )
        )
        return int(reply.transaction_id)

    def meter_values(self, connector: int, transaction_id: int, meter_wh: int) -> None:
        sample = {
            "timestamp": _now(),
            "sampledValue": [{"value": str(meter_wh), "unit": "Wh"}],
        }
        self._call(
            call.MeterValues(
                connector_id=connector, transaction_id=transaction_id, meter_value=[sample]
            )
        )

    def stop_transaction(self, transaction_id: int, meter_wh: int) -> None:
        self._call(
            call.StopTransaction(
                meter_stop=meter_wh, timestamp=_now(), transaction_id=transaction_id
            )
        )
