"""The second CSMS peer: ocpp-rpc (Node, strict mode) behind the interface of `TestCsms`.

The Python CSMS checks the agent's frames with the `ocpp` library's schemas; a bug shared by
the agent and that library (both Python, both reading the same JSON) would pass unseen. This
peer is another implementation in another language: ocpp-rpc validates with AJV, its own copy
of the OCA schemas and ajv-formats' date-time, in both directions (issues #13, #14).

`tests/peers/ocpp_rpc/peer.js` is only the wire and the validator; this class decides
everything the Python CSMS decides (registration answers, clock, refusals, auth), records what
the peer reports in the same `received` / `frames` lists and answers the same queries, so a
test runs unchanged against either peer. What the Node validator refuses lands in
`schema_violations`, which the fixtures require to be empty.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.messages import CallError
from websockets.datastructures import Headers

from agent.demo.csms import Frame, TestCsms

PEER_DIR = Path(__file__).resolve().parent / "ocpp_rpc"
SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
CALL_RESULTS = {"1.6": "ocpp.v16.call_result", "2.0.1": "ocpp.v201.call_result"}
STATUS_ACTION = {"1.6": "SignedFirmwareStatusNotification", "2.0.1": "FirmwareStatusNotification"}
# Notifications a test may have refused (`answer_filter`), as on the Python CSMS.
REFUSABLE = {
    "SignedFirmwareStatusNotification",
    "FirmwareStatusNotification",
    "SecurityEventNotification",
}


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """What the Node peer serves wss:// with (PEM paths): its certificate and key, and the CA
    client certificates must verify against; `client` is "none", "optional" or "required"."""

    cert: str
    key: str
    ca: str = ""
    client: str = "none"


class PeerMissing(RuntimeError):
    """node_modules is absent: `make` installs it (the `peers` target), never a skip."""


class OcppRpcCsms(TestCsms):
    """`TestCsms`'s interface, served by ocpp-rpc 2.2.1 in strict mode (subprotocol per
    `version`). Start with `start()`; stop with `stop()`."""

    __test__ = False
    peer_name = "ocpp-rpc"

    def __init__(
        self,
        version: str = "1.6",
        auth: Callable[[str, bytes | None], bool] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(auth=auth, subprotocols=[SUBPROTOCOL[version]])
        self.tls = tls
        # Actions beyond the defaults this CSMS answers, with the answer's payload (camelCase),
        # as a `side_class` with more handlers does on the Python CSMS.
        self.answers: dict[str, dict[str, Any]] = {}
        self.peer_certs: list[bytes | None] = []  # each connection's client certificate (DER)
        self._loop.close()  # the base class's asyncio server is not used: node serves
        self.version = self.schema_version = version
        self._proc: subprocess.Popen[str] | None = None
        self._stdin: IO[str] | None = None
        self._write = threading.Lock()
        self._numbers = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._connected: dict[str, str] = {}  # identity -> subprotocol
        self._raw_ids: set[str] = set()  # ids of raw CALLs: their answers are ours, not bad
        self._threads: list[threading.Thread] = []
        self._exited = False
        self.stderr: list[str] = []

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, port: int = 0) -> OcppRpcCsms:
        if not (PEER_DIR / "node_modules" / "ocpp-rpc").is_dir():
            raise PeerMissing(f"run `make peers` (npm ci --prefix {PEER_DIR}) first")
        argv = ["node", "peer.js", ",".join(self.subprotocols)]
        argv.append(str(port))
        if self.tls is not None:
            argv.append(json.dumps(dataclasses.asdict(self.tls)))
        self._proc = subprocess.Popen(
            argv,
            cwd=PEER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._stdin = self._proc.stdin
        for target, stream in ((self._read_events, self._proc.stdout), (self._read_stderr, None)):
            thread = threading.Thread(target=target, args=(stream,) if stream else (), daemon=True)
            thread.start()
            self._threads.append(thread)
        self.wait_for(lambda: self.port or self._exited, 30, "the node peer to listen")
        if not self.port:
            raise RuntimeError(f"the node peer did not start: {''.join(self.stderr)}")
        return self

    @property
    def url(self) -> str:
        if self.tls is None:
            return super().url
        return f"wss://localhost:{self.port}/ocpp"  # the name the server certificate carries

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._command("stop", 10)
                proc.wait(10)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(10)
        for thread in self._threads:
            thread.join(10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    # --- what the peer reports ---------------------------------------------------------------

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.stderr.append(line)

    def _read_events(self, stream: IO[str]) -> None:
        for line in stream:
            message = json.loads(line)
            if "ask" in message:
                try:
                    answer = self._answer_ask(message)
                except Exception as exc:  # a test's callback failed: as the library does
                    self.stderr.append(f"answering {message}: {exc!r}\n")
                    answer = {"error": {"code": "InternalError", "description": repr(exc)}}
                self._send({"answer": message["ask"], **answer})
            else:
                with self._changed:
                    self._on_event(message)
                    self._changed.notify_all()
        with self._changed:
            self._exited = True
            self._changed.notify_all()

    def _on_event(self, message: dict[str, Any]) -> None:
        """One event line (called with `_changed` held)."""
        if "reply" in message:
            self._replies[message["reply"]] = message
            return
        event, identity = message["event"], message.get("identity")
        if event == "listening":
            self.port = message["port"]
        elif event == "connect":
            self._connected[identity] = message["protocol"]
            cert = message.get("cert")
            self.peer_certs.append(None if cert is None else base64.b64decode(cert))
            self.connections += 1
        elif event == "disconnect":
            self._connected.pop(identity, None)
        elif event == "frame":
            self.frames.append(Frame(message["direction"], message["text"], time.monotonic()))
        elif event == "violation":
            who = "the test CSMS" if message["outbound"] else "the agent"
            kind = "CALL" if message["is_call"] else "answer"
            self.schema_violations.append(
                f"ocpp-rpc: {message['action']} {kind} from {who}: {message['error']}"
            )
        elif event == "bad_message" and not self._answers_raw_call(message["text"]):
            self.schema_violations.append(
                f"ocpp-rpc: bad frame {message['error']}: {message['text'][:200]}"
            )

    def _answers_raw_call(self, text: str) -> bool:
        """The agent's answer to a frame `send_raw` sent: ocpp-rpc did not make that CALL, so it
        calls the answer unrecognised; the test reads it with `answer_to`."""
        try:
            parsed = json.loads(text)
        except ValueError:
            return False
        return isinstance(parsed, list) and parsed[:1] in ([3], [4]) and parsed[1] in self._raw_ids

    def _answer_ask(self, message: dict[str, Any]) -> dict[str, Any]:
        if message["kind"] == "auth":
            return {"accept": self._authorize(message)}
        return self._answer_call(message["identity"], message["action"], message["payload"])

    def _authorize(self, message: dict[str, Any]) -> bool:
        with self._changed:
            self.request_headers.append(Headers(message["headers"]))
            self._changed.notify_all()
        if self.auth is None:
            return True
        password = message["password"]
        return self.auth(
            message["identity"], None if password is None else base64.b64decode(password)
        )

    def _answer_call(self, identity: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """What the Python CSMS answers to the agent's CALL `action` (camelCase, as sent)."""
        snake = camel_to_snake_case(payload)
        self._note(identity, action, snake)
        if action in REFUSABLE and not self.answer_filter(action, snake):
            return {"error": {"code": "InternalError", "description": "test CSMS refuses this one"}}
        now = self.now().isoformat()
        if action == "BootNotification":
            status, interval = (
                self.boot_responses.pop(0)
                if self.boot_responses
                else ("Accepted", self.heartbeat_interval)
            )
            return {"result": {"currentTime": now, "interval": interval, "status": str(status)}}
        if action == "Heartbeat":
            return {"result": {"currentTime": now}}
        if action == "Authorize":
            return {"result": {"idTagInfo": {"status": "Accepted"}}}
        if action == "StartTransaction":
            self.transaction_ids += 1
            accepted = {"status": "Accepted"}
            return {"result": {"transactionId": self.transaction_ids, "idTagInfo": accepted}}
        if action in EMPTY_ANSWERS[self.version]:
            return {"result": {}}
        if action in self.answers:
            return {"result": self.answers[action]}
        return {"error": {"code": "NotImplemented", "description": f"{action} not handled"}}

    # --- commands ---------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        assert self._stdin is not None
        with self._write:
            self._stdin.write(json.dumps(message) + "\n")
            self._stdin.flush()

    def _command(self, cmd: str, timeout: float, **fields: Any) -> dict[str, Any]:
        number = next(self._numbers)
        self._send({"cmd": cmd, "id": number, **fields})
        self.wait_for(lambda: number in self._replies or self._exited, timeout, f"the peer's {cmd}")
        with self._changed:
            if number not in self._replies:
                raise AssertionError(f"the node peer exited: {''.join(self.stderr)}")
            return self._replies.pop(number)

    def statuses(self) -> list[tuple[str, int | None]]:
        """(status, requestId) of every firmware status notification, in arrival order."""
        return [
            (m.payload["status"], m.payload.get("request_id"))
            for m in self.messages(STATUS_ACTION[self.version])
        ]

    def connected(self, charge_point_id: str) -> bool:
        return charge_point_id in self._connected

    def call(self, charge_point_id: str, payload: Any, timeout: float = 15.0) -> Any:
        """Send a typed CALL (an `ocpp` call dataclass) through ocpp-rpc, which checks it and
        the agent's answer; return the answer as the `ocpp` library's call_result dataclass."""
        self.wait_for(lambda: self.connected(charge_point_id), timeout, "connection")
        action = type(payload).__name__
        params = remove_nones(snake_to_camel_case(serialize_as_dict(payload)))
        reply = self._command(
            "call",
            timeout + 5,
            identity=charge_point_id,
            action=action,
            payload=params,
            timeout_ms=int(timeout * 1000),
        )
        error = reply.get("error")
        if error is None:
            module = importlib.import_module(CALL_RESULTS[self.version])
            return getattr(module, action)(**camel_to_snake_case(reply["result"]))
        if error["strict"]:
            raise AssertionError(f"ocpp-rpc strict mode refused {action}: {error['description']}")
        if not error["rpc"]:  # no answer: a timeout, or the connection went away
            raise TimeoutError(f"{action}: {error['code']}: {error['description']}")
        raise CallError("", error["code"], error["description"], error["details"]).to_exception()

    def send_raw(self, charge_point_id: str, text: str) -> None:
        """Send a frame as is (malformed ones included), past ocpp-rpc's checks."""
        self.wait_for(lambda: self.connected(charge_point_id), 15, "connection")
        try:
            parsed = json.loads(text)
            if isinstance(parsed, list) and len(parsed) > 1 and parsed[0] == 2:
                with self._changed:
                    self._raw_ids.add(parsed[1])
        except ValueError:
            pass
        reply = self._command("send_raw", 10, identity=charge_point_id, text=text)
        assert "error" not in reply, reply

    def disconnect(self, charge_point_id: str) -> None:
        if self.connected(charge_point_id):
            self._command("disconnect", 10, identity=charge_point_id)


# CALLs of the agent (and of a charging stack behind it) whose answer has no fields.
EMPTY_ANSWERS = {
    "1.6": {
        "SignedFirmwareStatusNotification",
        "SecurityEventNotification",
        "StatusNotification",
        "MeterValues",
        "StopTransaction",
        "FirmwareStatusNotification",
        "DiagnosticsStatusNotification",
        "LogStatusNotification",
    },
    "2.0.1": {
        "FirmwareStatusNotification",
        "SecurityEventNotification",
        "StatusNotification",
        "NotifyEvent",
        "NotifyReport",
        "LogStatusNotification",
    },
}
