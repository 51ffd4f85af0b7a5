"""One owner of the update, and only a verified image is ever armed (issue #9).

Each scenario is the attack of the issue, in another phase: request 71 is accepted and caught
in a phase that can take long; request 72, whose image has a bad signature, cancels it
(AcceptedCanceled, L01.FR.26) and downloads into the same slot; 72 ends InvalidSignature
(L01.FR.03). Then `kill -9` and a restart. Whatever the phase, nothing is armed, no reboot is
asked for, and request 71 hears nothing after the cancel (at most one terminal failure).

A refused or failed-before-the-first-byte request leaves the bootloader environment byte for
byte as it was (the target is marked bad only when its first byte is about to be written).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.crashpoints import HOLD_ENV
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.slots import filemodel
from tests.e2e.conftest import IMAGE, TERMINAL, Charger, iso, publish, wait_until

BAD_IMAGE = bytes(reversed(IMAGE))
FAILURES = TERMINAL - {"Installed"}


def script(path: Path, body: str) -> list[str]:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return [str(path)]


def alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}/status").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text()
    )


class Scenario:
    """How request 71 is caught in one phase: agent settings, its request, what to wait for."""

    def __init__(
        self,
        charger: Charger,
        rig: ChargerRig,
        server: FirmwareHttpServer,
        stack: contextlib.ExitStack,
    ) -> None:
        self.charger, self.rig, self.server, self.stack = charger, rig, server, stack
        self.base = rig.base
        self.env: dict[str, str] = {}
        self.config: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self.firmware = publish(rig, server, "/fw/71.bin", IMAGE)
        self.caught: Callable[[], Any] = lambda: True
        self.worker_pid: Path | None = None  # a command that must be killed by the cancel

    def hold(self, step: str) -> None:
        held = self.base / f"held-{step}"
        self.env[HOLD_ENV] = f"{step}:{held}"
        self.caught = held.exists


def scheduled(s: Scenario) -> None:
    s.extra["retrieve"] = iso(time.time() + 3600)
    s.caught = lambda: s.charger.statuses(71) == ["DownloadScheduled"]


def downloading(s: Scenario) -> None:
    stalling = s.stack.enter_context(FirmwareHttpServer())  # 72 comes from the other one
    stalling.faults.stall_after = 64 * 1024
    s.firmware = publish(s.rig, stalling, "/fw/71.bin", IMAGE)
    s.caught = lambda: stalling.stalled.is_set() and s.charger.statuses(71) == ["Downloading"]


def verifying(s: Scenario) -> None:
    s.hold("read-back")  # a slow medium: the read-back is where the cancel lands
    caught = s.caught
    s.caught = lambda: caught() and "Downloaded" in s.charger.statuses(71)


def verified(s: Scenario) -> None:
    """The install gate hangs the first time it is asked (in the verified phase)."""
    s.worker_pid = s.base / "gate.pid"
    s.config["firmware"] = {
        "install_gate": script(s.base / "gate", f"echo $$ > {s.worker_pid}\nsleep 60\n"),
    }
    s.caught = lambda: alive(s.worker_pid) and "SignatureVerified" in s.charger.statuses(71)  # type: ignore[arg-type]


def image_check(s: Scenario) -> None:
    """The issue's own sequence: a slow image check (run as the installation starts),
    cancelled by a bad image."""
    s.worker_pid = s.base / "image-check.pid"
    s.config["firmware"] = {
        "image_check": script(s.base / "image-check", f"echo $$ > {s.worker_pid}\nsleep 60\n")
    }
    s.caught = lambda: alive(s.worker_pid) and "Installing" in s.charger.statuses(71)  # type: ignore[arg-type]


def install_scheduled(s: Scenario) -> None:
    """The gate answers closed once (InstallScheduled), then hangs: a slow gate."""
    marker, s.worker_pid = s.base / "gate-asked", s.base / "gate.pid"
    body = (
        f"if [ -e {marker} ]; then echo $$ > {s.worker_pid}; sleep 60; fi\ntouch {marker}\nexit 1\n"
    )
    s.config["firmware"] = {
        "install_gate": script(s.base / "gate", body),
        "gate_poll_interval": 0.2,
    }
    s.caught = lambda: alive(s.worker_pid) and "InstallScheduled" in s.charger.statuses(71)  # type: ignore[arg-type]


def installing(s: Scenario) -> None:
    s.hold("arm")  # a slow bootloader, right before the trial is armed
    caught = s.caught
    s.caught = lambda: caught() and "Installing" in s.charger.statuses(71)


PHASES = {
    "download-scheduled": scheduled,
    "downloading": downloading,
    "verifying": verifying,
    "verified": verified,
    "install-scheduled": install_scheduled,
    "installing-image-check": image_check,
    "installing": installing,
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_bad_image_that_cancels_an_update_in_any_phase_is_never_armed(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, phase: str
):
    with contextlib.ExitStack() as stack:
        scenario = Scenario(charger, rig, fileserver, stack)
        PHASES[phase](scenario)
        cancel_in_phase(charger, rig, fileserver, scenario, phase)


def cancel_in_phase(
    charger: Charger,
    rig: ChargerRig,
    fileserver: FirmwareHttpServer,
    scenario: Scenario,
    phase: str,
) -> None:
    agent = charger.start(env=scenario.env, **scenario.config)
    assert charger.update(scenario.firmware, 71, **scenario.extra) == "Accepted"
    wait_until(scenario.caught, 60, f"request 71 in phase {phase}")
    heard_before = len(charger.statuses(71))

    bad = Firmware(
        publish(rig, fileserver, "/fw/72.bin", BAD_IMAGE).url, BAD_IMAGE, rig.sign(IMAGE)
    )
    assert charger.update(bad, 72) == "AcceptedCanceled"  # L01.FR.26
    charger.wait_status("InvalidSignature")  # L01.FR.03
    if scenario.worker_pid is not None:  # the command's process group was killed
        wait_until(lambda: not alive(scenario.worker_pid), 30, "the command to be killed")
    charger.wait_acknowledged()
    agent.kill9()

    agent = charger.restart()
    agent.wait_log("continuing update 72")
    assert charger.trigger() == {"status": "InvalidSignature", "request_id": 72}  # L01.FR.29
    wait_until(lambda: charger.job().get("request_id") == 72, 30, "job 72 on disk")

    env = filemodel.load_env(rig.env)
    assert env["trial"] is None and env["primary"] == "A", env  # nothing armed, ever
    assert not rig.reboot_marker.exists()
    assert charger.job()["phase"] == "finished" and charger.job()["outcome"] == "InvalidSignature"
    after_cancel = charger.statuses(71)[heard_before:]
    assert after_cancel == [] or (len(after_cancel) == 1 and after_cancel[0] in FAILURES)
    sent_for_72 = [s for s, rid in charger.sequence() if rid == 72]  # triggers left out
    assert [s for s in sent_for_72 if s in TERMINAL] == ["InvalidSignature"]
    assert "Installed" not in charger.statuses()


REFUSALS: dict[str, Callable[[ChargerRig, FirmwareHttpServer], dict[str, Any]]] = {
    # Each returns the agent's settings for a request that must fail before the first byte.
    "scheme not allowed": lambda rig, server: {"firmware": {"allowed_schemes": ["https"]}},
    "host not allowed": lambda rig, server: {"firmware": {"allowed_hosts": ["fw.example.com"]}},
    "server refuses": lambda rig, server: (
        setattr(server.faults, "statuses", [404] * 4) or {"firmware": {"default_retries": 1}}
    ),
    "slot gone bad after start": lambda rig, server: {},
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_request_that_fails_before_its_first_byte_leaves_the_bootloader_untouched(
    charger: Charger, rig: ChargerRig, fileserver: FirmwareHttpServer, refusal: str
):
    config = REFUSALS[refusal](rig, fileserver)
    firmware = publish(rig, fileserver, "/fw/2.0.bin", IMAGE)
    charger.start(**config)
    charger.csms.wait_message("BootNotification")
    before = rig.env.read_bytes()
    if refusal == "slot gone bad after start":
        rig.slots["B"].unlink()  # the self-check for the request finds it: Rejected
        rig.slots["B"].mkdir()
        assert charger.update(firmware, 80) == "Rejected"
        charger.agent.wait_log("refusing request 80: problem: ")  # type: ignore[union-attr]
    else:
        assert charger.update(firmware, 80) == "Accepted"
        charger.wait_status("DownloadFailed")
    assert rig.env.read_bytes() == before  # byte for byte: slot B was never marked bad
    assert filemodel.load_env(rig.env)["bad"] == []
