"""The daemon's loop thread never waits out a trial's arming (L01.FR.26/27).

The daemon runs in this process, in API mode, on the rig's file slots, with a bootloader that
takes as long as the test wants to arm the trial: `arm_trial` blocks until the test releases
it. While it is blocked, a new `start_update` is answered Rejected (the arming cannot be
undone, L01.FR.27), `cancel` is answered too_late, and `get_status` is served, all before
the bootloader is released: the order is asserted, not the time. Before, each of them waited
for the ownership lock (and the backend) that the arming holds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import config as config_module
from agent.demo.rig import ChargerRig, Firmware
from agent.service.daemon import Daemon
from agent.slots.base import BackendError, BootObservation
from agent.slots.filemodel import FileModelBackend
from tests.api.client import ApiCallError, ApiClient, Host
from tests.api.conftest import GROUP, wait_for


class SlowBootloader(FileModelBackend):
    """The rig's file backend, whose arming waits for the test (a slow bootloader)."""

    arming: threading.Event
    release: threading.Event

    def _do_arm_trial(self, slot: str, before: BootObservation) -> None:
        self.arming.set()
        if not self.release.wait(300):
            raise BackendError("the test never released the arming")
        super()._do_arm_trial(slot, before)


class InProcessAgent:
    """A Daemon on a thread of this process; stopped as SIGTERM would."""

    def __init__(self, config: config_module.Config, backend: SlowBootloader) -> None:
        self.daemon = Daemon(config, backend)
        self.thread = threading.Thread(target=self.daemon.run, name="daemon-loop", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the daemon's loop did not stop"


@pytest.fixture
def slow(rig: ChargerRig, sockdir: Path) -> Iterator[tuple[InProcessAgent, SlowBootloader, Path]]:
    socket_path = sockdir / "api.sock"
    path = rig.config(
        csms={"mode": "api"},
        api={"socket": str(socket_path), "group": str(GROUP)},
        firmware={"gate_poll_interval": 30},
    )
    config = config_module.load(path)
    slots = config.slots
    backend = SlowBootloader(slots.devices, slots.options, config.state_dir)
    backend.arming, backend.release = threading.Event(), threading.Event()
    agent = InProcessAgent(config, backend)
    agent.start()
    wait_for(socket_path.exists, "the agent's socket")
    try:
        yield agent, backend, socket_path
    finally:
        backend.release.set()
        agent.stop()


def params(rig: ChargerRig, firmware: Firmware, request_id: int) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "location": firmware.url,
        "retrieve_date_time": "2020-01-01T00:00:00Z",
        "signing_certificate": rig.signer.pem,
        "signature": firmware.signature,
    }


def test_l01_fr_27_requests_during_an_arming_are_answered_before_it_ends(
    slow: tuple[InProcessAgent, SlowBootloader, Path], rig: ChargerRig, firmware: Firmware
) -> None:
    """L01.FR.27 while the bootloader is arming: a new request is Rejected, a cancel is
    too_late and the status is served, each before the arming is released; the update then
    goes on to its reboot and the refused request left no trace."""
    agent, backend, socket_path = slow
    client = ApiClient(str(socket_path))
    client.hello()
    host = Host(client)
    client.call("start_update", **params(rig, firmware, 81))
    client.call("response_sent", request_id=81)
    host.until_status("InstallScheduled")
    client.call("allow_installation", request_id=81)
    assert backend.arming.wait(120), "the worker never began arming"

    other = ApiClient(str(socket_path))
    other.hello()
    assert other.call("start_update", **params(rig, firmware, 82)) == {"status": "Rejected"}
    assert not backend.release.is_set()
    with pytest.raises(ApiCallError) as refused:
        other.call("cancel", request_id=81)
    assert refused.value.code == "too_late"
    assert other.call("get_status")["request_id"] == 81
    assert not backend.release.is_set()  # all of it answered while the arming was held

    backend.release.set()
    host.until_status("InstallRebooting")
    assert agent.daemon.updater.snapshot() is not None
    assert (agent.daemon.updater.snapshot() or {})["request_id"] == 81
    assert all(request_id == 81 for _, request_id in host.statuses())
    client.close()
    other.close()
