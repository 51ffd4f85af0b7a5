"""The way back from a failed trial survives a restart, and nothing is written meanwhile (the
review of issue #9): while the charger still runs the abandoned slot, waiting at the install
gate to reboot back, a new request is Rejected (a download would overwrite the only good
slot), and a daemon restarted in that state still reboots back once the gate opens."""

from __future__ import annotations

from agent.demo.rig import ChargerRig, Firmware
from agent.slots import filemodel
from tests.e2e.conftest import Charger, wait_until
from tests.e2e.test_l01_power_loss import (
    a_failing_trial_behind_a_closed_gate,
    back_once_the_gate_opens,
)


def test_a_restart_on_the_abandoned_slot_still_reboots_back_and_refuses_updates(
    charger: Charger, rig: ChargerRig, firmware: Firmware
):
    a_failing_trial_behind_a_closed_gate(charger, rig, firmware, 34)
    agent = charger.restart()
    charger.wait_status("InstallationFailed")
    agent.wait_log("install gate closed", 60)
    assert "B" in filemodel.load_env(rig.env)["bad"]  # abandoned: the next boot is A

    assert charger.update(firmware, 35) == "Rejected"  # B runs, A is the only good slot
    agent.wait_log("refusing request 35: running slot B", 60)

    charger.wait_acknowledged()
    agent.stop()  # SIGTERM while waiting at the gate: the way back is not saved as a phase
    assert not rig.reboot_marker.exists()
    agent = charger.restart()
    agent.wait_log("update 34: still running the abandoned slot B", 60)
    closed = agent.log.count("install gate closed")
    wait_until(lambda: agent.log.count("install gate closed") > closed, 60, "the gate asked")
    back_once_the_gate_opens(charger, rig, agent, 34)
    assert charger.update(firmware, 36) == "Accepted"  # back on the good slot: updates again
