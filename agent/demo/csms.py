"""A real CSMS for tests: the mobilityhouse `ocpp` library on a `websockets` server, on loopback.

It runs its own asyncio loop in a thread. Tests talk to it synchronously: wait for messages the
agent sent, send CALLs (typed, through `ocpp`) or raw frames, and read what the agent answered.
Every CALL the agent sends is validated against the library's official JSON schemas of the
version spoken (1.6 here; 2.0.1 or 2.1 with `Csms2x`); violations are collected in
`schema_violations` and checked by the fixture at teardown.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import importlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import websockets
from ocpp.exceptions import InternalError
from ocpp.messages import Call as LibCall
from ocpp.messages import validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, RegistrationStatus
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from agent.demo.waiting import hang_guard


@dataclasses.dataclass
class Frame:
    """One websocket text message, in either direction, as it crossed the wire."""

    direction: str  # "in" (from the agent) or "out" (to the agent)
    text: str
    at: float

    @property
    def parsed(self) -> list[Any]:
        value = json.loads(self.text)
        assert isinstance(value, list)
        return value


@dataclasses.dataclass
class Received:
    charge_point_id: str
    action: str
    payload: dict[str, Any]
    at: float


class _RecordingConnection:
    """What `ocpp.ChargePoint` needs (recv/send), recording every frame."""

    def __init__(self, ws: ServerConnection, csms: TestCsms) -> None:
        self._ws = ws
        self._csms = csms

    async def recv(self) -> str:
        text = await self._ws.recv()
        assert isinstance(text, str)
        await self._csms._check_schema(text)
        self._csms._record(Frame("in", text, time.monotonic()))
        return text

    async def send(self, text: str) -> None:
        self._csms._record(Frame("out", text, time.monotonic()))
        await self._ws.send(text)


class _CentralSystemSide(ChargePoint):  # type: ignore[misc]
    """The CSMS's view of one charge point, answering what the agent sends."""

    csms: TestCsms

    @on(Action.boot_notification)
    def on_boot(self, **payload: Any) -> Any:
        self.csms._note(self.id, "BootNotification", payload)
        status, interval = (
            self.csms.boot_responses.pop(0)
            if self.csms.boot_responses
            else (
                RegistrationStatus.accepted,
                self.csms.heartbeat_interval,
            )
        )
        return call_result.BootNotification(
            current_time=self.csms.now().isoformat(), interval=interval, status=status
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **payload: Any) -> Any:
        self.csms._note(self.id, "Heartbeat", payload)
        return call_result.Heartbeat(current_time=self.csms.now().isoformat())

    @on(Action.signed_firmware_status_notification)
    def on_signed_status(self, **payload: Any) -> Any:
        self.csms._note(self.id, "SignedFirmwareStatusNotification", payload)
        self._maybe_refuse("SignedFirmwareStatusNotification", payload)
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.security_event_notification)
    def on_security_event(self, **payload: Any) -> Any:
        self.csms._note(self.id, "SecurityEventNotification", payload)
        self._maybe_refuse("SecurityEventNotification", payload)
        return call_result.SecurityEventNotification()

    # A charging stack's traffic, for sidecar mode (the charger's own stack behind the agent).

    @on(Action.status_notification)
    def on_status(self, **payload: Any) -> Any:
        self.csms._note(self.id, "StatusNotification", payload)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, **payload: Any) -> Any:
        self.csms._note(self.id, "Authorize", payload)
        return call_result.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action.start_transaction)
    def on_start_transaction(self, **payload: Any) -> Any:
        self.csms._note(self.id, "StartTransaction", payload)
        self.csms.transaction_ids += 1
        return call_result.StartTransaction(
            transaction_id=self.csms.transaction_ids, id_tag_info={"status": "Accepted"}
        )

    @on(Action.meter_values)
    def on_meter_values(self, **payload: Any) -> Any:
        self.csms._note(self.id, "MeterValues", payload)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    def on_stop_transaction(self, **payload: Any) -> Any:
        self.csms._note(self.id, "StopTransaction", payload)
        return call_result.StopTransaction()

    def _maybe_refuse(self, action: str, payload: dict[str, Any]) -> None:
        if not self.csms.answer_filter(action, payload):
            raise InternalError(description="test CSMS refuses this one")


async def _drain(connection: _RecordingConnection) -> None:
    """Read (and so record) the frames a closed connection had already received."""
    try:
        while True:
            await connection.recv()
    except websockets.ConnectionClosed:
        pass


