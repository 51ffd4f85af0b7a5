"""A CSMS that repeats a trigger: the charger's queue of triggered messages stays bounded.

TriggerMessage is answered at once and the triggered message sent after it (OCPP 1.6 §5.17);
while one is waiting, a repeat of the same trigger is answered by that same message, so 500
triggers in a burst queue one Heartbeat, not 500 (L01.FR.28 for the firmware status: the
triggered status is the current one whichever trigger asked).

The count is made exact by the CSMS holding its answer to the first Heartbeat: OCPP-J has one
CALL in flight, so the whole burst arrives while that Heartbeat is outstanding and must wait in
the queue, whatever the scheduling of the agent's reads and sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def hold_first_heartbeat(csms: TestCsms) -> Callable[[], None]:
    """Make the CSMS leave the first Heartbeat unanswered (while reading on) until the returned
    function is called. Set before the agent connects: the side is made per connection."""
    release = asyncio.Event()
    base: type[Any] = csms.side_class

    class HoldingSide(base):  # type: ignore[misc,valid-type]
        held = False

        async def route_message(self, raw_msg: str) -> None:
            parsed = json.loads(raw_msg)
            if parsed[0] == 2 and parsed[2] == "Heartbeat" and not HoldingSide.held:
                HoldingSide.held = True

                async def answer_when_released() -> None:
                    await release.wait()
                    await base.route_message(self, raw_msg)

                self.held_answer = asyncio.ensure_future(answer_when_released())
                return
            await super().route_message(raw_msg)

    csms.side_class = HoldingSide
    return lambda: csms._loop.call_soon_threadsafe(release.set)


def heartbeat_calls(csms: TestCsms) -> int:
    """Heartbeat CALLs that reached the CSMS, answered or not."""
    with csms._changed:
        frames = list(csms.frames)
    return sum(
        1 for f in frames if f.direction == "in" and f.parsed[0] == 2 and f.parsed[2] == "Heartbeat"
    )


def test_a_burst_of_the_same_trigger_queues_one_message(tmp_path: Path, csms: TestCsms, run_agent):
    release = hold_first_heartbeat(csms)
    csms.heartbeat_interval = 86400  # no periodic Heartbeat, however long the test takes
    # A CALL timeout that never passes: the held Heartbeat stays the one in flight.
    run_agent(agent_config(tmp_path, csms.url, csms={"call_timeout": 86400}))
    csms.wait_message("BootNotification")
    burst(csms, [trigger("t0", "Heartbeat")])
    csms.wait_for(lambda: heartbeat_calls(csms) == 1, 60, "the first (held) Heartbeat")
    frames = [trigger(f"t{n}", "Heartbeat") for n in range(1, 500)]
    burst(csms, [*frames, trigger("last", "FirmwareStatusNotification")])  # behind them
    assert csms.answer_to("last", timeout=60)[0] == 3  # every trigger of the burst was taken
    assert heartbeat_calls(csms) == 1  # nothing else goes while the first one is unanswered
    statuses = len(csms.messages("SignedFirmwareStatusNotification"))  # any from the boot
    release()
    csms.wait_message("SignedFirmwareStatusNotification", statuses + 1, timeout=60)
    # The held one, then the one all 499 repeats share; 500 if each queued its own, and the
    # firmware status queued behind them comes after all of them.
    assert heartbeat_calls(csms) == 2
    assert len(csms.messages("Heartbeat")) == 2
