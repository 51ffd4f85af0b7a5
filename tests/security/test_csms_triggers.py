"""A CSMS that repeats a trigger: the charger's queue of triggered messages stays bounded.

TriggerMessage is answered at once and the triggered message sent after it (OCPP 1.6 §5.17);
while one is waiting, a repeat of the same trigger is answered by that same message, so 500
triggers in a burst queue one Heartbeat, not 500 (L01.FR.28 for the firmware status: the
triggered status is the current one whichever trigger asked).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent.demo.csms import TestCsms
from tests.conftest import agent_config

CP = "CP-TEST-1"


def burst(csms: TestCsms, frames: list[str]) -> None:
    """Send all frames back to back from the CSMS's loop, without awaiting any answer."""
    ws = csms.wait_for(lambda: csms._peers.get(CP), 15, "the connection")[1]

    async def send_all() -> None:
        for frame in frames:
            await ws.send(frame)

    asyncio.run_coroutine_threadsafe(send_all(), csms._loop).result(60)


def trigger(unique_id: str, message: str) -> str:
    return json.dumps([2, unique_id, "TriggerMessage", {"requestedMessage": message}])


def test_a_burst_of_the_same_trigger_queues_one_message(tmp_path: Path, csms: TestCsms, run_agent):
    run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")
    frames = [trigger(f"t{n}", "Heartbeat") for n in range(500)]
    burst(csms, [*frames, trigger("last", "FirmwareStatusNotification")])  # behind them
    assert csms.answer_to("t499", timeout=60)[0] == 3
    csms.wait_message("SignedFirmwareStatusNotification", timeout=60)
    heartbeats = len(csms.messages("Heartbeat"))
    # Exactly 500 when every trigger queued its own; how many fewer depends on how the burst
    # interleaves with the answers, but each one sent found the queue empty first.
    assert 1 <= heartbeats < 100, heartbeats