class TestCsms:
    """Start with `start()`; `url` is the base URL the agent appends its identity to."""

    __test__ = False  # not a pytest test class
    # The OCPP version spoken: the library's ChargePoint class and the schemas checked.
    side_class: type[Any] = _CentralSystemSide
    schema_version = "1.6"
    status_action = "SignedFirmwareStatusNotification"  # the firmware status notification

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        auth: Callable[[str, bytes | None], bool] | None = None,
        subprotocols: list[str] | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.auth = auth
        self.subprotocols = subprotocols if subprotocols is not None else ["ocpp1.6"]
        self.heartbeat_interval = 300
        self.transaction_ids = 0  # the last transactionId handed out
        self.boot_responses: list[tuple[RegistrationStatus, int]] = []
        self.clock_offset = datetime.timedelta(0)
        self.received: list[Received] = []
        self.frames: list[Frame] = []
        self.schema_violations: list[str] = []
        self.request_headers: list[Headers] = []
        self.connections = 0
        self.port = 0
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self._peers: dict[str, tuple[Any, ServerConnection]] = {}
        # Return False to answer a status or security notification with CALLERROR InternalError.
        self.answer_filter: Callable[[str, dict[str, Any]], bool] = lambda action, payload: True

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        host = "localhost" if self.ssl_context else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}/ocpp"

    def start(self, port: int = 0) -> TestCsms:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(10)
        return self

    async def _start(self, port: int) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            port,
            subprotocols=self.subprotocols or None,  # type: ignore[arg-type]
            ssl=self.ssl_context,
            process_request=self._process_request,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop.is_closed():
            return

        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()
            # Finish every task (a charge point's reader, a pending call) inside the loop:
            # left suspended, they would be torn down later by the garbage collector, after
            # the loop is gone, and complain into whichever test runs then.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + self.clock_offset

    # --- the server side --------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.request_headers.append(request.headers)
        if self.auth is None:
            return None
        charge_point_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        password: bytes | None = None
        header = request.headers.get("Authorization")
        if header and header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).partition(b":")
            if user.decode() != charge_point_id:
                password = None
        if self.auth(charge_point_id, password):
            return None
        return connection.respond(401, "unauthorized\n")

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        charge_point_id = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        connection = _RecordingConnection(ws, self)
        side = self.side_class(charge_point_id, connection)
        side.csms = self
        self._peers[charge_point_id] = (side, ws)
        with self._changed:
            self.connections += 1
            self._changed.notify_all()
        try:
            await side.start()
        except websockets.ConnectionClosed:
            # The library stops reading when a send fails on a closing link; what the agent
            # sent before it closed still counts (an answer just before a reconnect, A01).
            await _drain(connection)
        finally:
            if self._peers.get(charge_point_id, (None, None))[1] is ws:
                del self._peers[charge_point_id]

    def _record(self, frame: Frame) -> None:
        with self._changed:
            self.frames.append(frame)
            self._changed.notify_all()

    async def _check_schema(self, text: str) -> None:
        try:
            parsed = json.loads(text)
        except ValueError:
            self.schema_violations.append(f"not JSON: {text[:200]}")
            return
        if isinstance(parsed, list) and parsed and parsed[0] == 2:
            try:
                await validate_payload(
                    LibCall(parsed[1], parsed[2], parsed[3]), self.schema_version
                )
            except Exception as exc:
                self.schema_violations.append(f"{parsed[2]}: {exc}")

    def _note(self, charge_point_id: str, action: str, payload: dict[str, Any]) -> None:
        with self._changed:
            self.received.append(Received(charge_point_id, action, payload, time.monotonic()))
            self._changed.notify_all()

    # --- what tests use ---------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        """Block until `predicate()` is truthy (re-checked on every frame); return its value.
        The deadline only catches a hang: the test suite raises it to its hang guard."""
        deadline = time.monotonic() + max(timeout, hang_guard())
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what or predicate}")
                self._changed.wait(min(remaining, 0.2))

    def messages(self, action: str | None = None) -> list[Received]:
        with self._changed:
            return [m for m in self.received if action is None or m.action == action]

    def wait_message(self, action: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        """Wait until the agent has sent `count` CALLs of `action`; return them all."""
        return self.wait_for(  # type: ignore[no-any-return]
            lambda: found if len(found := self.messages(action)) >= count else None,
            timeout,
            f"{count} x {action}",
        )

    def statuses(self) -> list[tuple[str, int | None]]:
        """(status, requestId) of every firmware status notification, in arrival order."""
        return [
            (m.payload["status"], m.payload.get("request_id"))
            for m in self.messages(self.status_action)
        ]

    def connected(self, charge_point_id: str) -> bool:
        return charge_point_id in self._peers

    def call(self, charge_point_id: str, payload: Any, timeout: float = 15.0) -> Any:
        """Send a typed CALL through `ocpp` and return the agent's (validated) answer."""
        side, _ = self.wait_for(lambda: self._peers.get(charge_point_id), timeout, "connection")
        future = asyncio.run_coroutine_threadsafe(side.call(payload, suppress=False), self._loop)
        return future.result(timeout)

    def send_raw(self, charge_point_id: str, text: str) -> None:
        """Send a raw frame (malformed ones included) to the agent."""
        _, ws = self.wait_for(lambda: self._peers.get(charge_point_id), 15, "connection")
        self._record(Frame("out", text, time.monotonic()))
        asyncio.run_coroutine_threadsafe(ws.send(text), self._loop).result(10)

    def answer_index(self, unique_id: str) -> int | None:
        """The index in `frames` (append-only, so it stays put) of the agent's CALLRESULT or
        CALLERROR for `unique_id`, if it has come: tests compare indices to assert order."""
        for index, frame in enumerate(list(self.frames)):
            if frame.direction != "in":
                continue
            try:
                parsed = frame.parsed
            except (ValueError, AssertionError):
                continue
            if len(parsed) > 1 and parsed[0] in (3, 4) and parsed[1] == unique_id:
                return index
        return None

    def answer_to(self, unique_id: str, timeout: float = 10.0) -> list[Any]:
        """The agent's CALLRESULT or CALLERROR frame for `unique_id`."""

        def find() -> list[Any] | None:
            index = self.answer_index(unique_id)
            return None if index is None else self.frames[index].parsed

        return self.wait_for(find, timeout, f"answer to {unique_id}")  # type: ignore[no-any-return]

    def disconnect(self, charge_point_id: str) -> None:
        """Close the agent's connection from the server side."""
        peer = self._peers.get(charge_point_id)
        if peer is not None:
            asyncio.run_coroutine_threadsafe(peer[1].close(), self._loop).result(10)


