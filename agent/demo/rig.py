"""A charger on this machine: file slots, a manufacturer PKI, the agent as a real process.

Used by `ocpp-fw-agent demo`, the benchmark and the end-to-end tests, so all three drive the
same set-up. A power cycle is simulated the way the `file` backend defines it: the reboot
command only records the request; `power_cycle()` stops the daemon as systemd would at
shutdown (SIGTERM), applies the bootloader's boot rules (`filemodel.power_on`), gives the kernel
a new boot id, and starts the daemon again on the slot that booted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent import durable
from agent.demo import pki
from agent.demo.waiting import deadline, hang_guard
from agent.firmware.signature import sign_digest
from agent.slots import filemodel

SOURCE_ROOT = Path(__file__).resolve().parents[2]
# File slots are pre-allocated (sparse) like partitions: their size is their capacity.
SLOT_SIZE = 64 << 20


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_toml(path: Path, document: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class AgentProcess:
    """`python -m agent -c CONFIG run` as a child process, its log in a file."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        inherited = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
        }
        self.env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "-v", "-c", str(self.config), "run"],
                cwd=SOURCE_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(deadline(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout}s:\n{self.log}") from None

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def wait_log(self, text: str, timeout: float = 15) -> None:
        """Poll the log file (there is no event to await across processes)."""
        deadline = time.monotonic() + max(timeout, hang_guard())
        while text not in self.log:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the agent's log:\n{self.log}")
            time.sleep(0.05)


@dataclasses.dataclass(frozen=True)
class Firmware:
    url: str
    image: bytes
    signature: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.image).hexdigest()


class ChargerRig:
    """Everything one simulated charger needs, laid out under `base`."""

    def __init__(
        self,
        base: Path,
        csms_url: str,
        charge_point_id: str = "CP-DEMO-1",
        slot_size: int = SLOT_SIZE,
    ) -> None:
        self.base = base
        self.csms_url = csms_url
        self.charge_point_id = charge_point_id
        self.root = pki.issue("Example Manufacturer Root", pki.rsa_key(2048, 100), ca=True)
        self.signer = pki.issue("Example Firmware Signing", pki.rsa_key(2048, 101), self.root)
        self.state = base / "state"
        self.slots = {"A": base / "slots" / "A.img", "B": base / "slots" / "B.img"}
        self.env = self.state / "bootenv.json"
        self.boot_id = base / "boot_id"
        self.reboot_marker = base / "reboot-requested"
        self.version_file = base / "running-version"
        for directory in (base / "roots", base / "slots", self.state):
            directory.mkdir(parents=True, exist_ok=True)
        (base / "roots" / "manufacturer.pem").write_text(self.root.pem)
        self.slots["A"].write_bytes(b"factory image 1.0\n")
        self.slots["B"].write_bytes(b"")
        for slot in self.slots.values():  # pre-allocated (sparse), as a partition would be
            os.truncate(slot, slot_size)
        durable.atomic_write_json(self.env, filemodel.new_env(["A", "B"], "A"))
        self.versions = {"A": "1.0", "B": "unknown"}
        self._boot_count = 1
        self.boot_id.write_text("boot-1\n")
        self.version_file.write_text("1.0\n")
        reboot = base / "reboot"
        reboot.write_text(f'#!/bin/sh\necho "$@" > {shlex.quote(str(self.reboot_marker))}\n')
        reboot.chmod(0o755)
        self.reboot_command = [str(reboot)]

    def config(self, **sections: Mapping[str, Any]) -> Path:
        """Write agent.toml for this charger; `sections` override or extend the defaults."""
        document: dict[str, dict[str, Any]] = {
            "csms": {
                "url": self.csms_url,
                "charge_point_id": self.charge_point_id,
                "security_profile": 0,
                "call_timeout": 5,
                "reconnect_min": 0.2,
                "reconnect_max": 1,
                "ping_interval": 0,
            },
            "identity": {
                "vendor": "ExampleVendor",
                "model": "AB-Charger",
                "firmware_version_file": str(self.version_file),
            },
            "state": {"dir": str(self.state), "boot_id_file": str(self.boot_id)},
            "firmware": {
                "manufacturer_roots": str(self.base / "roots"),
                "reboot_command": self.reboot_command,
                "default_retry_interval": 1,
                "checkpoint_bytes": 1 << 20,
                # Its firmware server is on loopback, which is refused unless named here.
                "allowed_hosts": ["127.0.0.1", "localhost"],
            },
            "slots": {
                "backend": "file",
                "devices": {name: str(path) for name, path in self.slots.items()},
                "options": {"env": str(self.env)},
            },
            "health": {"deadline": 30},
        }
        for name, values in sections.items():
            document.setdefault(name, {}).update(values)
        return write_toml(self.base / "agent.toml", document)

    def sign(self, image: bytes) -> str:
        return sign_digest(hashlib.sha256(image).digest(), self.signer.key_pem)

    def request(self, firmware: Firmware, request_id: int, **extra: Any) -> dict[str, Any]:
        """A SignedUpdateFirmware payload (snake_case, as the `ocpp` library takes it)."""
        payload: dict[str, Any] = {
            "request_id": request_id,
            "firmware": {
                "location": firmware.url,
                "retrieveDateTime": extra.pop("retrieve", "2020-01-01T00:00:00Z"),
                "signingCertificate": extra.pop("certificate", self.signer.pem),
                "signature": extra.pop("signature", firmware.signature),
            },
        }
        if "install" in extra:
            payload["firmware"]["installDateTime"] = extra.pop("install")
        payload.update(extra)
        return payload

    def wait_reboot_request(self, agent: AgentProcess, timeout: float = 60) -> str:
        deadline = time.monotonic() + max(timeout, hang_guard())
        while not self.reboot_marker.exists():
            assert agent.proc is not None
            if agent.proc.poll() is not None:
                raise AssertionError(f"agent exited before rebooting:\n{agent.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no reboot requested:\n{agent.log}")
            time.sleep(0.05)
        return self.reboot_marker.read_text().strip()

    def power_cycle(self, agent: AgentProcess) -> str:
        """Shutdown (SIGTERM), the bootloader's boot rules, a new boot id; returns the slot.

        The booted slot reports `versions[slot]` as its firmware version."""
        if agent.proc is not None and agent.proc.poll() is None:
            agent.signal(signal.SIGTERM)
            agent.wait()
        self.reboot_marker.unlink(missing_ok=True)
        booted = filemodel.power_on(self.env)
        self.version_file.write_text(self.versions.get(booted, "unknown") + "\n")
        self._boot_count += 1
        self.boot_id.write_text(f"boot-{self._boot_count}\n")
        return booted
