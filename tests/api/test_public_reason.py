"""What a host forwards to its CSMS about a failed update names nothing of the charger's layout
or configuration: a `status` event for a failure carries the full `reason` (the host's log)
and `public_reason` + `reason_code` (the CSMS's statusInfo), which hold no slot path and no
`allowed_hosts`. Real agent in API mode, real socket, the core's own failure messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.api.events import EventLog, wire_event
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import SLOT_SIZE, ChargerRig, Firmware
from tests.api.client import Host
from tests.api.conftest import ApiCharger

ALLOWED = ("127.0.0.1", "localhost")  # the rig's [firmware] allowed_hosts


def private_parts(rig: ChargerRig) -> list[str]:
    return [*map(str, rig.slots.values()), str(rig.base), "allowed_hosts", *ALLOWED]


def failed_update(charger: ApiCharger, host: Host, firmware: Firmware, request_id: int) -> Any:
    """Start an update the agent accepts and then fails; its DownloadFailed event."""
    params = charger.update_params(firmware, request_id)
    assert host.client.call("start_update", **params) == {"status": "Accepted"}
    host.client.call("response_sent", request_id=request_id)
    return host.until(
        lambda e: e.get("request_id") == request_id and e.get("status") == "DownloadFailed"
    )


def test_a_failed_update_tells_the_host_a_public_reason_without_slot_or_allowed_hosts(
    charger: ApiCharger, rig: ChargerRig, fileserver: FirmwareHttpServer
) -> None:
    """L01.FR.07 through the local API: a host outside allowed_hosts, then an image larger
    than the slot. Each DownloadFailed event keeps the full cause in `reason` and gives the
    host `public_reason` (what went wrong, in the agent's words) and the 2.x `reason_code`
    (InvalidURL, OutOfStorage) to forward; neither names the slot or allowed_hosts."""
    charger.start()
    host = Host(charger.connect())

    refused = Firmware("http://firmware.example.invalid/fw.bin", b"", rig.sign(b"x"))
    event = failed_update(charger, host, refused, 81)
    assert "allowed_hosts (127.0.0.1, localhost)" in event["reason"]  # the host's log has it
    assert event["reason_code"] == "InvalidURL"
    assert "download host is not allowed" in event["public_reason"]
    assert not [part for part in private_parts(rig) if part in event["public_reason"]], event

    huge = bytes(SLOT_SIZE + 4096)
    fileserver.put("/fw/huge.bin", huge)
    event = failed_update(
        charger, host, Firmware(fileserver.url("/fw/huge.bin"), huge, rig.sign(b"x")), 82
    )
    assert f"slot {rig.slots['B']}" in event["reason"]
    assert event["reason_code"] == "OutOfStorage"
    assert "does not fit" in event["public_reason"]
    assert not [part for part in private_parts(rig) if part in event["public_reason"]], event

    # Statuses that are no failure carry no reason of either kind.
    started = [e for e in host.durable if e.get("status") == "Downloading"]
    assert started and all("public_reason" not in e and "reason_code" not in e for e in started)
    charger.stop()


def test_a_failure_journalled_before_public_reason_existed_gets_one_on_the_wire(
    tmp_path: Path,
) -> None:
    """An agent upgraded with a failure still unacknowledged in its journal: the event it
    replays is given its public fields from the status and the reason it kept."""
    log = EventLog(tmp_path / "api-events.json")
    reason = "download host 'x.example' of http://x.example/f is not in allowed_hosts (10.9.8.7)"
    old = {"status": "DownloadFailed", "request_id": 5, "reason": reason}
    log.append_all([("status", old)])

    event = wire_event(EventLog(tmp_path / "api-events.json").entries()[0])
    assert event is not None and event["reason"] == reason
    assert event["reason_code"] == "InvalidURL"
    assert "download host is not allowed" in event["public_reason"]
    assert "10.9.8.7" not in event["public_reason"]
