"""The README's first command must keep working: `ocpp-fw-agent demo` exits 0 only on Installed."""

from __future__ import annotations

import subprocess
import sys

from agent.demo.rig import SOURCE_ROOT


def test_the_demo_installs_from_the_new_slot():
    done = subprocess.run(
        [sys.executable, "-m", "agent", "demo"],
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: Installed from slot B, committed" in done.stdout
    assert "{'status': 'Installed', 'request_id': 2001}" in done.stdout
    assert "firmware 2.0" in done.stdout
