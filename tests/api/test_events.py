"""The API's events: durable, numbered across restarts, replayed until acknowledged, and held
until the host's CALLRESULT went out (README "Ordering rules")."""

from __future__ import annotations

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from tests.api.client import Host
from tests.api.conftest import IMAGE, ApiCharger, wait_for

BAD_SIGNATURE_STATUSES = ["Downloading", "Downloaded", "InvalidSignature"]


def test_events_replay_after_an_agent_restart_until_acked_and_seq_keeps_growing(
    charger: ApiCharger, rig: ChargerRig, fileserver: FirmwareHttpServer
) -> None:
    """TC_L_06-like (InvalidSignature + InvalidFirmwareSignature, L01.FR.03): the host takes
    the events without acking; after an agent restart the same events come again, same seq;
    once acked, another restart replays nothing; a new event gets a higher seq."""
    fileserver.put("/fw/bad.bin", IMAGE)
    bad = Firmware(fileserver.url("/fw/bad.bin"), IMAGE, rig.sign(b"another image"))
    charger.start()
    client = charger.connect()
    host = Host(client, ack=False)
    answer = client.call("start_update", **charger.update_params(bad, 21))
    assert answer == {"status": "Accepted"}
    client.call("response_sent", request_id=21)
    host.until_status("InvalidSignature")
    host.until(lambda e: e["event"] == "security_event")
    first = list(host.durable)
    assert [(e["status"], e["request_id"]) for e in first if e["event"] == "status"] == [
        (s, 21) for s in BAD_SIGNATURE_STATUSES
    ]
    assert [e["type"] for e in first if e["event"] == "security_event"] == [
        "InvalidFirmwareSignature"
    ]

    charger.close_clients()
    charger.stop()
    charger.restart()
    client = charger.connect()
    # Every deliverable event is written before a later answer (README): so after this
    # answer the replay is complete.
    client.call("get_status")
    replayed = [e for e in client.drain() if "seq" in e]
    assert replayed == first

    assert client.call("ack", seq=first[-1]["seq"]) == {"acked": len(first)}
    charger.close_clients()
    charger.stop()
    charger.restart()
    client = charger.connect()
    assert client.call("get_status") == {"status": "InvalidSignature", "request_id": 21}
    assert [e for e in client.drain() if "seq" in e] == []  # acked: never sent again

    # A refused certificate: a new durable event, numbered after everything before it.
    refused = charger.update_params(bad, 22, signing_certificate="not a certificate")
    assert client.call("start_update", **refused) == {"status": "InvalidCertificate"}
    client.call("response_sent", request_id=22)
    event = client.next_event()
    assert event["event"] == "security_event"
    assert event["type"] == "InvalidFirmwareSigningCertificate"
    assert event["seq"] > first[-1]["seq"]
    charger.stop()


def test_status_events_wait_for_response_sent(
    charger: ApiCharger, rig: ChargerRig, firmware: Firmware
) -> None:
    """Ordering rule 1 (L01 "answer first"): the update runs at once, but its status events
    are written only after the host said its CALLRESULT went out; then all of them, in order."""
    charger.start(response_timeout=3600)  # no fallback within the test: only the host's word
    client = charger.connect()
    host = Host(client)
    answer = client.call("start_update", **charger.update_params(firmware, 31))
    assert answer == {"status": "Accepted"}

    # The job moves on (its status is the trigger answer) while its events are held.
    def scheduled() -> bool:
        return client.call("get_status") == {"status": "InstallScheduled", "request_id": 31}

    wait_for(scheduled, "the job to wait for the gate")
    assert [e for e in client.drain() if "seq" in e] == []

    client.call("response_sent", request_id=31)
    host.until_status("InstallScheduled")
    assert host.statuses() == [
        (s, 31) for s in ["Downloading", "Downloaded", "SignatureVerified", "InstallScheduled"]
    ]
    charger.stop()


def test_held_events_go_after_response_timeout_when_the_host_never_says(
    charger: ApiCharger, rig: ChargerRig, firmware: Firmware
) -> None:
    """Ordering rule 1's fallback: a host that never calls response_sent still gets the
    events (here InvalidFirmwareSigningCertificate, L01.FR.02) once response_timeout passed."""
    agent = charger.start(response_timeout=1)
    client = charger.connect()
    refused = charger.update_params(firmware, 41, signing_certificate="not a certificate")
    assert client.call("start_update", **refused) == {"status": "InvalidCertificate"}
    event = client.next_event()
    assert event["event"] == "security_event"
    assert event["type"] == "InvalidFirmwareSigningCertificate"
    assert "request 41: signing certificate is not a PEM certificate" in agent.log
    charger.stop()