# --- OCPP 2.0.1 and 2.1 ---------------------------------------------------------------------


def _side_2x(version: str) -> type[Any]:
    """The CSMS's view of one charging station in 2.0.1 or 2.1: the library's ChargePoint of
    that version (its schemas check our answers to its CALLs), answering what the agent sends.
    The two versions' messages the agent sends have the same names and answers."""
    library = importlib.import_module("ocpp.v" + version.replace(".", ""))
    results = library.call_result

    class Side(library.ChargePoint):  # type: ignore[misc,name-defined]
        csms: TestCsms

        @on("BootNotification")
        def on_boot(self, **payload: Any) -> Any:
            self.csms._note(self.id, "BootNotification", payload)
            status, interval = (
                self.csms.boot_responses.pop(0)
                if self.csms.boot_responses
                else ("Accepted", self.csms.heartbeat_interval)
            )
            return results.BootNotification(
                current_time=self.csms.now().isoformat(), interval=interval, status=status
            )

        @on("Heartbeat")
        def on_heartbeat(self, **payload: Any) -> Any:
            self.csms._note(self.id, "Heartbeat", payload)
            return results.Heartbeat(current_time=self.csms.now().isoformat())

        @on("FirmwareStatusNotification")
        def on_status(self, **payload: Any) -> Any:
            self.csms._note(self.id, "FirmwareStatusNotification", payload)
            self._maybe_refuse("FirmwareStatusNotification", payload)
            return results.FirmwareStatusNotification()

        @on("SecurityEventNotification")
        def on_security_event(self, **payload: Any) -> Any:
            self.csms._note(self.id, "SecurityEventNotification", payload)
            self._maybe_refuse("SecurityEventNotification", payload)
            return results.SecurityEventNotification()

        # Direct mode's device model and availability: taken and answered as a CSMS does.
        @on("StatusNotification")
        def on_connector_status(self, **payload: Any) -> Any:
            self.csms._note(self.id, "StatusNotification", payload)
            return results.StatusNotification()

        @on("NotifyEvent")
        def on_event(self, **payload: Any) -> Any:
            self.csms._note(self.id, "NotifyEvent", payload)
            return results.NotifyEvent()

        @on("NotifyReport")
        def on_report(self, **payload: Any) -> Any:
            self.csms._note(self.id, "NotifyReport", payload)
            return results.NotifyReport()

        def _maybe_refuse(self, action: str, payload: dict[str, Any]) -> None:
            if not self.csms.answer_filter(action, payload):
                raise InternalError(description="test CSMS refuses this one")

    Side.__name__ = Side.__qualname__ = f"CsmsSide{version.replace('.', '')}"
    return Side


class Csms2x(TestCsms):
    """`TestCsms` speaking OCPP 2.0.1 or 2.1 (subprotocol `ocpp<version>`), checking every
    CALL the agent sends against that version's schemas."""

    __test__ = False
    status_action = "FirmwareStatusNotification"

    def __init__(self, version: str = "2.0.1", **options: Any) -> None:
        self.side_class = _side_2x(version)
        self.schema_version = version
        super().__init__(subprotocols=[f"ocpp{version}"], **options)
