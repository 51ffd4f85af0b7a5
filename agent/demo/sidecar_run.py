"""`ocpp-fw-agent demo --sidecar`: the demo's update with the charger's own stack behind the agent.

Sidecar mode (1.6): the CSMS (the `ocpp` library), the agent with `[csms] mode = "sidecar"`, and
a small charge-point stack (agent/demo/stack.py) connected to the agent's local listener. The
stack boots, beats and charges (RemoteStartTransaction from the CSMS, Start/MeterValues/Stop)
while the CSMS sends SignedUpdateFirmware; the agent downloads and proves the image but holds
the install until the stack's StopTransaction (learned from the traffic it forwards), then
asks for the reboot. After the power cycle the stack reconnects and its BootNotification,
passed through, is the trial boot's health signal: Installed follows. The closing account lists
every CALL on the CSMS's one websocket with whose it was. Exit status 0 only when Installed
arrived from slot B, the install waited for the transaction and every CALL met the schemas.
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.demo import timeline
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import AgentProcess, ChargerRig
from agent.demo.run import finish, prepare, progress, say
from agent.slots import filemodel

REQUEST_ID = 2001
CONNECTOR = 1
ID_TAG = "TAG-0042"
HEARTBEAT_INTERVAL = 4  # what the CSMS tells the stack: a few beats during the demo
AGENT_ACTIONS = {"SignedFirmwareStatusNotification", "SecurityEventNotification"}


def free_port() -> int:
    """A loopback port nobody listens on now (for the agent's sidecar listener)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main(verbose: bool = False) -> int:
    try:
        from agent.demo.csms import TestCsms
        from agent.demo.stack import DemoStack
    except ImportError as exc:
        print(f"the demo needs the test CSMS libraries (`make demo` installs them): {exc}")
        return 1
    base = Path(tempfile.mkdtemp(prefix="ocpp-fw-agent-demo-"))
    csms = TestCsms().start()
    csms.heartbeat_interval = HEARTBEAT_INTERVAL
    server = FirmwareHttpServer().__enter__()
    agents: list[AgentProcess] = []
    port = free_port()
    stack = DemoStack(f"ws://127.0.0.1:{port}/ocpp/CP-DEMO-1", "ExampleVendor", "AB-Charger")
    try:
        return _run(base, csms, server, agents, stack, port)
    finally:
        stack.stop()
        finish(base, csms, server, agents, verbose, "; the agent's log is agent.log")


def _agent_said(agent: AgentProcess, text: str) -> str:
    """The agent's own log line containing `text`, without its time stamp and level."""
    agent.wait_log(text, 120)
    line = next(line for line in agent.log.splitlines() if text in line)
    return "   agent log: " + line.split(": ", 1)[-1]


def _run(
    base: Path,
    csms: Any,
    server: FirmwareHttpServer,
    agents: list[AgentProcess],
    stack: Any,
    port: int,
) -> int:
    from ocpp.v16 import call

    rig, firmware = prepare(base, csms, server, "1.6")
    config = rig.config(
        csms={"mode": "sidecar"},
        sidecar={"listen": f"127.0.0.1:{port}"},
        firmware={"gate_poll_interval": 0.5},
    )
    agent = AgentProcess(config).start()
    agents.append(agent)
    say(f"   the agent in sidecar mode: on the CSMS for CP-DEMO-1, the stack's CSMS at {stack.url}")

    status = _boot(stack, rig)
    say(f"4. the charger's stack connected to the agent and booted (firmware 1.0): {status}")
    if status != "Accepted":
        return 1

    reply = csms.call(rig.charge_point_id, call.RemoteStartTransaction(id_tag=ID_TAG))
    id_tag = stack.remote_starts[-1]
    transaction = stack.start_transaction(id_tag, 10_000, CONNECTOR)
    stack.status(CONNECTOR, "Charging")
    stack.meter_values(transaction, 10_400, CONNECTOR)
    say(
        f"5. CSMS: RemoteStartTransaction {ID_TAG} ({reply.status}, answered by the stack); "
        f"the stack started transaction {transaction}"
    )

    say(f"6. CSMS: SignedUpdateFirmware (requestId {REQUEST_ID}), answered by the agent")
    payload = rig.request(firmware, REQUEST_ID)
    reply = csms.call(rig.charge_point_id, call.SignedUpdateFirmware(**payload))
    say(f"   answer: {reply.status}")
    if reply.status != "Accepted":
        return 1
    progress(rig.state, {"install-scheduled", "installing", "rebooting", "finished"}, agent, 120)
    csms.wait_for(
        lambda: ("InstallScheduled", REQUEST_ID) in csms.statuses(), 120, "InstallScheduled"
    )
    say(
        f"7. image downloaded, verified and read back; the agent holds the install while "
        f"transaction {transaction} runs (InstallScheduled)"
    )
    say(_agent_said(agent, f"transaction {transaction} started"))
    say(_agent_said(agent, "install gate closed"))
    for meter in (11_200, 12_100):
        time.sleep(1.0)  # the car charges on; the agent keeps waiting
        stack.meter_values(transaction, meter, CONNECTOR)
    stack.stop_transaction(transaction, 12_500)
    stack.status(CONNECTOR, "Available")
    say(f"8. the stack stopped transaction {transaction}: the agent installs and asks for a reboot")
    say(_agent_said(agent, f"transaction {transaction} stopped"))
    rig.wait_reboot_request(agent, timeout=120)
    say(_agent_said(agent, "-> rebooting"))

    stack.power_off()
    power_cycle_at = time.monotonic()
    rig.versions["B"] = "2.0"
    booted = rig.power_cycle(agent)
    say(f"9. power cycle: the bootloader booted slot {booted} (trial); the agent starts again")
    agent = AgentProcess(rig.base / "agent.toml").start()
    agents.append(agent)
    status = _boot(stack, rig)
    say(f"   the stack reconnected; its BootNotification (firmware 2.0): {status}")
    say(_agent_said(agent, "the CSMS accepted the trial boot"))
    csms.wait_for(
        lambda: any(s in ("Installed", "InstallationFailed") for s, _ in csms.statuses()),
        60,
        "the final status",
    )
    csms.wait_for(_event_answered(csms), 30, "the FirmwareUpdated event and its answer")
    stack.power_off()
    return _account(csms, stack, rig, power_cycle_at)


def _event_answered(csms: Any) -> Any:
    """The agent's last report (its security event) sent and answered by the CSMS."""

    def answered() -> bool:
        events = [
            e
            for e in timeline.exchanges(list(csms.frames), ())
            if e.action == "SecurityEventNotification"
        ]
        return bool(events) and events[-1].answer is not None

    return answered


def _boot(stack: Any, rig: ChargerRig) -> str:
    """The stack's start: connected, booted with the running firmware's version, beating at
    the interval the CSMS gave once accepted, its connector Available. The boot's status."""
    stack.connect()
    reply = stack.boot(rig.version_file.read_text().strip())
    if reply.status == "Accepted":
        stack.beat(int(reply.interval))
    stack.status(CONNECTOR, "Available")
    return str(reply.status)


def _account(csms: Any, stack: Any, rig: ChargerRig, power_cycle_at: float) -> int:
    """The closing account: every CALL on the CSMS link, whose it was, and the verdicts."""
    found = timeline.exchanges(csms.frames, stack.frames)
    marks = [(power_cycle_at, "power cycle: the charger reboots into slot B")]
    say("10. every CALL on the CSMS's one websocket, in order (seconds; => the answer).")
    say("    stack -> CSMS: the stack's own frame, which the agent forwarded unchanged")
    for line in timeline.render(found, marks):
        say(line)

    def first(sender: str, action: str, status: str | None = None) -> int | None:
        for index, exchange in enumerate(found):
            if (exchange.sender, exchange.action) == (sender, action) and (
                status is None or exchange.payload.get("status") == status
            ):
                return index
        return None

    scheduled = first("agent", "SignedFirmwareStatusNotification", "InstallScheduled")
    stopped = first("stack", "StopTransaction")
    installing = first("agent", "SignedFirmwareStatusNotification", "Installing")
    waited = None not in (scheduled, stopped, installing) and (
        scheduled < stopped < installing  # type: ignore[operator]
    )
    say(
        "   the install waited for StopTransaction: InstallScheduled before it, Installing after"
        if waited
        else "   the install did NOT wait for StopTransaction"
    )
    agent_own = sorted({e.action for e in found if e.sender == "agent"}, reverse=True)
    boots = [e for e in found if e.action == "BootNotification"]
    alone = set(agent_own) <= AGENT_ACTIONS and all(e.sender == "stack" for e in boots)
    say(
        f"   the agent's own CALLs: {', '.join(agent_own)};\n"
        "   every BootNotification and Heartbeat was the stack's"
        if alone
        else f"   the agent sent {', '.join(agent_own)} of its own"
    )
    at_csms = {frame.text for frame in csms.frames}
    unchanged = all(text in at_csms for _, text in stack.frames)
    say(
        f"   all {len(stack.frames)} frames of the stack crossed the agent byte for byte"
        if unchanged
        else "   some of the stack's frames were changed or lost on the way"
    )
    for violation in csms.schema_violations:  # every CALL was checked against the schemas
        say(f"   schema violation: {violation}")
    statuses = [s for s, rid in csms.statuses() if rid == REQUEST_ID]
    env = filemodel.load_env(rig.env)
    installed = (
        statuses[-1:] == ["Installed"] and env["booted"]["slot"] == "B" and env["primary"] == "B"
    )
    ok = installed and waited and alone and unchanged and not csms.schema_violations
    say(
        "OK: Installed from slot B, committed, after the stack's transaction stopped"
        if ok
        else "FAILED: see the account above"
    )
    return 0 if ok else 1
