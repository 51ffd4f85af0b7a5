"""OCPP 2.0.1 direct: an online revocation check defers the UpdateFirmware answer, not the loop.

The same property as tests/security/test_cert_online_loop.py for 1.6 (L01.FR.23/25): the
responder holds its answer until a TriggerMessage sent after the UpdateFirmware has been
answered, so an adapter that waited for the check on the loop thread would answer the update
first. The order of the frames is asserted, not any time.
"""

from __future__ import annotations

from agent.demo.rig import ChargerRig, Firmware
from tests.security.test_cert_online_loop import held_revoking_responder, send
from tests.v201.conftest import Station


def test_l01_fr_25_a_held_ocsp_answer_holds_only_the_2_0_1_update(
    station: Station, rig: ChargerRig, firmware: Firmware
) -> None:
    """While the responder holds its answer a TriggerMessage is answered; then UpdateFirmware
    is answered RevokedCertificate (with its statusInfo) from the responder's word, and no
    firmware status follows (L01.FR.25)."""
    csms = station.csms
    with held_revoking_responder(rig) as (server, responder):
        # The longest wait allowed: the responder is held until the trigger has its answer.
        agent = station.start(firmware={"online_ocsp": True, "online_timeout": 60})
        csms.wait_message("BootNotification", timeout=120)
        payload = rig.request(firmware, 91, certificate=responder.subject.pem)
        send(csms, rig, "update-91", "UpdateFirmware", {"requestId": 91, **{
            "firmware": payload["firmware"]}})  # fmt: skip
        assert server.holding.wait(60), agent.log

        send(csms, rig, "trigger-1", "TriggerMessage", {"requestedMessage": "Heartbeat"})
        assert csms.answer_to("trigger-1", timeout=60)[2] == {"status": "Accepted"}
        assert csms.answer_index("update-91") is None  # the update still waits for the responder
        server.released.set()

        answer = csms.answer_to("update-91", timeout=60)[2]
        assert answer["status"] == "RevokedCertificate", answer
        trigger, update = csms.answer_index("trigger-1"), csms.answer_index("update-91")
        assert trigger is not None and update is not None and trigger < update
    assert len(server.asked) == 1
    assert station.statuses() == []
