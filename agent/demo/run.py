"""`ocpp-fw-agent demo`: the whole secure update on this machine, in about half a minute.

In a temporary directory it makes a manufacturer root and a signing certificate, an image and
its signature, starts a CSMS (the `ocpp` library) and a firmware server on loopback, runs the
agent with file slots, sends SignedUpdateFirmware (1.6) or UpdateFirmware (`--ocpp 2.0.1` or
`2.1`), shows the download and read-back progress, simulates the reboot (the file backend's
power-on rules), and prints the statuses as the CSMS received them. Exit status 0 only when
`Installed` arrived from the new slot.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import AgentProcess, ChargerRig, Firmware
from agent.slots import filemodel

IMAGE_SIZE = 48 * 1024 * 1024
LINK_RATE = 16 * 1024 * 1024  # bytes/s: slow enough to watch the progress bar
BAR = 32


def say(text: str) -> None:
    print(text, flush=True)


def image_bytes(size: int) -> bytes:
    block = bytes((i * 7 + 3) % 251 for i in range(1 << 16))
    return (block * (size // len(block) + 1))[:size]


LABELS = {"downloading": "download", "verified": "read-back"}


def progress(state_dir: Path, until: set[str], agent: AgentProcess, timeout: float) -> None:
    """Draw a bar from the daemon's published status until a phase in `until` is reached."""
    tty = sys.stdout.isatty()
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        try:
            job = json.loads((state_dir / "status.json").read_text()).get("job") or {}
        except (OSError, ValueError):
            job = {}
        phase = job.get("phase", "")
        done, total = job.get("bytes_done") or 0, job.get("bytes_total")
        if total and phase in LABELS:
            filled = int(BAR * min(done / total, 1.0))
            speed = job.get("speed") or 0
            line = (
                f"  {LABELS[phase]:<10} [{'#' * filled}{'.' * (BAR - filled)}] "
                f"{done / 2**20:5.1f}/{total / 2**20:.1f} MiB {speed / 2**20:5.1f} MiB/s"
            )
            if line != shown:
                sys.stdout.write(("\r" if tty else "") + line + ("" if tty else "\n"))
                sys.stdout.flush()
                shown = line
        if phase in until or (agent.proc is not None and agent.proc.poll() is not None):
            break
        time.sleep(0.1)
    if tty:
        sys.stdout.write("\n")


def main(verbose: bool = False, ocpp: str = "1.6") -> int:
    """`ocpp`: the version the agent and the CSMS speak ("1.6", "2.0.1" or "2.1")."""
    try:
        from agent.demo.csms import Csms2x, TestCsms
    except ImportError as exc:
        print(f"the demo needs the test CSMS libraries (`make demo` installs them): {exc}")
        return 1
    base = Path(tempfile.mkdtemp(prefix="ocpp-fw-agent-demo-"))
    csms = (TestCsms() if ocpp == "1.6" else Csms2x(ocpp)).start()
    server = FirmwareHttpServer().__enter__()
    agents: list[AgentProcess] = []
    try:
        return _run(base, csms, server, agents, ocpp)
    finally:
        finish(base, csms, server, agents, verbose)


def finish(
    base: Path,
    csms: Any,
    server: FirmwareHttpServer,
    agents: list[AgentProcess],
    verbose: bool,
    kept: str = "",
) -> None:
    """The end of every demo, however it went: the agents and servers stopped, the charger's
    files removed, or with -v kept and said where (`kept` adds what to look at)."""
    for agent in agents:
        agent.stop()
    server.__exit__()
    csms.stop()
    if not verbose:
        shutil.rmtree(base, ignore_errors=True)
    else:
        say(f"(files kept in {base}{kept})")


def _boot_line(payload: dict[str, Any]) -> str:
    """1.6 names the version at the top level; 2.x inside chargingStation, with a reason."""
    station = payload.get("charging_station", payload)
    reason = f" (reason {payload['reason']})" if "reason" in payload else ""
    return f"firmware {station.get('firmware_version')}{reason}"


def prepare(
    base: Path, csms: Any, server: FirmwareHttpServer, ocpp: str
) -> tuple[ChargerRig, Firmware]:
    """Steps 1-3 of every demo: the charger's files, the PKI and a signed image on a slow link."""
    say(f"1. a charger in {base}: slots A (running, firmware 1.0) and B, file bootloader")
    rig = ChargerRig(base, csms.url)
    say("2. manufacturer root + firmware signing certificate; a 48 MiB image, signed (RSA-PSS)")
    image = image_bytes(IMAGE_SIZE)
    server.put("/firmware/2.0.bin", image)
    server.faults.rate = LINK_RATE
    firmware = Firmware(server.url("/firmware/2.0.bin"), image, rig.sign(image))
    say(f"3. CSMS (OCPP {ocpp}) at {csms.url}, firmware at {firmware.url}")
    return rig, firmware


def _run(
    base: Path, csms: Any, server: FirmwareHttpServer, agents: list[AgentProcess], ocpp: str
) -> int:
    rig, firmware = prepare(base, csms, server, ocpp)
    agent = AgentProcess(rig.config(csms={"ocpp_version": ocpp})).start()
    agents.append(agent)
    csms.wait_message("BootNotification", timeout=30)
    action = "SignedUpdateFirmware" if ocpp == "1.6" else "UpdateFirmware"
    say(f"4. the agent connected and booted; sending {action} (requestId 2001)")
    request = getattr(importlib.import_module(f"ocpp.v{ocpp.replace('.', '')}.call"), action)
    reply = csms.call(rig.charge_point_id, request(**rig.request(firmware, 2001)))
    say(f"   answer: {reply.status}")
    if reply.status != "Accepted":
        return 1
    progress(rig.state, {"rebooting", "finished"}, agent, timeout=120)
    rig.wait_reboot_request(agent, timeout=60)
    say("5. the agent armed a trial boot of slot B and asked for a reboot: power cycle")
    rig.versions["B"] = "2.0"
    booted = rig.power_cycle(agent)
    say(f"   the bootloader booted slot {booted}; starting the agent again")
    agent = AgentProcess(rig.base / "agent.toml").start()
    agents.append(agent)
    csms.wait_for(
        lambda: any(s in ("Installed", "InstallationFailed") for s, _ in csms.statuses()),
        60,
        "the final status",
    )
    csms.wait_message("SecurityEventNotification", timeout=30)
    say("6. what the CSMS received:")
    for message in csms.messages():
        if message.action in (csms.status_action, "SecurityEventNotification"):
            payload = {k: v for k, v in message.payload.items() if k != "timestamp"}
            say(f"   {message.action:<34} {payload}")
        elif message.action == "BootNotification":
            say(f"   {message.action:<34} {_boot_line(message.payload)}")
    statuses = [s for s, rid in csms.statuses() if rid == 2001]
    env = filemodel.load_env(rig.env)
    ok = statuses[-1:] == ["Installed"] and env["booted"]["slot"] == "B" and env["primary"] == "B"
    for violation in csms.schema_violations:  # every CALL was checked against the schemas
        say(f"   schema violation: {violation}")
    ok = ok and not csms.schema_violations
    say("OK: Installed from slot B, committed" if ok else "FAILED: see the statuses above")
    return 0 if ok else 1
