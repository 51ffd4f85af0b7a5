"""Online revocation checks leave the daemon's loop free (L01.FR.23/25, WP3 Table 13).

With `online_ocsp` the signing certificate's responder is asked before SignedUpdateFirmware is
answered: that answer must say RevokedCertificate when the responder says revoked (L01.FR.25;
no status notification can say it instead, those values left FirmwareStatusEnumType in Ed. 2),
so it is deferred until the check is over. The check runs on a helper thread: here the
responder holds its answer until the test has had a CALL answered by the same agent, so a
loop that waited for the responder would answer the update first. The order of the frames
is asserted, not any time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.demo.csms import TestCsms
from agent.demo.rig import ChargerRig, Firmware
from tests.e2e import conftest as e2e
from tests.security import certfactory as make
from tests.security.ocsp_server import OcspServer
from tests.security.test_cert_ocsp import REVOKED, Responder

rig, charger, firmware, fileserver = e2e.rig, e2e.charger, e2e.firmware, e2e.fileserver


def send(csms: TestCsms, rig: ChargerRig, unique_id: str, action: str, payload: Any) -> None:
    csms.send_raw(rig.charge_point_id, json.dumps([2, unique_id, action, payload]))


@contextmanager
def held_revoking_responder(rig: ChargerRig) -> Iterator[tuple[OcspServer, Responder]]:
    """An OCSP responder that says revoked but holds its answer until `server.released` is
    set, and a signing certificate (`responder.subject`) that names it."""
    responder = Responder()
    with OcspServer(responder) as server:
        server.wire = "held"
        responder.issuer = rig.root
        responder.subject = make.with_ocsp(rig.root, rig.signer.key, server.url())
        responder.status = REVOKED
        yield server, responder


def test_l01_fr_25_a_held_ocsp_answer_holds_only_the_update_not_the_loop(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware
) -> None:
    """While the responder holds its answer a TriggerMessage is answered (its Heartbeat
    follows); then the update is answered RevokedCertificate from the responder's word, with the
    security event (L01.FR.25, L01.FR.02), and nothing of the update starts."""
    csms = charger.csms
    with held_revoking_responder(rig) as (server, responder):
        # The longest wait allowed: the responder is held until the trigger has its answer.
        agent = charger.start(firmware={"online_ocsp": True, "online_timeout": 60})
        csms.wait_message("BootNotification", timeout=120)  # a loaded machine starts slowly
        payload = rig.request(firmware, 91, certificate=responder.subject.pem)
        payload["requestId"] = payload.pop("request_id")
        send(csms, rig, "update-91", "SignedUpdateFirmware", payload)
        assert server.holding.wait(60), agent.log

        beats = len(csms.messages("Heartbeat"))
        send(csms, rig, "trigger-1", "TriggerMessage", {"requestedMessage": "Heartbeat"})
        assert csms.answer_to("trigger-1", timeout=60)[2] == {"status": "Accepted"}
        assert csms.answer_index("update-91") is None  # the update still waits for the responder
        server.released.set()
        csms.wait_message("Heartbeat", beats + 1, timeout=60)  # the trigger's, after its answer

        assert csms.answer_to("update-91", timeout=60)[2] == {"status": "RevokedCertificate"}
        trigger, update = csms.answer_index("trigger-1"), csms.answer_index("update-91")
        assert trigger is not None and update is not None and trigger < update
        event = charger.wait_event("InvalidFirmwareSigningCertificate")
        assert "revoked" in event["tech_info"] and "(OCSP)" in event["tech_info"]
    assert len(server.asked) == 1
    assert csms.statuses() == []  # L01.FR.25: the answer says it, no status follows
