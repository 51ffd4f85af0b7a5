"""OCPP 1.6 Security Extension: the OCTT charge-point cases for L01, rehearsed on two peers.

Named after the OCTT 1.6 test cases (TC_080_CS, TC_081_CS, TC_085_CS; their descriptions are
in the shared reference, §5 of ocpp16-secure-firmware.md). Each runs against the `ocpp`
library's CSMS and against ocpp-rpc in strict mode (`peer` fixture): the agent is a real
process on the e2e rig (file slots, real PKI, a real HTTP firmware server), and neither
validator may find a frame that violates the 1.6 schemas.
"""

from __future__ import annotations

import base64

import pytest
from ocpp.exceptions import NotSupportedError
from ocpp.v16 import call

from agent.demo import pki
from agent.demo.csms import TestCsms
from agent.demo.rig import ChargerRig, Firmware
from agent.slots import filemodel
from tests.e2e.conftest import HAPPY, IMAGE, Charger, wait_until

# Whole updates with the agent as a process, like tests/e2e: the Debian pass runs them.
pytestmark = pytest.mark.slow

KEY_HEX = "0001020304050607FFFFFFFFFFFFFFFF0A0B0C0D"  # 20 bytes, several not printable
KEY = bytes.fromhex(KEY_HEX)


def test_TC_080_CS_secure_firmware_update(charger: Charger, rig: ChargerRig, firmware: Firmware):
    """TC_080_CS, L01.FR.01/.04/.10/.15: Accepted; Downloading, Downloaded, SignatureVerified,
    Installing, InstallRebooting with the requestId; after the reboot a BootNotification
    with the new version, then Installed and SecurityEventNotification FirmwareUpdated."""
    agent = charger.start()
    charger.csms.wait_message("BootNotification")
    assert charger.update(firmware, 80) == "Accepted"
    rig.wait_reboot_request(agent)
    assert charger.csms.statuses() == [(s, 80) for s in HAPPY]
    assert rig.slots["B"].read_bytes()[: len(IMAGE)] == IMAGE

    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    charger.restart()
    charger.wait_status("Installed")
    assert charger.csms.statuses() == [(s, 80) for s in [*HAPPY, "Installed"]]
    assert charger.wait_event("FirmwareUpdated")["type"] == "FirmwareUpdated"
    assert charger.csms.messages("BootNotification")[-1].payload["firmware_version"] == "2.0"
    wait_until(lambda: filemodel.load_env(rig.env)["primary"] == "B", 30, "the commit")


def test_TC_081_CS_invalid_signature(charger: Charger, rig: ChargerRig, firmware: Firmware):
    """TC_081_CS, L01.FR.03: a signature that does not match the image → Downloading,
    Downloaded, then InvalidSignature and SecurityEventNotification InvalidFirmwareSignature
    (in any order, the case says); nothing is armed or installed."""
    charger.start()
    assert charger.update(firmware, 81, signature=rig.sign(b"another image")) == "Accepted"
    charger.wait_status("InvalidSignature")
    charger.wait_event("InvalidFirmwareSignature")
    assert charger.statuses(81) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert not rig.reboot_marker.exists()
    assert filemodel.load_env(rig.env)["trial"] is None


def test_invalid_signing_certificate(charger: Charger, firmware: Firmware):
    """L01.FR.02/.23 (no separate OCTT 1.6 id; 2.0.1's TC_L_05_CS): a signing certificate
    that is not from the installed manufacturer root → InvalidCertificate before anything
    starts, and SecurityEventNotification InvalidFirmwareSigningCertificate."""
    charger.start()
    stranger = pki.issue("Somebody Else", pki.rsa_key(2048, 200), ca=True)
    assert charger.update(firmware, 82, certificate=stranger.pem) == "InvalidCertificate"
    charger.wait_event("InvalidFirmwareSigningCertificate")
    assert charger.statuses() == [] and charger.job() == {}


def test_TC_085_CS_basic_auth_carries_the_non_hex_password(charger: Charger, csms: TestCsms):
    """TC_085_CS, A00.FR.202/205: with security profile 1 the handshake's Authorization
    header is Basic base64(<ChargePointId>:<AuthorizationKey as bytes, not its hex text>);
    the CSMS accepts only that, and the agent registers."""
    passwords: list[bytes | None] = []
    csms.auth = lambda cp, password: passwords.append(password) or password == KEY
    charger.start(csms={"security_profile": 1, "authorization_key": KEY_HEX})
    csms.wait_message("BootNotification")
    header = csms.request_headers[0]["Authorization"]
    assert header.startswith("Basic ")
    expected = charger.rig.charge_point_id.encode() + b":" + KEY
    assert base64.b64decode(header.removeprefix("Basic ")) == expected
    assert passwords[0] == KEY and KEY_HEX.encode() not in base64.b64decode(header[6:])
    assert csms.connected(charger.rig.charge_point_id)


def test_legacy_update_firmware_is_not_supported(charger: Charger, firmware: Firmware):
    """L01.FR.20 (a self-test beside the OCTT cases): the legacy UpdateFirmware, sent as a
    typed CALL through each peer, is answered CALLERROR NotSupported and starts nothing."""
    charger.start()
    request = call.UpdateFirmware(location=firmware.url, retrieve_date="2020-01-01T00:00:00Z")
    with pytest.raises(NotSupportedError):
        charger.csms.call(charger.rig.charge_point_id, request)
    assert charger.statuses() == [] and charger.job() == {}


def test_firmware_status_triggers_before_and_after_a_failure(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.28/.29: ExtendedTriggerMessage and the core TriggerMessage answer Idle (no
    requestId) when nothing ran, and the last status with its requestId after a failure."""
    charger.start()
    charger.assert_triggers("Idle", None)
    assert charger.update(firmware, 83, signature=rig.sign(b"another image")) == "Accepted"
    charger.wait_status("InvalidSignature")
    charger.assert_triggers("InvalidSignature", 83)
