"""L01 end to end: kill -9 (or a shutdown) in each phase, then a restart, and the install gate.

Issue #3 "Persistence and power loss": the job lives in the state dir; after `kill -9` the
restarted daemon continues where it was and the CSMS sees one coherent sequence: no status
lost, none repeated, none for the wrong requestId, exactly one terminal status (L01.FR.10).
The install gate (L01.FR.06) holds Installing, the trial and the reboot until it opens.
"""

from __future__ import annotations

import time

from agent.demo.rig import ChargerRig, Firmware
from agent.slots import filemodel
from tests.e2e.conftest import HAPPY, Charger

GATE_POLL = 0.2


def gate(rig: ChargerRig) -> dict[str, object]:
    """An install gate that opens when `<base>/gate-open` exists."""
    return {
        "install_gate": ["test", "-e", str(rig.base / "gate-open")],
        "gate_poll_interval": GATE_POLL,
    }


def finish_after_reboot(charger: Charger, rig: ChargerRig, request_id: int, before: list[str]):
    """Power-cycle into the new slot and check the whole sequence the CSMS saw."""
    assert charger.agent is not None
    rig.wait_reboot_request(charger.agent)
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(charger.agent) == "B"
    charger.restart()
    charger.wait_status("Installed")
    charger.assert_coherent(request_id, [*before, "Installed"])
    assert filemodel.load_env(rig.env)["primary"] == "B"


def test_the_install_gate_holds_the_install_and_the_reboot(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.06 (CP-SCH-4): while the gate command fails, no Installing, no InstallRebooting,
    no trial armed and no reboot request; once it succeeds the install goes on."""
    agent = charger.start(firmware=gate(rig))
    assert charger.update(firmware, 31) == "Accepted"
    charger.wait_status("SignatureVerified")
    agent.wait_log("install gate closed")
    time.sleep(5 * GATE_POLL)  # several closed polls: proving that nothing happens
    assert agent.log.count("install gate closed") >= 3
    assert charger.statuses() == ["Downloading", "Downloaded", "SignatureVerified"]
    assert filemodel.load_env(rig.env)["trial"] is None and not rig.reboot_marker.exists()
    charger.assert_triggers("SignatureVerified", 31)  # L01.FR.29 while waiting at the gate
    (rig.base / "gate-open").touch()
    finish_after_reboot(charger, rig, 31, HAPPY)


def test_a_shutdown_while_install_rebooting_is_unconfirmed_is_prompt(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    """L01.FR.15: the reboot waits for InstallRebooting's CALLRESULT, but a SIGTERM meanwhile
    stops the daemon at once (not after 2 x call_timeout); the restart delivers the status
    and reboots, and the update completes."""
    refuse = {"on": True}
    charger.csms.answer_filter = lambda action, payload: (
        not (refuse["on"] and payload.get("status") == "InstallRebooting")
    )
    agent = charger.start()
    assert charger.update(firmware, 32) == "Accepted"
    agent.wait_log("firmware status InstallRebooting")
    charger.csms.wait_for(lambda: "InstallRebooting" in charger.statuses(), what="refused once")
    assert not rig.reboot_marker.exists()  # not confirmed yet: no reboot
    stopping = time.monotonic()
    agent.signal(15)
    assert agent.wait(timeout=5) == 0
    assert time.monotonic() - stopping < 3
    refuse["on"] = False
    charger.restart()
    rig.wait_reboot_request(charger.agent)
    # A refused CALL is sent again (outbox); collapse those repeats, nothing else may differ.
    seen = [
        s
        for i, s in enumerate(charger.csms.statuses())
        if charger.csms.statuses()[i - 1 : i] != [s]
    ]
    assert seen == [(s, 32) for s in HAPPY]
    rig.power_cycle(charger.agent)
    charger.restart()
    charger.wait_status("Installed")
    assert charger.csms.statuses()[-1] == ("Installed", 32)
