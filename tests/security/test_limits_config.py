"""The hostile-input bounds are configurable in `[csms]`, and the configured value is the one
enforced (issue 11): a CSMS message, the handshake answer, messages waiting for the loop, and
the outbox's entries and bytes. Each test sets a bound below its default and mounts an input
between the two, so it would pass unnoticed if the configuration were ignored. Values outside
a bound's range are refused at load, one line naming the key.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent import config as config_module
from agent.config import ConfigError, CsmsConfig
from agent.demo.csms import TestCsms
from agent.demo.rig import ChargerRig, Firmware
from agent.ocpp import connection, outbox
from agent.ocpp.connection import Received, Transport, TransportEvent
from agent.ocpp.outbox import Outbox
from tests.conftest import agent_config
from tests.e2e import conftest as e2e
from tests.security.hostile_net import Peer, RawServer, wait_until

rig, charger, firmware, fileserver = e2e.rig, e2e.charger, e2e.firmware, e2e.fileserver

CP = "CP-TEST-1"
EVENT = "SecurityEventNotification"


def parse(**csms: Any) -> config_module.Config:
    raw = {
        "csms": {"url": "ws://csms.invalid/ocpp", "charge_point_id": CP, "security_profile": 0}
        | csms,
        "identity": {"vendor": "V", "model": "M"},
    }
    return config_module.parse(raw, Path("agent.toml"))


def test_the_defaults_are_the_modules_bounds() -> None:
    csms = parse().csms
    assert csms.max_message_bytes == connection.MAX_MESSAGE == 65536
    assert csms.max_handshake_bytes == connection.MAX_HANDSHAKE == 16384
    assert csms.max_pending_messages == connection.PENDING_MESSAGES == 8
    assert csms.outbox_max_entries == outbox.MAX_ENTRIES == 500
    assert csms.outbox_max_bytes == outbox.MAX_BYTES == 256 * 1024


@pytest.mark.parametrize("key", sorted(config_module.LIMITS))
def test_a_bound_outside_its_range_is_refused_at_load(key: str) -> None:
    low, high = config_module.LIMITS[key]
    assert getattr(parse(**{key: low}).csms, key) == low
    assert getattr(parse(**{key: high}).csms, key) == high
    for nonsense in (low - 1, high + 1, 0, -1, "64k", 1.5, True):
        with pytest.raises(ConfigError) as caught:
            parse(**{key: nonsense})
        (line,) = caught.value.problems
        assert line.startswith(f"agent.toml: [csms] {key}: expected an integer {low}-{high}")


def test_a_configured_max_message_bytes_is_enforced(
    tmp_path: Path, csms: TestCsms, run_agent: Any
) -> None:
    """20 KiB passes the default 64 KiB; with max_message_bytes = 16384 it is refused unread,
    closed with 1009, and the agent reconnects."""
    agent = run_agent(agent_config(tmp_path, csms.url, csms={"max_message_bytes": 16384}))
    csms.wait_message("BootNotification")
    ws = csms.wait_for(lambda: csms._peers.get(CP), 15, "the connection")[1]
    text = '[2,"big","DataTransfer",{"vendorId":"v","data":"' + "x" * 20_000 + '"}]'
    future = asyncio.run_coroutine_threadsafe(ws.send(text), csms._loop)
    agent.wait_log("over the 16384-byte limit", timeout=60)
    csms.wait_for(lambda: csms.connections >= 2, 60, "the agent to reconnect")
    future.exception(60)
    assert ws.close_code == 1009


def test_a_configured_max_handshake_bytes_is_enforced(tmp_path: Path, run_agent: Any) -> None:
    """A 101 answer whose header never ends: cut off at the configured 4096 bytes."""

    def endless_header(peer: Peer) -> None:
        peer.read_head()
        peer.send(b"HTTP/1.1 101 Switching Protocols\r\nX-Endless: ")
        while not peer.server.done.is_set():
            peer.send(b"e" * 1024)

    with RawServer(endless_header) as endpoint:
        url = f"ws://127.0.0.1:{endpoint.port}/ocpp"
        agent = run_agent(agent_config(tmp_path, url, csms={"max_handshake_bytes": 4096}))
        wait_until(lambda: "handshake answer over" in agent.log, 180, "the attempt to fail")
    assert "handshake answer over 4096 bytes" in agent.log


def _waiting_for_credit(thread: threading.Thread) -> bool:
    """The transport's reader is blocked waiting for the loop to take a message."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "_take_credit":
            return True
        frame = frame.f_back
    return False


