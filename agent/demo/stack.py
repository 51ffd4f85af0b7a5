"""A small charge-point OCPP stack for `ocpp-fw-agent demo --sidecar`, and the link under it.

It plays the charger's own charging stack: the `ocpp` library's ChargePoint on a `websockets`
client, pointed at the agent's sidecar listener as if the agent were the CSMS. It boots, beats
at the interval the CSMS gave, reports connector status and runs a transaction; the demo drives
it with blocking verbs while its loop runs in a thread. Every frame it sent or received is kept
(`frames`), so the demo can tell its traffic from the agent's on the CSMS's side of the link.

`StackClient` is that link for any OCPP version (the subprotocol it offers and the ChargePoint
class that answers the CSMS's CALLs are its arguments); the sidecar tests build their 1.6 and
2.x stacks on it. Like the demo CSMS it needs the test-only libraries; the daemon never imports
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, ChargePointErrorCode, RemoteStartStopStatus
from websockets.asyncio.client import ClientConnection, connect

from agent.demo.waiting import hang_guard


def timestamp() -> str:
    """Now as an OCPP dateTime (whole seconds, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Recorded:
    """What ChargePoint needs (recv/send), keeping every frame in the stack's record."""

    def __init__(self, ws: ClientConnection, stack: StackClient) -> None:
        self._ws, self._stack = ws, stack

    async def recv(self) -> str:
        text = await self._ws.recv()
        assert isinstance(text, str)
        self._stack.frames.append(("in", text))
        return text

    async def send(self, text: str) -> None:
        self._stack.frames.append(("out", text))
        await self._ws.send(text)


class StackClient:
    """A charge-point stack's link to the agent's listener, its loop in a thread.

    Each connection offers `subprotocol` and gets a new `side_class` (an `ocpp` ChargePoint of
    that version, told its stack as `side.stack`) to answer the CSMS's CALLs; `call` sends the
    stack's own. Reconnects (after a power cycle, a dropped link) keep the same `frames`."""

    # What `connect` raises when it gives up (tests make it a test failure).
    failure: type[Exception] = RuntimeError

    def __init__(self, url: str, subprotocol: str, side_class: type[Any]) -> None:
        self.url, self.subprotocol, self.side_class = url, subprotocol, side_class
        self.frames: list[tuple[str, str]] = []  # (direction, text), as they crossed the wire
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ws: ClientConnection | None = None
        self._side: Any = None
        self._reader: asyncio.Future[Any] | None = None
        self._others: list[asyncio.Future[Any]] = []  # what runs beside the reader (heartbeat)

    def texts(self, direction: str) -> list[str]:
        """The frames that went `direction` ("in" or "out"), in order."""
        return [text for d, text in list(self.frames) if d == direction]

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """`coroutine` on the stack's loop, awaited; its deadline only catches a hang."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(max(30.0, hang_guard()))

    # --- the link ---------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Connect, retrying while nobody listens or the agent refuses (HTTP 503 until it is
        on the CSMS), as a charger's stack does after its own boot; for `timeout` seconds, by
        default until a hang is likely (a minute, or the test suite's hang guard)."""
        limit = max(60.0, hang_guard()) if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            try:
                self._run(self._connect())
                return
            except (OSError, websockets.InvalidHandshake) as exc:
                if not self.worth_retrying(exc):
                    raise
                if time.monotonic() > deadline:
                    raise self.failure(f"the stack could not reach {self.url}: {exc}") from exc
            time.sleep(0.2)

    def worth_retrying(self, exc: Exception) -> bool:
        """Whether a failed attempt may succeed later: here any refusal may."""
        return True

    async def _connect(self) -> None:
        ws = await connect(self.url, subprotocols=[self.subprotocol], open_timeout=5)  # type: ignore[list-item]
        side = self.side_class(self.url.rsplit("/", 1)[-1], _Recorded(ws, self))
        side.stack = self
        self._ws, self._side = ws, side
        self._reader = asyncio.ensure_future(self._serve(side))

    async def _serve(self, side: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await side.start()

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    def _beside(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run `coroutine` on the stack's loop until the link is closed."""

        async def start() -> None:
            self._others.append(asyncio.ensure_future(coroutine))

        self._run(start())

    def close(self) -> None:
        """The link closes (the charger goes down): what ran beside the reader stops, and the
        reader ends with the connection."""
        if self._ws is not None:
            tasks = [*self._others, *([self._reader] if self._reader is not None else [])]
            self._run(self._close(self._ws, self._others, tasks))
            self._ws, self._side, self._others = None, None, []

    @staticmethod
    async def _close(
        ws: ClientConnection, others: list[asyncio.Future[Any]], tasks: list[asyncio.Future[Any]]
    ) -> None:
        for task in others:
            task.cancel()
        await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Close the link and end the loop; a second call does nothing."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def call(self, payload: Any) -> Any:
        """Send one of the stack's own CALLs; its CALLRESULT (a CALLERROR raises)."""
        assert self._side is not None, "not connected"
        return self._run(self._side.call(payload, suppress=False))


class _Side(ChargePoint):  # type: ignore[misc]
    """The stack's answers to the CSMS's CALLs (those the agent forwards to it)."""

    stack: DemoStack

    @on(Action.remote_start_transaction)  # type: ignore[untyped-decorator,misc]
    def on_remote_start(self, id_tag: str, **_: Any) -> Any:
        self.stack.remote_starts.append(id_tag)
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)


class DemoStack(StackClient):
    """One charger's 1.6 charging stack: what it sends, as blocking verbs."""

    def __init__(self, url: str, vendor: str, model: str, side_class: type[Any] = _Side) -> None:
        super().__init__(url, "ocpp1.6", side_class)
        self.vendor, self.model = vendor, model
        self.remote_starts: list[str] = []  # idTags of RemoteStartTransaction, accepted

    def power_off(self) -> None:
        """The charger goes down: the heartbeat stops and the link closes."""
        self.close()

    def boot(self, firmware_version: str | None = None) -> Any:
        """BootNotification; its CALLRESULT (status, interval)."""
        return self.call(
            call.BootNotification(
                charge_point_vendor=self.vendor,
                charge_point_model=self.model,
                firmware_version=firmware_version,
            )
        )

    def beat(self, interval: int) -> None:
        """Heartbeats every `interval` seconds (at least one) until the link closes."""
        self._beside(self._beat(max(interval, 1)))

    async def _beat(self, interval: int) -> None:
        while self._side is not None:
            await asyncio.sleep(interval)
            side = self._side
            if side is None:
                return
            with contextlib.suppress(asyncio.TimeoutError, websockets.ConnectionClosed):
                await side.call(call.Heartbeat())

    def status(self, connector: int, status: str) -> None:
        self.call(
            call.StatusNotification(
                connector_id=connector,
                error_code=ChargePointErrorCode.no_error,
                status=status,
                timestamp=timestamp(),
            )
        )

    def start_transaction(
        self, id_tag: str = "TAG-1", meter_wh: int = 100, connector: int = 1
    ) -> int:
        reply = self.call(
            call.StartTransaction(
                connector_id=connector, id_tag=id_tag, meter_start=meter_wh, timestamp=timestamp()
            )
        )
        return int(reply.transaction_id)

    def meter_values(self, transaction_id: int, meter_wh: int, connector: int = 1) -> None:
        sample = {
            "timestamp": timestamp(),
            "sampledValue": [{"value": str(meter_wh), "unit": "Wh"}],
        }
        self.call(
            call.MeterValues(
                connector_id=connector, transaction_id=transaction_id, meter_value=[sample]
            )
        )

    def stop_transaction(self, transaction_id: int, meter_wh: int) -> None:
        self.call(
            call.StopTransaction(
                meter_stop=meter_wh, timestamp=timestamp(), transaction_id=transaction_id
            )
        )
