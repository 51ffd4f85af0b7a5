"""The questions the updater asks the charger: may I disturb it now? is this image meant for
it? is this boot healthy?

All are answered by the integrator's commands (config `firmware.install_gate`,
`firmware.image_check`, `health.commands`): exit status 0 means yes. The agent itself never
decides that a charging session may be cut (L01.FR.06): without a gate command configured, it
assumes the charger has no session to protect.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)
COMMAND_TIMEOUT = 120.0


def command_succeeds(
    argv: Sequence[str], what: str, env: Mapping[str, str] | None = None
) -> tuple[bool, str]:
    """Run `argv` (with `env` added to the environment); (True, "") on exit 0, else (False, a
    one-line reason)."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            env={**os.environ, **env} if env else None,
        )
    except FileNotFoundError:
        return False, f"{what}: {argv[0]} not found"
    except subprocess.TimeoutExpired:
        return False, f"{what}: {argv[0]} did not finish in {COMMAND_TIMEOUT:.0f}s"
    if done.returncode == 0:
        return True, ""
    detail = (done.stderr or done.stdout).strip().splitlines()
    return False, f"{what}: {argv[0]} exited {done.returncode}" + (
        f": {detail[-1][:200]}" if detail else ""
    )


def may_disturb(gate: Sequence[str]) -> bool:
    """The install gate: True when no gate is configured or the gate command exits 0."""
    if not gate:
        return True
    ok, reason = command_succeeds(gate, "install gate")
    if not ok:
        LOG.info("install gate closed: %s", reason)
    return ok


def image_acceptable(argv: Sequence[str], facts: Mapping[str, str]) -> tuple[bool, str]:
    """The image check: True when none is configured or it exits 0 given `facts` (the
    OCPP_FW_* variables: slot, size, digest, running version) in its environment."""
    if not argv:
        return True, ""
    return command_succeeds(argv, "image check", facts)


def healthy(commands: Sequence[Sequence[str]], require_system_running: bool) -> tuple[bool, str]:
    """Every health command exits 0 (and systemd says `running`, when required)."""
    checks = list(commands)
    if require_system_running:
        checks.insert(0, ("systemctl", "is-system-running", "--wait"))
    for argv in checks:
        ok, reason = command_succeeds(argv, "health check")
        if not ok:
            return False, reason
    return True, ""


def run_reboot(argv: Sequence[str]) -> None:
    """Start the configured reboot command; a failure is logged, the job stays `rebooting`."""
    ok, reason = command_succeeds(argv, "reboot")
    if not ok:
        LOG.error("reboot command failed: %s", reason)


def boot_id_reader(path: Path) -> Callable[[], str]:
    """The kernel's boot id (new at every boot): tells a daemon restart from a reboot."""

    def boot_id() -> str:
        try:
            return path.read_text(encoding="ascii").strip()
        except OSError:
            return "unknown"

    return boot_id
