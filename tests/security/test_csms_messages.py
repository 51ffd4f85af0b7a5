"""A CSMS that sends too much: one huge message, one split into many fragments, a flood.

The largest legitimate CSMS message is ~7 KB. A message over 64 KiB is refused before its
payload is read (close code 1009, one log line), and the daemon reconnects; messages read but
not yet handled are few, so a CSMS flooding a busy daemon fills its own TCP window instead of
the charger's memory. The daemon's peak RSS (VmHWM) is read from /proc during each attack.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ocpp.v16 import call

from agent.demo.csms import TestCsms
from tests.conftest import agent_config
from tests.security.hostile_net import NotifySink, peak_rss_mib, wait_until

CP = "CP-TEST-1"
RSS_BOUND_MIB = 100  # the daemon idles at ~30-45 MiB; a 128 MiB message read would pass this


@pytest.fixture
def notify() -> Iterator[NotifySink]:
    with NotifySink() as sink:
        yield sink


def server_side(csms: TestCsms):
    """The websockets connection of our charge point (to send raw, and read its close code)."""
    return csms.wait_for(lambda: csms._peers.get(CP), 15, "the connection")[1]


def send_in_background(csms: TestCsms, message) -> threading.Thread:
    """Send without waiting: the agent closes the connection in the middle of it."""

    def run() -> None:
        ws = server_side(csms)
        future = asyncio.run_coroutine_threadsafe(ws.send(message), csms._loop)
        with contextlib.suppress(Exception):
            future.result(60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def still_answers(csms: TestCsms) -> None:
    reply = csms.call(CP, call.TriggerMessage(requested_message="Heartbeat"), timeout=60)
    assert reply.status == "Accepted"


def test_a_128_mib_message_is_refused_unread_with_1009_and_the_agent_reconnects(
    tmp_path: Path, csms: TestCsms, run_agent
):
    agent = run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")
    ws = server_side(csms)
    huge = '[2,"big","DataTransfer",{"vendorId":"' + "x" * (128 << 20) + '"}]'
    sender = send_in_background(csms, huge)
    agent.wait_log("over the 65536-byte limit", timeout=60)
    csms.wait_for(lambda: csms.connections >= 2, 60, "the agent to reconnect")
    sender.join(60)
    assert ws.close_code == 1009
    peak = peak_rss_mib(agent.proc.pid)
    print(f"peak RSS {peak:.1f} MiB")
    assert peak < RSS_BOUND_MIB
    still_answers(csms)
    lines = [line for line in agent.log.splitlines() if "byte limit" in line]
    assert len(lines) == 1 and "1009" in lines[0], lines


def test_a_message_split_into_many_small_fragments_counts_as_one(
    tmp_path: Path, csms: TestCsms, run_agent
):
    """Each 1 KiB fragment is harmless; the message they build is not."""
    agent = run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")
    ws = server_side(csms)
    fragments = ['[2,"frag","DataTransfer",{"vendorId":"'] + ["y" * 1024] * 200 + ['"}]']
    send_in_background(csms, fragments)
    agent.wait_log("over the 65536-byte limit", timeout=60)
    csms.wait_for(lambda: csms.connections >= 2, 60, "the agent to reconnect")
    assert ws.close_code == 1009
    still_answers(csms)


def test_a_flood_while_the_loop_is_busy_stays_in_the_csms_tcp_window(
    tmp_path: Path, csms: TestCsms, notify: NotifySink, run_agent
):
    """The loop blocks (the test-only hang file); the CSMS sends 3000 messages of 60 KiB each
    (180 MB), every one under the size limit. The reader stops after a few; the CSMS's send
    blocks; the daemon's memory stays bounded; once the loop runs again, everything is read
    and the session goes on."""
    hang = tmp_path / "hang"
    env = {
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "400000",
        "OCPP_FW_AGENT_TEST_HANG_FILE": str(hang),
    }
    agent = run_agent(agent_config(tmp_path, csms.url), env=env)
    csms.wait_message("BootNotification")
    ws = server_side(csms)
    hang.touch()
    blocked = threading.Event()

    def flood() -> None:
        for n in range(3000):
            text = f'[3,"flood-{n}",{{"pad":"' + "z" * 60_000 + '"}]'
            future = asyncio.run_coroutine_threadsafe(ws.send(text), csms._loop)
            try:
                future.result(10)
            except TimeoutError:
                blocked.set()  # the agent stopped reading: back-pressure reached the CSMS
                return

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    flooder.join(600)
    assert blocked.is_set(), "the agent read all 180 MB while its loop was blocked"
    peak = peak_rss_mib(agent.proc.pid)
    print(f"peak RSS {peak:.1f} MiB")
    assert peak < RSS_BOUND_MIB
    hang.unlink()
    still_answers(csms)
    wait_until(lambda: "flood-2" in agent.log, 60, "the flood to be read once the loop runs")
