"""`cancel` through the local API: the charger's stack ends an update before its trial is
armed, and gets exactly one terminal status for it; after the arming it is refused
(L01.FR.27), as a new request would be."""

from __future__ import annotations

import pytest

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.demo.waiting import deadline
from agent.firmware.job import JobStore
from agent.firmware.machine import Phase
from agent.slots import filemodel
from tests.api.client import ApiCallError, Host
from tests.api.conftest import ApiCharger

# A whole update through the reboot, as in tests/e2e: the Debian pass runs it (Makefile).
pytestmark = pytest.mark.slow

TERMINAL = {"DownloadFailed", "InstallationFailed", "Installed", "InvalidSignature"}


def nothing_armed(rig: ChargerRig) -> None:
    env = filemodel.load_env(rig.env)
    assert env["trial"] is None and env["primary"] == "A", env
    assert not rig.reboot_marker.exists()


def test_cancel_while_waiting_for_the_installation_ends_it_with_one_status(
    charger: ApiCharger, rig: ChargerRig, firmware: Firmware
) -> None:
    """Waiting for allow_installation: cancel → InstallationFailed with the host's reason,
    nothing armed, the trigger's status says so, and a restart does not bring it back."""
    agent = charger.start()
    client = charger.connect()
    host = Host(client)
    assert client.call("start_update", **charger.update_params(firmware, 61)) == {
        "status": "Accepted"
    }
    client.call("response_sent", request_id=61)
    host.until_status("InstallScheduled")

    assert client.call("cancel", request_id=61, reason="site maintenance") == {"request_id": 61}
    failed = host.until_status("InstallationFailed")
    assert failed["request_id"] == 61
    assert failed["reason"] == "cancelled by the host: site maintenance"
    gated = ["Downloading", "Downloaded", "SignatureVerified", "InstallScheduled"]
    assert host.statuses() == [(s, 61) for s in [*gated, "InstallationFailed"]]
    assert client.call("get_status") == {"status": "InstallationFailed", "request_id": 61}
    with pytest.raises(ApiCallError) as again:
        client.call("cancel", request_id=61)
    assert again.value.code == "no_update"
    nothing_armed(rig)
    agent.wait_log("update 61 finished: InstallationFailed (cancelled by the host")

    charger.close_clients()
    charger.stop()
    agent = charger.restart()
    client = charger.connect()
    assert client.call("get_status") == {"status": "InstallationFailed", "request_id": 61}
    nothing_armed(rig)
    assert agent.log.count("update 61 finished") == 1
    charger.stop()


def test_cancel_during_the_download_is_download_failed(
    charger: ApiCharger, rig: ChargerRig, firmware: Firmware, fileserver: FirmwareHttpServer
) -> None:
    """Before the image is in the slot the one terminal status is DownloadFailed (the
    download, stalled mid-way, is abandoned) and nothing is armed."""
    fileserver.faults.stall_after = 64 * 1024
    charger.start()
    client = charger.connect()
    host = Host(client)
    client.call("start_update", **charger.update_params(firmware, 62))
    client.call("response_sent", request_id=62)
    host.until_status("Downloading")
    assert fileserver.stalled.wait(deadline(60))

    assert client.call("cancel", request_id=62) == {"request_id": 62}
    failed = host.until_status("DownloadFailed")
    assert failed["reason"] == "cancelled by the host"
    assert [s for s, _ in host.statuses() if s in TERMINAL] == ["DownloadFailed"]
    nothing_armed(rig)
    charger.stop()


def test_cancel_after_the_trial_is_armed_is_too_late(
    charger: ApiCharger, rig: ChargerRig, firmware: Firmware
) -> None:
    """L01.FR.27: once InstallRebooting is out the trial is armed: `too_late`, and the update
    goes on to its reboot."""
    agent = charger.start()
    client = charger.connect()
    host = Host(client)
    client.call("start_update", **charger.update_params(firmware, 63))
    client.call("response_sent", request_id=63)
    host.until_status("InstallScheduled")
    client.call("allow_installation", request_id=63)
    host.until_status("InstallRebooting")

    with pytest.raises(ApiCallError) as refused:
        client.call("cancel", request_id=63)
    assert refused.value.code == "too_late"
    rig.wait_reboot_request(agent)
    assert filemodel.load_env(rig.env)["trial"] is not None
    assert [s for s, _ in host.statuses() if s in TERMINAL] == []
    charger.stop()


def test_a_cancel_saved_before_a_power_cut_is_finished_by_the_next_start(
    charger: ApiCharger, rig: ChargerRig, firmware: Firmware
) -> None:
    """The cancel is saved in the job before it is answered; a power cut before the worker
    ended the job leaves exactly that on disk (written here with the daemon's own JobStore,
    as Updater.cancel writes it). The next start ends the job with the one terminal status
    and the host's reason, and arms nothing."""
    agent = charger.start()
    client = charger.connect()
    host = Host(client)
    client.call("start_update", **charger.update_params(firmware, 64))
    client.call("response_sent", request_id=64)
    host.until_status("InstallScheduled")
    charger.close_clients()
    charger.stop()

    store = JobStore(rig.state)
    job = store.load()
    assert job is not None and job.phase is Phase.INSTALL_SCHEDULED
    job.cancelled = "cancelled by the host: before the cut"
    store.save(job, store.ownership.claim(), transition=False)
    rig.power_cycle(agent)

    agent = charger.restart()
    client = charger.connect()
    host.client = client
    failed = host.until_status("InstallationFailed")
    assert failed["request_id"] == 64
    assert failed["reason"] == "cancelled by the host: before the cut"
    assert [s for s, _ in host.statuses() if s in TERMINAL] == ["InstallationFailed"]
    nothing_armed(rig)
    charger.stop()
