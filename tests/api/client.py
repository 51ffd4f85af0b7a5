"""A host's client for the agent's local API, written from the README ("Local API mode") alone.

Stdlib only and self-contained, so it also runs as a script under another uid (`setpriv`):
`python client.py SOCKET` says hello and prints the reply line, or the error, as JSON.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

WAIT = 60.0  # seconds; generous: the tests wait for conditions, never for time


class ApiCallError(Exception):
    """An error reply: {"id", "error": {"code", "message"}}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class Closed(Exception):
    """The agent closed the connection."""


class ApiClient:
    """One connection: requests with ids, replies in order, events in a queue."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._ids = itertools.count(1)
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.unsolicited: list[dict[str, Any]] = []  # error lines with "id": null
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            with self.sock.makefile("rb") as lines:
                for line in lines:
                    message = json.loads(line)
                    if "event" in message:
                        self.events.put(message)
                    else:
                        if message.get("id") is None:
                            self.unsolicited.append(message)
                        self._replies.put(message)
        except OSError:
            pass  # reset: as closed
        self.closed.set()
        self._replies.put(None)

    def send_line(self, data: bytes) -> None:
        """Send; a connection the agent closed already is seen at the next reply."""
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def reply(self) -> dict[str, Any]:
        """The next reply line (or an unsolicited error line)."""
        try:
            message = self._replies.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no reply from the agent") from None
        if message is None:
            raise Closed("the agent closed the connection")
        return message

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a request and return its result, or raise ApiCallError."""
        request_id = next(self._ids)
        request = {"id": request_id, "method": method, "params": params}
        self.send_line(json.dumps(request).encode("utf-8") + b"\n")
        message = self.reply()
        assert message.get("id") in (request_id, None), message
        if "error" in message:
            raise ApiCallError(message["error"]["code"], message["error"]["message"])
        result: dict[str, Any] = message["result"]
        return result

    def hello(self) -> dict[str, Any]:
        return self.call("hello", api=1)

    def drain(self) -> list[dict[str, Any]]:
        """The events received so far (not waiting for more)."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def next_event(self, timeout: float = WAIT) -> dict[str, Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no event from the agent") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.closed.wait(5)


class Host:
    """What a charger's stack does with the events: hand them on, ack, remember."""

    def __init__(self, client: ApiClient, ack: bool = True) -> None:
        self.client = client
        self.ack = ack
        self.durable: list[dict[str, Any]] = []  # status and security_event, as received
        self.live: list[dict[str, Any]] = []  # progress and gate

    def take(self, event: dict[str, Any]) -> None:
        if "seq" in event:
            self.durable.append(event)
            if self.ack:
                self.client.call("ack", seq=event["seq"])
        else:
            self.live.append(event)

    def until(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Handle events until one satisfies `done`; return it."""
        while True:
            event = self.client.next_event()
            self.take(event)
            if done(event):
                return event

    def until_status(self, status: str) -> dict[str, Any]:
        """The status event `status`, received already or awaited."""
        for event in self.durable:
            if event["event"] == "status" and event["status"] == status:
                return event
        return self.until(lambda e: e.get("event") == "status" and e.get("status") == status)

    def statuses(self) -> list[tuple[str, int]]:
        return [(e["status"], e["request_id"]) for e in self.durable if e["event"] == "status"]


def main(path: str) -> int:
    """Connect, say hello, print what came back as one JSON line."""
    try:
        client = ApiClient(path)
    except OSError as exc:
        print(json.dumps({"connect_error": exc.strerror or str(exc)}))
        return 1
    try:
        print(json.dumps({"result": client.hello()}))
    except ApiCallError as exc:
        print(json.dumps({"error": exc.code, "message": str(exc)}))
    except Closed:
        print(json.dumps({"closed": True}))
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
