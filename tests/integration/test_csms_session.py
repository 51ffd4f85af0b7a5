"""The agent as a real process against a real CSMS (the `ocpp` library on `websockets`)."""

from __future__ import annotations

import signal

from ocpp.v16 import call
from ocpp.v16.enums import RegistrationStatus

from agent.demo.csms import TestCsms
from tests.conftest import agent_config

CP = "CP-TEST-1"


def test_connects_boots_and_heartbeats_at_the_csms_interval(tmp_path, csms: TestCsms, run_agent):
    """BootNotification first, then Heartbeat at the interval the CSMS gave (OCPP 1.6 §4.2)."""
    csms.heartbeat_interval = 1
    agent = run_agent(agent_config(tmp_path, csms.url))
    boot = csms.wait_message("BootNotification")[0]
    assert boot.payload == {
        "charge_point_vendor": "ExampleVendor",
        "charge_point_model": "AB-Charger",
        "firmware_version": "1.0",
    }
    beats = csms.wait_message("Heartbeat", count=2, timeout=60)
    assert beats[1].at - beats[0].at >= 0.9
    assert beats[0].at - boot.at >= 0.9
    agent.wait_log("BootNotification Accepted")
    # The offered and agreed subprotocol (OCPP-J §3.1.2).
    assert csms.request_headers[0]["Sec-WebSocket-Protocol"] == "ocpp1.6"
    assert csms.request_headers[0]["Host"].startswith("127.0.0.1")


def test_identity_is_percent_encoded_in_the_url(tmp_path, csms: TestCsms, run_agent):
    config = agent_config(tmp_path, csms.url, csms={"charge_point_id": "RDAM 123/x"})
    run_agent(config)
    csms.wait_message("BootNotification")
    assert csms.messages()[0].charge_point_id == "RDAM%20123%2Fx"


def test_no_boot_notification_after_a_mere_reconnect(tmp_path, csms: TestCsms, run_agent):
    """OCPP-J §5.4: a reconnect sends no BootNotification; a daemon restart does."""
    config = agent_config(tmp_path, csms.url)
    agent = run_agent(config)
    agent.wait_log("BootNotification Accepted")  # the agent holds the answer, not just the CSMS
    csms.disconnect(CP)
    csms.wait_for(lambda: csms.connections == 2 and csms.connected(CP), what="reconnect")
    assert csms.call(CP, call.TriggerMessage(requested_message="Heartbeat")).status == "Accepted"
    csms.wait_message("Heartbeat")
    assert len(csms.messages("BootNotification")) == 1

    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    run_agent(config)
    csms.wait_message("BootNotification", count=2)


def test_pending_registration_sends_only_what_is_triggered(tmp_path, csms: TestCsms, run_agent):
    """While Pending only triggered messages go out; the boot is retried after `interval`."""
    csms.boot_responses = [(RegistrationStatus.pending, 1)]
    run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")
    reply = csms.call(
        CP, call.ExtendedTriggerMessage(requested_message="FirmwareStatusNotification")
    )
    assert reply.status == "Accepted"
    assert csms.wait_message("SignedFirmwareStatusNotification")[0].payload == {"status": "Idle"}
    boots = csms.wait_message("BootNotification", count=2)
    assert boots[1].at - boots[0].at >= 0.9
    assert csms.messages("Heartbeat") == []


def test_rejected_registration_stays_silent_until_the_interval(tmp_path, csms: TestCsms, run_agent):
    csms.boot_responses = [(RegistrationStatus.rejected, 2)]
    agent = run_agent(agent_config(tmp_path, csms.url))
    first = csms.wait_message("BootNotification")[0]
    agent.wait_log("BootNotification Rejected")
    csms.send_raw(CP, '[2,"r1","TriggerMessage",{"requestedMessage":"Heartbeat"}]')
    second = csms.wait_message("BootNotification", count=2)[1]
    assert second.at - first.at >= 1.9
    answered = [f for f in csms.frames if f.direction == "in" and '"r1"' in f.text]
    assert answered == [], "a Rejected charge point must not answer the CSMS"


