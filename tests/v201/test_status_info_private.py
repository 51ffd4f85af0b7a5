"""2.0.1's UpdateFirmware answer: its statusInfo never carries the charger's layout, also when
the request is refused because of a local problem whose description names paths."""

from __future__ import annotations

from agent.demo import pki
from agent.demo.rig import ChargerRig, Firmware
from tests.v201.conftest import Station


def test_a_refused_update_firmware_answer_names_no_local_path(
    station: Station, rig: ChargerRig, firmware: Firmware
) -> None:
    """InvalidCertificate (L01.FR.24) and Rejected for a missing slot: reasonCode only."""
    station.start()
    station.csms.wait_message("BootNotification")
    rogue = pki.issue("Rogue Signing", pki.ec_key(n=7))
    answer = station.update(firmware, 81, certificate=rogue.pem)
    assert answer.status == "InvalidCertificate"
    assert answer.status_info == {"reason_code": "InvalidCertificate"}

    rig.slots["B"].unlink()  # the self-check's problem line names the slot's path
    answer = station.update(firmware, 82)
    assert answer.status == "Rejected"
    assert str(rig.slots["B"]) not in str(answer.status_info)
    assert str(rig.base) not in str(answer.status_info)
