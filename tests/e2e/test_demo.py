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