def test_legacy_update_firmware_is_not_supported(tmp_path, csms: TestCsms, run_agent):
    """L01.FR.20: UpdateFirmware → CALLERROR NotSupported, and no update starts."""
    agent = run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")
    csms.send_raw(
        CP,
        '[2,"u1","UpdateFirmware",{"location":"http://127.0.0.1:9/fw.bin",'
        '"retrieveDate":"2020-01-01T00:00:00Z"}]',
    )
    answer = csms.answer_to("u1")
    assert answer[:3] == [4, "u1", "NotSupported"]
    assert answer[4] == {}
    assert csms.messages("SignedFirmwareStatusNotification") == []
    assert "Downloading" not in agent.log


def test_malformed_frames_get_the_right_error_and_keep_the_connection(
    tmp_path, csms: TestCsms, run_agent
):
    agent = run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")
    cases = {
        '[2,"m1","SignedUpdateFirmware",[]]': "FormationViolation",
        '[2,"m2","ExtendedTriggerMessage",{"connectorId":1}]': "OccurenceConstraintViolation",
        '[2,"m3","ExtendedTriggerMessage",{"requestedMessage":5}]': "TypeConstraintViolation",
        '[2,"m4","ExtendedTriggerMessage",{"requestedMessage":"Nope"}]': (
            "PropertyConstraintViolation"
        ),
        '[2,"m5","ExtendedTriggerMessage",{"requestedMessage":"Heartbeat","x":1}]': (
            "FormationViolation"
        ),
        '[2,"m6","NoSuchAction",{}]': "NotImplemented",
        '[2,"m7","Reset",{"type":"Hard"}]': "NotSupported",
    }
    for text in ("not json", "[]", '{"a":1}', "[2]", '[3,"unknown-id",{}]', "[9,1,2]"):
        csms.send_raw(CP, text)
    for text in cases:
        csms.send_raw(CP, text)
    for text, code in cases.items():
        unique_id = text.split('"')[1]
        answer = csms.answer_to(unique_id)
        assert answer[0] == 4 and answer[2] == code, (text, answer)
    # Still the same connection, still answering.
    assert csms.call(CP, call.TriggerMessage(requested_message="Heartbeat")).status == "Accepted"
    assert csms.connections == 1
    assert "ignoring an answer to unknown message id 'unknown-id'" in agent.log


def test_trigger_of_an_unsupported_message_is_not_implemented(tmp_path, csms: TestCsms, run_agent):
    run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")
    reply = csms.call(CP, call.ExtendedTriggerMessage(requested_message="MeterValues"))
    assert reply.status == "NotImplemented"
    reply = csms.call(CP, call.TriggerMessage(requested_message="BootNotification"))
    assert reply.status == "Accepted"
    csms.wait_message("BootNotification", count=2)


def test_firmware_status_trigger_before_any_update_is_idle(tmp_path, csms: TestCsms, run_agent):
    """CP-TRG-5: nothing ever ran → Idle without requestId (L01.FR.28 by analogy)."""
    run_agent(agent_config(tmp_path, csms.url))
    csms.wait_message("BootNotification")
    for trigger in (call.ExtendedTriggerMessage, call.TriggerMessage):
        assert csms.call(CP, trigger(requested_message="FirmwareStatusNotification")).status == (
            "Accepted"
        )
    notes = csms.wait_message("SignedFirmwareStatusNotification", count=2)
    assert [n.payload for n in notes] == [{"status": "Idle"}, {"status": "Idle"}]
    # The .conf went out before the triggered CALL (OCPP 1.6 §5.17).
    frames = [f.parsed for f in csms.frames if f.direction == "in"]
    kinds = [(f[0], f[2] if f[0] == 2 else None) for f in frames]
    conf_index = kinds.index((3, None), 1)
    assert kinds.index((2, "SignedFirmwareStatusNotification")) > conf_index