def test_a_configured_max_pending_messages_is_enforced(csms: TestCsms) -> None:
    """With max_pending_messages = 2 and a loop that takes nothing, the reader stops after
    two messages although six are there; each message the loop takes lets one more in."""
    events: list[TransportEvent] = []
    changed = threading.Condition()

    def post(event: TransportEvent) -> None:
        with changed:
            events.append(event)
            changed.notify_all()

    def received() -> int:
        return sum(isinstance(e, Received) for e in events)

    settings = CsmsConfig(
        url=csms.url,
        charge_point_id=CP,
        security_profile=0,
        ping_interval=0,
        reconnect_min=0.2,
        reconnect_max=1,
        max_pending_messages=2,
    )
    transport = Transport(settings, post)
    transport.start()
    try:
        for n in range(6):
            csms.send_raw(CP, json.dumps([3, f"m-{n}", {}]))
        reader = transport._thread
        with changed:
            assert changed.wait_for(
                lambda: received() == 2 and _waiting_for_credit(reader), timeout=60
            ), f"{received()} messages read"
        assert received() == 2
        for _ in range(4):
            transport.consumed()
        with changed:
            assert changed.wait_for(lambda: received() == 6, timeout=60)
    finally:
        transport.stop()


def refuse(charger: e2e.Charger, firmware: Firmware, n: int) -> None:
    """A request refused with its own reason (a certificate of 5501 + n characters)."""
    payload = {
        "requestId": n,
        "firmware": {
            "location": firmware.url,
            "retrieveDateTime": "2020-01-01T00:00:00Z",
            "signingCertificate": "x" * (5501 + n),
            "signature": firmware.signature,
        },
    }
    assert charger.update_raw(payload)[2] == {"status": "InvalidCertificate"}


def queued(rig: ChargerRig) -> Outbox:
    """The daemon's outbox as on disk (read under its journal lock), unbounded."""
    return Outbox(rig.state / "outbox.json", max_entries=10**6, max_bytes=1 << 40)


def test_a_configured_outbox_max_entries_is_enforced(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware
) -> None:
    """40 distinct refusals the CSMS never acknowledges: 20 entries at most, not 500."""
    charger.csms.answer_filter = lambda action, payload: action != EVENT
    agent = charger.start(csms={"outbox_max_entries": 20})
    charger.csms.wait_message("BootNotification")
    for n in range(40):
        refuse(charger, firmware, n)
    agent.wait_log("outbox full (20 entries, 262144 bytes at most)", timeout=60)
    assert 0 < len(queued(rig)) <= 20


def test_a_configured_outbox_max_bytes_is_enforced(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware
) -> None:
    """100 distinct refusals (~250 bytes each as counted) the CSMS never acknowledges: 16 KiB
    at most, not 256 KiB."""
    charger.csms.answer_filter = lambda action, payload: action != EVENT
    agent = charger.start(csms={"outbox_max_bytes": 16384})
    charger.csms.wait_message("BootNotification")
    for n in range(100):
        refuse(charger, firmware, n)
    agent.wait_log("outbox full (500 entries, 16384 bytes at most)", timeout=60)
    on_disk = queued(rig)
    assert 0 < on_disk.size_bytes <= 16384 and len(on_disk) < 100
