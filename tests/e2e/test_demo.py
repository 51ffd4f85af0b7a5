"""The README's first command must keep working: `ocpp-fw-agent demo` exits 0 only on Installed,
in each OCPP version (`--ocpp`), with every CALL the agent sent valid in that version's schemas."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.demo.rig import SOURCE_ROOT


def _demo(*options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "demo", *options],
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: Installed from slot B, committed" in done.stdout
    assert "{'status': 'Installed', 'request_id': 2001}" in done.stdout
    assert "schema violation" not in done.stdout
    return done.stdout


def test_the_demo_installs_from_the_new_slot():
    out = _demo()
    assert "SignedFirmwareStatusNotification   {'status': 'Installed'" in out
    assert "firmware 2.0" in out


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_the_demo_installs_from_the_new_slot_in_ocpp_2x(version: str):
    """The whole update in 2.0.1 and in 2.1: UpdateFirmware, FirmwareStatusNotification, and
    after the reboot a BootNotification with reason FirmwareUpdate and the new version."""
    out = _demo("--ocpp", version)
    assert f"CSMS (OCPP {version})" in out
    assert "sending UpdateFirmware (requestId 2001)" in out
    assert "FirmwareStatusNotification         {'status': 'Installed'" in out
    assert "firmware 2.0 (reason FirmwareUpdate)" in out


def test_the_sidecar_demo_holds_the_install_for_the_stacks_transaction():
    """`demo --sidecar` (issue 13, mode 1): a charge-point stack behind the agent charges while
    the update runs. L01.FR.06/.34: InstallScheduled, and no install before the stack's
    StopTransaction; the stack's BootNotification after the reboot confirms the trial boot and
    Installed follows (L01.FR.01); every CALL of both met the 1.6 schemas at the CSMS."""
    done = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--sidecar"],
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "OK: Installed from slot B, committed, after the stack's transaction stopped" in out
    assert "the install waited for StopTransaction: InstallScheduled before it" in out
    assert "agent log: install gate closed: transaction(s) [1] running" in out
    assert "schema violation" not in out
    account = out[out.index("every CALL on the CSMS's one websocket") :].splitlines()

    def line(sender: str, action: str, detail: str = "") -> int:
        return next(
            i
            for i, text in enumerate(account)
            if text.split()[1:5:3] == [sender, action] and detail in text
        )

    stop = line("stack", "StopTransaction")
    assert line("agent", "SignedFirmwareStatusNotification", "InstallScheduled") < stop
    assert stop < line("agent", "SignedFirmwareStatusNotification", "Installing")
    reboot = next(i for i, text in enumerate(account) if "power cycle" in text)
    assert reboot < line("stack", "BootNotification", "firmware 2.0  => Accepted")
    assert line("stack", "BootNotification", "firmware 2.0") < line(
        "agent", "SignedFirmwareStatusNotification", "Installed"
    )
    assert line("CSMS", "RemoteStartTransaction") < line("CSMS", "SignedUpdateFirmware")
    assert not [text for text in account if "agent -> CSMS   BootNotification" in text]
