"""Debian 12's real `rauc` (1.8) for the rauc backend's tests, with a bootloader simulator.

Debian builds rauc with its D-Bus service: `rauc status` and `rauc status mark-*` ask a running
`rauc service` over the system bus. So each rig starts a private `dbus-daemon` (a socket in the
rig's directory, a policy that lets its own processes own and call anything; nothing of the
host's bus is touched) and `rauc service` on it, pointed at the rig's system.conf by `--conf`
and told which slot booted by `--override-boot-slot` (as RAUC's kernel-cmdline detection would
say after a real boot). The bootloader is RAUC's `custom` backend, rauc_bootloader.sh, on a
text env; a power-on stops the service, boots by RAUC's U-Boot rules from that env and starts
the service again with the slot that booted. The agent calls a wrapper that only adds the
bus address: everything else is rauc's own CLI, D-Bus API, slot resolution and marking.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import slot_simulators as sim

RAUC = "/usr/bin/rauc"
BOOTLOADER = Path(__file__).with_name("rauc_bootloader.sh")
ATTEMPTS = 3  # boot-attempts and boot-attempts-primary, as the agent's trial_attempts default
START_DEADLINE = 60.0  # generous: the service is up in well under a second on an idle machine

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

SYSTEM_CONF = """[system]
compatible=ocpp-fw-agent test
bootloader=custom
statusfile={status}

[handlers]
bootloader-custom-backend={backend}

[slot.rootfs.0]
device={A}
type=raw
bootname=A

[slot.rootfs.1]
device={B}
type=raw
bootname=B
"""


def _executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


class RealRauc:
    """A private bus, `rauc service` on it, and the files they use, all under `base`."""

    def __init__(self, base: Path, slots: dict[str, Path]) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.socket = base / "bus"  # AF_UNIX paths are short: keep `base` short too
        self.env = base / "bootenv.txt"
        self.env.write_text("BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=A B\n")
        bus_conf = base / "bus.conf"
        bus_conf.write_text(BUS_CONF.format(socket=self.socket))
        backend = _executable(
            base / "bootloader",
            f'exec "{BOOTLOADER}" "{self.env}" {ATTEMPTS} {ATTEMPTS} "$@"\n',
        )
        self.conf = base / "system.conf"
        self.conf.write_text(
            SYSTEM_CONF.format(status=base / "rauc.status", backend=backend, **slots)
        )
        self.address = f"unix:path={self.socket}"
        # What the agent runs as `rauc_binary`: the real rauc, on this bus.
        self.wrapper = _executable(
            base / "bin" / "rauc", f'DBUS_SYSTEM_BUS_ADDRESS="{self.address}" exec {RAUC} "$@"\n'
        )
        self.booted = ""
        self._bus: subprocess.Popen[bytes] | None = None
        self._service: subprocess.Popen[bytes] | None = None
        self.log = base / "rauc-service.log"

    # --- processes ---------------------------------------------------------------------------

    def start_bus(self) -> None:
        self._bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={self.base / 'bus.conf'}", "--nofork"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait(self.socket.exists, "the private D-Bus socket", self._bus)

    def boot(self, slot: str) -> None:
        """Start `rauc service` as in a system that booted `slot`; return once it answers."""
        self.stop_service()
        self.booted = slot
        with self.log.open("ab") as log:
            self._service = subprocess.Popen(
                [RAUC, f"--conf={self.conf}", "service", f"--override-boot-slot={slot}"],
                env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait(self._answers, "rauc service on the private bus", self._service)

    def power_on(self) -> str:
        """A reboot: the service goes away, the bootloader picks a slot by RAUC's U-Boot rules
        (counting the boot), and the service comes up again in that slot."""
        self.stop_service()
        env = dict(line.split("=", 1) for line in self.env.read_text().splitlines() if line)
        booted = sim.uboot_rauc_boot(env)
        self.env.write_text("".join(f"{key}={env[key]}\n" for key in sorted(env)))
        if booted:
            self.boot(booted)
        return booted

    def stop_service(self) -> None:
        if self._service is not None:
            _stop(self._service)
            self._service = None

    def close(self) -> None:
        self.stop_service()
        if self._bus is not None:
            _stop(self._bus)
            self._bus = None

    # --- helpers -----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        done = subprocess.run(
            [str(self.wrapper), f"--conf={self.conf}", "status", "--output-format=json"],
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(done.stdout))

    def _answers(self) -> bool:
        done = subprocess.run(
            [str(self.wrapper), f"--conf={self.conf}", "status", "--output-format=json"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def _wait(self, ready: object, what: str, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while not ready():  # type: ignore[operator]
            if proc.poll() is not None:
                log = self.log.read_text() if self.log.exists() else ""
                raise AssertionError(f"{what}: exited {proc.returncode}\n{log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not ready after {START_DEADLINE}s")
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
