"""2.1's statusInfo on a failed FirmwareStatusNotification says what went wrong, never the
charger's layout or configuration: no slot path, no allowed_hosts, no local file (the full
reason stays in the local log). Real agent, real 2.1 CSMS (`ocpp`), the core's own messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import SLOT_SIZE, ChargerRig, Firmware
from agent.firmware import errors
from agent.firmware.fetch_base import FetchSettings
from agent.firmware.writer import SlotWriter
from agent.ocpp import v16
from agent.service.v2x_adapter import failure_info
from tests.v21.conftest import Station

ALLOWED = ("127.0.0.1", "localhost")  # the rig's [firmware] allowed_hosts


def private_parts(rig: ChargerRig) -> list[str]:
    return [*map(str, rig.slots.values()), str(rig.base), "allowed_hosts", *ALLOWED]


def additional_info(station: Station, request_id: int) -> str:
    for message in reversed(station.csms.messages("FirmwareStatusNotification")):
        if message.payload.get("request_id") == request_id and "status_info" in message.payload:
            return str(message.payload["status_info"].get("additional_info", ""))
    raise AssertionError(f"no failed notification for request {request_id}")


def test_a_failed_update_over_2_1_names_neither_the_slot_nor_the_allowed_hosts(
    station: Station, rig: ChargerRig, fileserver: FirmwareHttpServer
) -> None:
    """L01.FR.07 in 2.1: a host outside allowed_hosts, then an image larger than the slot:
    DownloadFailed with statusInfo (InvalidURL, OutOfStorage) whose additionalInfo says what
    went wrong in words of its own; the log keeps the full reason."""
    agent = station.start()
    refused = Firmware("http://firmware.example.invalid/fw.bin", b"", rig.sign(b"x"))
    assert station.update(refused, 71).status == "Accepted"
    station.wait_status("DownloadFailed")
    info = additional_info(station, 71)
    assert "download host is not allowed" in info
    assert not [part for part in private_parts(rig) if part in info], info

    huge = bytes(SLOT_SIZE + 4096)
    fileserver.put("/fw/huge.bin", huge)
    too_large = Firmware(fileserver.url("/fw/huge.bin"), huge, rig.sign(huge))
    assert station.update(too_large, 72).status == "Accepted"
    station.csms.wait_for(lambda: station.statuses(72)[-1:] == ["DownloadFailed"], 60, "72")
    info = additional_info(station, 72)
    assert "does not fit" in info
    assert not [part for part in private_parts(rig) if part in info], info
    assert f"slot {rig.slots['B']}" in agent.log  # the local log has it all
    assert "allowed_hosts (127.0.0.1, localhost)" in agent.log


def _message(raising, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.FirmwareError) as raised:
        raising(*args)
    return raised.value.message


def test_the_cores_own_failure_messages_are_not_passed_on(tmp_path: Path) -> None:
    """The core's messages, as raised: each one's additionalInfo keeps no path, host list or
    address, and still tells the kind of failure."""
    failed = v16.FirmwareStatus.DOWNLOAD_FAILED
    slot = tmp_path / "slot-b.img"
    slot.write_bytes(b"\0" * 16)
    settings = FetchSettings(allowed_hosts=("mirror.internal.example", "10.1.2.3"))
    with SlotWriter(slot) as writer:
        too_large = _message(writer.ensure_fits, 17)
    cases = {
        _message(settings.check_url, "https://b.example/f"): "not allowed",
        too_large: "does not fit",
        _message(lambda: SlotWriter(tmp_path / "missing.img")): "slot",
        "HTTP 404 Not Found from http://10.1.2.3/fw.bin": "HTTP 404",
        "cannot load the CA file /etc/ocpp-fw-agent/ca.pem: no such file": "download failed",
    }
    for reason, kind in cases.items():
        info = failure_info(failed, reason)
        assert info is not None and info.additional_info is not None
        text = info.additional_info
        assert kind in text, (reason, text)
        for private in (str(tmp_path), "mirror.internal", "10.1.2.3", "/etc/", "allowed_hosts"):
            assert private not in text, (reason, text)
