"""The questions the updater asks the charger: may I disturb it now? is this image meant for
it? is this boot healthy?

All are answered by the integrator's commands (config `firmware.install_gate`,
`firmware.image_check`, `health.commands`): exit status 0 means yes. The agent itself never
decides that a charging session may be cut (L01.FR.06): without a gate command configured, it
assumes the charger has no session to protect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from agent.config import Config
from agent.service import selfcheck
from agent.slots.base import BootBackend

LOG = logging.getLogger(__name__)
COMMAND_TIMEOUT = 120.0
OUTPUT_LIMIT = 64 * 1024  # bytes of a command's output kept for its one-line reason


def command_succeeds(
    argv: Sequence[str],
    what: str,
    env: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[bool, str]:
    """Run `argv` (with `env` added to the environment); (True, "") on exit 0, else (False, a
    one-line reason). The command runs in its own process group, killed whole on timeout or
    as soon as `cancel` is set (the caller sees the event): a gate that forked a helper leaves
    nothing behind."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
            start_new_session=True,
        )
    except FileNotFoundError:
        return False, f"{what}: {argv[0]} not found"
    except OSError as exc:
        return False, f"{what}: cannot run {argv[0]}: {exc.strerror}"
    output: list[bytes] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=_collect, args=(proc.stdout, output), daemon=True)
    reader.start()
    stop = cancel or threading.Event()
    waited = 0.0
    while proc.poll() is None:
        if stop.wait(0.05):
            _kill_group(proc)
            return False, f"{what}: {argv[0]} stopped (the update was cancelled)"
        waited += 0.05
        if waited >= COMMAND_TIMEOUT:
            _kill_group(proc)
            return False, f"{what}: {argv[0]} did not finish in {COMMAND_TIMEOUT:.0f}s"
    reader.join(1.0)  # a helper the command left behind may hold the pipe open: not waited for
    if proc.returncode == 0:
        return True, ""
    detail = b"".join(output).decode("utf-8", "replace").strip().splitlines()
    return False, f"{what}: {argv[0]} exited {proc.returncode}" + (
        f": {detail[-1][:200]}" if detail else ""
    )


def _collect(stream: IO[bytes], output: list[bytes]) -> None:
    """Keep the last OUTPUT_LIMIT bytes of the command's output (a chatty one is bounded)."""
    kept = 0
    with stream:
        while block := stream.read(8192):
            output.append(block)
            kept += len(block)
            while kept > OUTPUT_LIMIT and len(output) > 1:
                kept -= len(output.pop(0))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def may_disturb(gate: Sequence[str], cancel: threading.Event | None = None) -> bool:
    """The install gate: True when no gate is configured or the gate command exits 0."""
    if not gate:
        return True
    ok, reason = command_succeeds(gate, "install gate", cancel=cancel)
    if not ok:
        LOG.info("install gate closed: %s", reason)
    return ok


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


def read_boot_id(path: Path) -> str:
    """The kernel's boot id (new at every boot): tells a daemon restart from a reboot."""
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


class CommandCharger:
    """The charger as the integrator's commands describe it (`firmware.Charger`)."""

    def __init__(self, config: Config, backend: BootBackend) -> None:
        self._config = config
        self._backend = backend

    def problems(self) -> list[str]:
        return selfcheck.problems(self._config, self._backend)

    def boot_id(self) -> str:
        return read_boot_id(self._config.boot_id_file)

    def may_install(self, cancel: threading.Event) -> bool:
        return may_disturb(self._config.firmware.install_gate, cancel)

    def check_image(self, facts: Mapping[str, str], cancel: threading.Event) -> tuple[bool, str]:
        argv = self._config.firmware.image_check
        if not argv:
            return True, ""
        return command_succeeds(argv, "image check", facts, cancel)

    def healthy(self) -> tuple[bool, str]:
        health = self._config.health
        return healthy(health.commands, health.require_system_running)

    def reboot(self, argv: Sequence[str]) -> None:
        ok, reason = command_succeeds(argv, "reboot")
        if not ok:
            LOG.error("reboot command failed: %s", reason)
