"""A whole signed update driven through the local API by a host written from the README:
the agent as a real process in API mode, file slots, the reboot, the trial boot, Installed."""

from __future__ import annotations

import pytest

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from tests.api.client import Host
from tests.api.conftest import ApiCharger

# A whole update through the reboot, as in tests/e2e: the Debian pass runs it (Makefile).
pytestmark = pytest.mark.slow

REQUEST = 4711
BEFORE_REBOOT = [
    "Downloading",
    "Downloaded",
    "SignatureVerified",
    "InstallScheduled",  # waiting for allow_installation (L01.FR.34)
    "Installing",
    "InstallRebooting",
]


def test_a_whole_update_through_the_api_with_the_reboot_and_installed(
    charger: ApiCharger, rig: ChargerRig, firmware: Firmware, fileserver: FirmwareHttpServer
) -> None:
    """L01 through the API: answered Accepted, statuses with the requestId (L01.FR.10), the
    gate waits for allow_installation, InstallRebooting acked before the reboot (L01.FR.15),
    boot reason FirmwareUpdate after it, Installed + FirmwareUpdated, a trigger then Idle
    (L01.FR.28)."""
    fileserver.faults.rate = len(firmware.image) // 3  # a slow link: progress events to see
    agent = charger.start()
    client = charger.connect()
    host = Host(client)
    assert client.call("get_boot_reason") == {"boot_reason": "PowerUp"}
    assert client.call("get_status") == {"status": "Idle"}

    answer = client.call("start_update", **charger.update_params(firmware, REQUEST))
    assert answer == {"status": "Accepted"}
    client.call("response_sent", request_id=REQUEST)

    gate = host.until(lambda e: e["event"] == "gate")
    assert gate == {"event": "gate", "request_id": REQUEST, "waiting": "allow_installation"}
    host.until_status("InstallScheduled")
    assert client.call("get_status") == {"status": "InstallScheduled", "request_id": REQUEST}
    assert not rig.reboot_marker.exists()  # nothing happens without the host's allowance
    assert client.call("allow_installation") == {"request_id": REQUEST}
    host.until_status("InstallRebooting")  # acked by the host: the agent may reboot now

    rig.wait_reboot_request(agent)
    assert "did not confirm the status in time" not in agent.log  # it waited for the ack
    assert host.statuses() == [(s, REQUEST) for s in BEFORE_REBOOT]
    progress = [e for e in host.live if e["event"] == "progress"]
    assert progress, "no progress event during a three-second download"
    for event in progress:
        assert event["request_id"] == REQUEST
        assert event["phase"] in ("downloading", "verifying")
        assert 0 <= event["bytes_done"] <= len(firmware.image)
    charger.close_clients()

    assert rig.power_cycle(agent) == "B"
    charger.restart()
    client = charger.connect(hello=False)
    assert client.hello()["boot_reason"] == "FirmwareUpdate"
    host.client = client
    client.call("boot_accepted", csms_time="2026-11-30T00:00:00Z")  # the trial's health signal
    host.until_status("Installed")
    updated = host.until(lambda e: e["event"] == "security_event")
    assert updated["type"] == "FirmwareUpdated"

    assert host.statuses() == [(s, REQUEST) for s in [*BEFORE_REBOOT, "Installed"]]
    seqs = [e["seq"] for e in host.durable]
    assert seqs == sorted(set(seqs)), "seq grows strictly, across the reboot too"
    assert client.call("get_status") == {"status": "Idle"}
    assert rig.slots["B"].read_bytes()[: len(firmware.image)] == firmware.image
    charger.stop()
