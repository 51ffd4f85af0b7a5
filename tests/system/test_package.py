"""The Debian package under a real systemd: build, lint, install, run, crash, hang, upgrade, purge.

Builds the .deb twice from the working tree (as it is, and with a newer changelog entry for the
upgrade), runs lintian on both, then boots a debootstrapped Debian 12 minbase root with
`systemd-nspawn --boot` (systemd 252 as the container's PID 1; the container shares the host's
network, so the test CSMS on loopback is reachable) and drives the package through its life with
apt-get and systemctl inside it. The root is built once (about a minute) and cached as a tarball
in ${XDG_CACHE_HOME:-~/.cache}/ocpp-fw-agent/; each run extracts a fresh copy. The .debs the
dependencies come from are cached there too.

The stages are tests of one module that share one container, in order; a failed stage makes the
later ones fail too. The only test-specific changes inside the container are the drop-in that
names the daemon's test-only hang file and shortens WatchdogSec= (the shipped 30 s is checked
first), and the agent.toml edit a user would make.

Skipped only where the machine cannot run containers: not root, or the tools are missing
(`make system` installs them), or systemd-nspawn cannot start a container at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from ocpp.v16 import call

from agent import durable
from agent.demo.csms import TestCsms
from agent.demo.fileserver import FirmwareHttpServer
from agent.demo.rig import ChargerRig, Firmware
from agent.slots import filemodel

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
BUILD_DEB = ROOT / "tests" / "system" / "build-deb"
UNIT = "ocpp-fw-agent.service"
UNIT_SOURCE = ROOT / "systemd" / UNIT
CONFFILE = "/etc/ocpp-fw-agent/agent.toml"
STATE_DIR = "/var/lib/ocpp-fw-agent"
CHARGE_POINT_ID = "CP-SYSTEST"
HANG_FILE = "/run/ocpp-fw-agent-test-hang"
TEST_WATCHDOG_SEC = 5
QUEUED_REQUEST_ID = 4242
MAX_EXPOSURE = 2.5

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ocpp-fw-agent"
# Bump when the recipe in build_rootfs() changes: the next run builds a new tarball.
ROOTFS_FORMAT = 1
ROOTFS_TARBALL = CACHE / f"bookworm-minbase-{ROOTFS_FORMAT}.tar"
# man-db: `systemd-analyze verify` checks that Documentation=man:ocpp-fw-agent(8) resolves.
ROOTFS_PACKAGES = ("systemd", "systemd-sysv", "dbus", "man-db")
MIRROR = "http://deb.debian.org/debian"
SOURCES_LIST = """\
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
"""
# A real installation has these (debootstrap does not write them).
HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"

# Host tools and the container's commands run with Debian's PATH, not the caller's (pyenv, venv).
CLEAN_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}
TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "dpkg-buildpackage": "dpkg-dev",
    "dch": "devscripts",
    "lintian": "lintian",
    "systemd-analyze": "systemd",
    "nsenter": "util-linux",
    "pgrep": "procps",
}

T = TypeVar("T")


# --- helpers ---------------------------------------------------------------------------------


def host(argv: list[str], timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a host command with Debian's PATH; raise with its output if it fails."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV, check=False, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}"
        )
    return result


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def exposure(text: str) -> float:
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", text)
    assert found, f"no exposure level in:\n{text[-2000:]}"
    return float(found.group(1))


def agent_config(port: int, extra: str = "") -> str:
    return f"""\
# Edited on this charger (the system test): the conffile must survive upgrades as it is.
[csms]
url = "ws://localhost:{port}/ocpp"
charge_point_id = "{CHARGE_POINT_ID}"
security_profile = 0
call_timeout = 5
reconnect_min = 0.5
reconnect_max = 2

[identity]
vendor = "ExampleVendor"
model = "SysTest"
firmware_version = "1.0"
{extra}"""


def cannot_run_containers() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn); run `make system` as root"
    for tool, package in TOOLS.items():
        if shutil.which(tool, path=CLEAN_ENV["PATH"]) is None:
            return f"{tool} is not installed (apt-get install {package}; `make system` does)"
    return None


# --- the cached Debian 12 root ---------------------------------------------------------------


def build_rootfs(report: Report) -> Path:
    """debootstrap a bookworm minbase root with systemd once; cache it as a tarball."""
    if ROOTFS_TARBALL.exists():
        report.line(f"rootfs: cached {ROOTFS_TARBALL}")
        return ROOTFS_TARBALL
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("bookworm-minbase-*.tar"):
        old.unlink()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        rootfs = work / "rootfs"
        host(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(ROOTFS_PACKAGES),
                "bookworm",
                str(rootfs),
                MIRROR,
            ],
            timeout=900,
        )
        (rootfs / "etc/apt/sources.list").write_text(SOURCES_LIST)
        (rootfs / "etc/hosts").write_text(HOSTS)
        host(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(work / "rootfs.tar"), "."])
        os.replace(work / "rootfs.tar", ROOTFS_TARBALL)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.timing("debootstrap bookworm minbase + tarball (first run only)", started)
    return ROOTFS_TARBALL


# --- the container ---------------------------------------------------------------------------


class Container:
    """A Debian root booted with systemd-nspawn; commands run inside with nsenter."""

    def __init__(self, rootfs: Path, binds: dict[Path, str], log: Path) -> None:
        self.rootfs = rootfs
        self.binds = binds
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    def nspawn(self, *extra: str) -> list[str]:
        args = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-D", str(self.rootfs)]
        for source, target in self.binds.items():
            args.append(f"--bind={source}:{target}")
        return [*args, *extra]

    def boot(self) -> str:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.nspawn("--boot", "--console=passive"),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=CLEAN_ENV,
            )

        def find_pid1() -> int | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nspawn exited {self.proc.returncode}; see {self.log}")
            found = subprocess.run(
                ["pgrep", "-P", str(self.proc.pid), "-x", "systemd"],
                capture_output=True,
                text=True,
                env=CLEAN_ENV,
                check=False,
            ).stdout.split()
            return int(found[0]) if found else None

        self.pid1 = wait_until(find_pid1, 30, "the container's systemd")

        def booted() -> str | None:
            # Fails at once ("offline") until PID 1 has set up its bus; then waits for the boot.
            result = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=90)
            state = result.stdout.strip()
            return state if state not in ("", "offline", "unknown") else None

        return wait_until(booted, 90, "the container to boot")

    def run(
        self, *argv: str, check: bool = True, timeout: float = 180, stdin: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the container (all its namespaces, a clean environment)."""
        env = [f"{key}={value}" for key, value in CLEAN_ENV.items()]
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", *env, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in the container: {' '.join(argv)} exited {result.returncode}\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def path(self, inside: str) -> Path:
        """The host path of a file in the container's root."""
        return self.rootfs / inside.lstrip("/")

    def show(self, *properties: str, unit: str = UNIT) -> dict[str, str]:
        args = [arg for prop in properties for arg in ("-p", prop)]
        out = self.run("systemctl", "show", unit, *args).stdout
        shown: dict[str, str] = {}
        for line in out.splitlines():  # list properties (DeviceAllow=) come one line each
            key, _, value = line.partition("=")
            shown[key] = f"{shown[key]}\n{value}" if key in shown else value
        return shown

    def journal(self) -> str:
        return self.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout

    def daemon_reload(self) -> None:
        self.run("systemctl", "daemon-reload")

    def agent_status(self) -> dict[str, Any]:
        out = self.run("ocpp-fw-agent", "status", "--json", check=False).stdout
        document: dict[str, Any] = json.loads(out)
        return document

    def wait_running(self, what: str, timeout: float = 30, **expect: str) -> dict[str, str]:
        """Wait for active/running (and any other expected properties); return the properties."""
        wanted = {"ActiveState": "active", "SubState": "running", **expect}
        props = ["MainPID", "NRestarts", "InvocationID", "StatusText", *wanted]

        def check() -> dict[str, str] | None:
            shown = self.show(*props)
            return shown if all(shown.get(k) == v for k, v in wanted.items()) else None

        return wait_until(check, timeout, f"{UNIT} {what}: {wanted}")

    def shutdown(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.run("systemctl", "poweroff", check=False, timeout=10)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid1, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


# --- the shared state of the stages ----------------------------------------------------------


class Report:
    """Timings and facts, printed at the end of the module and kept in build/system/report.txt."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def timing(self, what: str, started: float) -> None:
        self.line(f"{time.monotonic() - started:6.1f} s  {what}")


class System:
    def __init__(self) -> None:
        self.report = Report()
        self.deb: Path
        self.deb_new: Path
        self.version: str
        self.version_new: str
        self.lint: dict[Path, str] = {}
        self.container: Container
        self.csms: TestCsms
        self.port = 0
        self.boots = 0  # BootNotifications the CSMS has seen
        self.queued_id = ""


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    reason = cannot_run_containers()
    if reason:
        pytest.skip(reason)
    sys_ = System()
    work = tmp_path_factory.mktemp("system")
    out = ROOT / "build" / "system"
    out.mkdir(parents=True, exist_ok=True)
    started_all = time.monotonic()
    try:
        _build_debs(sys_, work)
        tarball = build_rootfs(sys_.report)
        started = time.monotonic()
        rootfs = work / "rootfs"
        rootfs.mkdir()
        host(["tar", "-C", str(rootfs), "--numeric-owner", "-xf", str(tarball)])
        # A persistent journal survives the container's reboots; kept in build/system/journal.txt.
        (rootfs / "var/log/journal").mkdir(exist_ok=True)
        sys_.report.timing("extract a fresh root from the cached tarball", started)

        probe = subprocess.run(
            [*Container(rootfs, {}, work / "probe.log").nspawn("--pipe"), "true"],
            capture_output=True,
            text=True,
            env=CLEAN_ENV,
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip(f"systemd-nspawn cannot start a container here: {probe.stderr.strip()}")

        archives = CACHE / "apt-archives"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        debs = work / "debs"
        debs.mkdir()
        for deb in (sys_.deb, sys_.deb_new):
            shutil.copy2(deb, debs / deb.name)
        sys_.container = Container(
            rootfs, {archives: "/var/cache/apt/archives", debs: "/srv/debs"}, out / "boot.log"
        )
        sys_.csms = TestCsms().start()
        sys_.port = sys_.csms.port
        started = time.monotonic()
        state = sys_.container.boot()
        sys_.report.timing(f"boot the container (systemd says: {state})", started)
        assert state in ("running", "degraded"), state
        yield sys_
    finally:
        if hasattr(sys_, "container"):
            c = sys_.container
            sys_.report.line(f"container exit status {c.shutdown()}")
            journal = subprocess.run(
                ["journalctl", "-D", str(c.path("/var/log/journal")), "--no-pager"],
                capture_output=True,
                text=True,
                env=CLEAN_ENV,
                check=False,
            )
            (out / "journal.txt").write_text(journal.stdout + journal.stderr)
        if hasattr(sys_, "csms"):
            with contextlib.suppress(Exception):
                sys_.csms.stop()
        shutil.rmtree(work / "rootfs", ignore_errors=True)
        sys_.report.timing("whole system test", started_all)
        (out / "report.txt").write_text("\n".join(sys_.report.lines) + "\n")  # see conftest


def _build_debs(sys_: System, work: Path) -> None:
    """Build the tree's package and a newer one (changelog bumped in a copy), in parallel."""
    started = time.monotonic()
    version = host(["dpkg-parsechangelog", "-SVersion"], cwd=ROOT).stdout.strip()
    sys_.version, sys_.version_new = version, f"{version}+systest1"
    jobs = {
        "deb": subprocess.Popen(
            [str(BUILD_DEB), str(work / "deb")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=CLEAN_ENV,
        ),
        "deb_new": subprocess.Popen(
            [str(BUILD_DEB), str(work / "deb-new"), sys_.version_new],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=CLEAN_ENV,
        ),
    }
    for name, job in jobs.items():
        stdout, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, f"building the .deb ({name}) failed:\n{stdout}\n{stderr}"
        deb = Path(stdout.strip().splitlines()[-1])
        setattr(sys_, name, deb)
        sys_.lint[deb] = stderr
    sys_.report.timing("build both .debs (dpkg-buildpackage) + lintian, in parallel", started)


# --- the stages ------------------------------------------------------------------------------


def test_package_is_built_lintian_clean(system: System) -> None:
    for deb, lint in system.lint.items():
        tags = [line for line in lint.splitlines() if re.match(r"[EW]: ", line)]
        assert not tags, f"lintian on {deb.name}: {tags}"
    deb = system.deb
    fields = host(["dpkg-deb", "-f", str(deb), "Depends", "Architecture"]).stdout
    for dependency in (
        "python3:any",
        "python3-cryptography",
        "python3-requests",
        "python3-websocket",
        "python3-systemd",
    ):
        assert re.search(rf"(^|[ ,]){re.escape(dependency)}([ ,(]|$)", fields, re.M), fields
    assert "Architecture: all" in fields
    listing = host(["dpkg-deb", "-c", str(deb)]).stdout
    names = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    modes = {line.split()[-1].lstrip("."): line.split()[0] for line in listing.splitlines()}
    assert modes[CONFFILE] == "-rw-------"
    assert "/usr/share/ocpp-fw-agent/agent/cli.py" in names
    assert "/usr/share/man/man8/ocpp-fw-agent.8.gz" in names
    assert "/lib/systemd/system/ocpp-fw-agent.service" in names
    assert not [n for n in names if "/dist-packages/" in n], "agent must stay private"
    secrets = [n for n in names if re.search(r"\.(key|pem)$|authorization_key", n)]
    assert not secrets, f"secrets shipped: {secrets}"
    conffiles = host(["dpkg-deb", "-I", str(deb), "conffiles"]).stdout.split()
    assert conffiles == [CONFFILE]
    system.report.line(f"package: {deb.name}, {fields.strip().splitlines()[0]}")


def test_unit_exposure_offline(system: System) -> None:
    out = host(["systemd-analyze", "security", "--offline=yes", str(UNIT_SOURCE)]).stdout
    score = exposure(out)
    system.report.line(f"systemd-analyze security --offline=yes: exposure {score}")
    assert score <= MAX_EXPOSURE


def test_apt_install_starts_the_service(system: System) -> None:
    c = system.container
    started = time.monotonic()
    c.run("apt-get", "update", "-qq", timeout=120)
    c.run("apt-get", "install", "-y", "-q", f"/srv/debs/{system.deb.name}", timeout=300)
    system.report.timing("apt-get update + install ./ocpp-fw-agent_*.deb (with its deps)", started)
    versions = c.run(
        "dpkg-query",
        "-W",
        "-f=${Package} ${Version}\\n",
        "ocpp-fw-agent",
        "python3",
        "python3-cryptography",
        "python3-requests",
        "python3-websocket",
        "python3-systemd",
    ).stdout
    system.report.line("installed: " + ", ".join(versions.strip().splitlines()))
    # The wrapper finds the private code; debian/changelog and agent.__version__ agree.
    code_version = c.run("ocpp-fw-agent", "--version").stdout.split()[-1]
    assert system.version.split("+")[0] == code_version, (
        f"debian/changelog says {system.version}, agent.__version__ {code_version}: "
        "bump both (dch -v)"
    )

    # Type=notify: active/running only after READY=1. The shipped config points nowhere yet.
    shown = c.wait_running("after installation")
    assert shown["StatusText"], "no STATUS= line"
    assert c.show("UnitFileState")["UnitFileState"] == "enabled"
    assert c.show("WatchdogUSec")["WatchdogUSec"] == "30s"
    assert oct(c.path(STATE_DIR).stat().st_mode & 0o777) == "0o700"
    assert oct(c.path(CONFFILE).stat().st_mode & 0o777) == "0o600"
    c.run("systemd-analyze", "verify", UNIT)
    score = exposure(c.run("systemd-analyze", "security", UNIT).stdout)
    system.report.line(f"systemd-analyze security (in the container): exposure {score}")
    assert score <= MAX_EXPOSURE


def test_shipped_dropin_examples_are_valid(system: System) -> None:
    """Each example drop-in, installed as an integrator would: the unit still verifies, systemd
    reads its DeviceAllow= and ReadWritePaths=, and the exposure stays within bounds. (Whether
    the device cgroup enforces them cannot be seen here: in this container the cgroup v1 devices
    controller is read-only, so DevicePolicy= is not applied; on a charger it is.)"""
    c = system.container
    examples = c.path("/usr/share/doc/ocpp-fw-agent/examples")
    dropins = sorted(examples.glob("slots-*.conf"))
    assert len(dropins) >= 3, dropins
    target = c.path(f"/etc/systemd/system/{UNIT}.d/slots.conf")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        for example in dropins:
            text = example.read_text()
            target.write_text(text)
            c.daemon_reload()
            c.run("systemd-analyze", "verify", UNIT)
            shown = c.show("DeviceAllow", "ReadWritePaths")
            for device in re.findall(r"^DeviceAllow=(\S+)", text, re.M):
                assert device in shown["DeviceAllow"], (example.name, shown)
            for paths in re.findall(r"^ReadWritePaths=(.+)$", text, re.M):
                for path in paths.split():
                    assert path in shown["ReadWritePaths"], (example.name, shown)
            assert exposure(c.run("systemd-analyze", "security", UNIT).stdout) <= MAX_EXPOSURE
    finally:
        target.unlink(missing_ok=True)
        c.daemon_reload()
    system.report.timing(f"{len(dropins)} example drop-ins: verify, read back, exposure", started)


def test_configured_agent_connects_and_sends_boot_notification(system: System) -> None:
    c = system.container
    c.path(CONFFILE).write_text(agent_config(system.port))  # a local edit of the conffile
    dropin = c.path(f"/etc/systemd/system/{UNIT}.d/system-test.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(
        "[Service]\n"
        f"Environment=OCPP_FW_AGENT_TEST_HANG_FILE={HANG_FILE}\n"
        f"WatchdogSec={TEST_WATCHDOG_SEC}s\n"
    )
    c.daemon_reload()
    started = time.monotonic()
    c.run("systemctl", "restart", UNIT)
    boot = system.csms.wait_message("BootNotification", timeout=20)[0]
    system.boots = 1
    system.report.timing("restart -> BootNotification at the CSMS", started)
    assert boot.charge_point_id == CHARGE_POINT_ID
    assert boot.payload["charge_point_vendor"] == "ExampleVendor"
    assert not system.csms.schema_violations

    shown = c.wait_running("connected", timeout=10)
    wait_until(lambda: "connected" in c.show("StatusText")["StatusText"], 10, "STATUS=connected")
    status_out = c.run("systemctl", "status", "--no-pager", UNIT).stdout
    line = wait_until(
        lambda: re.search(r'Status: "([^"]*)"', c.run("systemctl", "status", UNIT).stdout),
        10,
        "the STATUS= line in systemctl status",
    )
    system.report.line(f'systemctl status shows: Status: "{line.group(1)}"')
    assert "connected" in line.group(1), status_out
    document = c.agent_status()
    assert document["running"] is True and document["connection"] == "connected", document
    assert document["pid"] == int(shown["MainPID"])


def test_crash_is_restarted(system: System) -> None:
    c = system.container
    before = c.show("MainPID", "NRestarts")
    started = time.monotonic()
    c.run("systemctl", "kill", "--signal=SIGSEGV", "--kill-whom=main", UNIT)
    after = c.wait_running("restarted after SIGSEGV", NRestarts=str(int(before["NRestarts"]) + 1))
    assert after["MainPID"] != before["MainPID"]
    system.boots += 1
    system.csms.wait_message("BootNotification", count=system.boots, timeout=20)
    system.report.timing("SIGSEGV -> restarted, BootNotification again", started)
    assert "status=11/SEGV" in c.journal()


def test_hung_main_loop_is_killed_by_the_watchdog(system: System) -> None:
    c = system.container
    before = c.show("MainPID", "NRestarts")
    timeouts = c.journal().count("Watchdog timeout")
    started = time.monotonic()
    c.run("touch", HANG_FILE)
    try:
        wait_until(
            lambda: c.journal().count("Watchdog timeout") > timeouts,
            TEST_WATCHDOG_SEC * 3,
            "the watchdog to fire",
        )
    finally:
        c.run("rm", "-f", HANG_FILE)  # before the restart, or the new process hangs as well
    after = c.wait_running(
        "restarted after the watchdog", NRestarts=str(int(before["NRestarts"]) + 1)
    )
    assert after["MainPID"] != before["MainPID"]
    system.boots += 1
    system.csms.wait_message("BootNotification", count=system.boots, timeout=20)
    system.report.timing("hang -> watchdog SIGABRT -> restarted", started)
    journal = c.journal()
    assert f"Killing process {before['MainPID']}" in journal and "SIGABRT" in journal


def test_sigterm_stops_cleanly_with_the_outbox_intact(system: System) -> None:
    c = system.container
    # Take the CSMS away, so what is queued stays queued.
    system.csms.stop()
    wait_until(lambda: "offline" in c.show("StatusText")["StatusText"], 20, "STATUS=offline")
    c.run("systemctl", "stop", UNIT)
    # Queue a firmware status the way the daemon does, with the package's own code.
    system.queued_id = c.run(
        "/usr/bin/python3",
        "-I",
        "-c",
        "import sys; sys.path.insert(0, '/usr/share/ocpp-fw-agent')\n"
        "from pathlib import Path\n"
        "from agent.ocpp.outbox import Outbox\n"
        "from agent.service.daemon import OUTBOX_FILE\n"
        f"outbox = Outbox(Path('{STATE_DIR}') / OUTBOX_FILE)\n"
        "print(outbox.append('SignedFirmwareStatusNotification',"
        f" {{'status': 'Downloading', 'requestId': {QUEUED_REQUEST_ID}}}))",
    ).stdout.strip()
    assert system.queued_id
    c.run("systemctl", "start", UNIT)
    before = c.wait_running("started offline with a queued status")
    wait_until(lambda: c.agent_status().get("queued") == 1, 10, "status --json: 1 queued")

    started = time.monotonic()
    c.run("systemctl", "kill", "--signal=SIGTERM", "--kill-whom=main", UNIT)

    def inactive() -> dict[str, str] | None:
        shown = c.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "NRestarts")
        return shown if shown["ActiveState"] == "inactive" else None

    stopped = wait_until(inactive, 20, "the daemon to stop on SIGTERM")
    system.report.timing("SIGTERM -> stopped", started)
    assert stopped["Result"] == "success", stopped
    assert stopped["ExecMainCode"] == "1" and stopped["ExecMainStatus"] == "0", stopped
    assert stopped["NRestarts"] == before["NRestarts"], "a clean stop must not be restarted"
    outbox = json.loads(c.path(f"{STATE_DIR}/outbox.json").read_text())
    assert [e["unique_id"] for e in outbox["entries"]] == [system.queued_id]
    assert c.agent_status()["queued"] == 1


def test_upgrade_keeps_conffile_state_and_queue_and_restarts(system: System) -> None:
    c = system.container
    c.run("systemctl", "start", UNIT)
    before = c.wait_running("before the upgrade")
    conffile = hashlib.sha256(c.path(CONFFILE).read_bytes()).hexdigest()

    started = time.monotonic()
    # No --force-conf*: a conffile prompt would read EOF on stdin and fail the upgrade.
    c.run("apt-get", "install", "-y", "-q", f"/srv/debs/{system.deb_new.name}", timeout=300)
    system.report.timing(f"upgrade {system.version} -> {system.version_new}", started)
    version = c.run("dpkg-query", "-W", "-f=${Version}", "ocpp-fw-agent").stdout
    assert version == system.version_new

    assert hashlib.sha256(c.path(CONFFILE).read_bytes()).hexdigest() == conffile
    leftovers = [p.name for p in c.path("/etc/ocpp-fw-agent").iterdir() if "dpkg" in p.name]
    assert not leftovers, leftovers
    assert oct(c.path(STATE_DIR).stat().st_mode & 0o777) == "0o700"

    after = c.wait_running("restarted by the upgrade")
    assert after["InvocationID"] != before["InvocationID"], "the upgrade did not restart it"
    assert after["MainPID"] != before["MainPID"]
    assert c.agent_status()["queued"] == 1

    # The CSMS is back (same address): the queued status goes out, after a new BootNotification.
    started = time.monotonic()
    system.csms = TestCsms().start(system.port)
    system.csms.wait_message("SignedFirmwareStatusNotification", timeout=30)
    system.report.timing("CSMS back -> the queued status delivered", started)
    assert system.csms.statuses() == [("Downloading", QUEUED_REQUEST_ID)]
    assert system.csms.messages("BootNotification")
    wait_until(lambda: c.agent_status().get("queued") == 0, 10, "the outbox to drain")


UPDATE_REQUEST_ID = 77
UPDATE_IMAGE = bytes(range(256)) * 4096 + b"2.0"  # 1 MiB and a bit: several checkpoints
HAPPY = ["Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting"]
# The integrator's part for `file` slots: the slot files and their directory. (The container
# shares the host's kernel, so its boot id does not change on a reboot: the test plays the
# kernel with boot_id_file, and the bootloader with the file backend's power-on rules.)
UPDATE_CONFIG = """
[state]
boot_id_file = "/srv/boot_id"

[firmware]
manufacturer_roots = "/etc/ocpp-fw-agent/roots"
checkpoint_bytes = 262144
allowed_hosts = ["127.0.0.1"]  # the test's firmware server, on the host's loopback
# The integrator's commands run under the unit's sandbox too: the image check reads the slot.
image_check = [
    "/bin/sh", "-c",
    'head -c "$OCPP_FW_IMAGE_SIZE" "$OCPP_FW_SLOT" | sha256sum | grep -q "$OCPP_FW_IMAGE_SHA256"',
]
install_gate = ["/bin/sh", "-c", "test -r /etc/os-release"]

[slots]
backend = "file"
devices = { A = "/srv/slots/A.img", B = "/srv/slots/B.img" }

[health]
deadline = 60
"""


def test_signed_update_through_a_real_reboot(system: System, tmp_path: Path) -> None:
    """Use case L01 under the unit's sandbox: SignedUpdateFirmware, the image streamed from a
    server on the host into slot B, verified and read back, checked by the integrator's image
    check (which reads the slot under the sandbox), past the install gate, the trial armed, a
    real reboot (`systemctl reboot` from the daemon: the container exits 133), the
    bootloader's rules, the next boot commits B and reports Installed and FirmwareUpdated."""
    c = system.container
    rig = ChargerRig(tmp_path / "rig", system.csms.url, CHARGE_POINT_ID)  # PKI and signatures
    roots = c.path("/etc/ocpp-fw-agent/roots")
    roots.mkdir(mode=0o755)
    (roots / "manufacturer.pem").write_text(rig.root.pem)
    c.path("/srv/slots").mkdir(parents=True)
    c.path("/srv/slots/A.img").write_bytes(b"factory image 1.0\n")
    c.path("/srv/slots/B.img").write_bytes(b"")
    for slot in ("A", "B"):  # pre-allocated, as partitions are: the size is the capacity
        os.truncate(c.path(f"/srv/slots/{slot}.img"), 64 << 20)
    c.path("/srv/boot_id").write_text("boot-1\n")
    env = c.path(f"{STATE_DIR}/bootenv.json")
    durable.atomic_write_json(env, filemodel.new_env(["A", "B"], "A"))
    c.path(CONFFILE).write_text(agent_config(system.port, UPDATE_CONFIG))
    # Issue 12, stumble 1: without the drop-in, the deep check under the unit's own sandbox
    # names the line to add (the plain check, run as root from a shell, cannot see it).
    c.run("ocpp-fw-agent", "check-config")
    started = time.monotonic()
    denied = c.run("ocpp-fw-agent", "check-config", "--deep", check=False)
    system.report.timing("check-config --deep under the unit's sandbox", started)
    assert denied.returncode == 1, denied.stdout + denied.stderr
    assert denied.stdout.startswith(f"deep check inside the sandbox of {UNIT} (systemd-run)\n")
    assert denied.stderr == "".join(
        f"problem: slot {slot}: /srv/slots/{slot}.img is not writable here (read-only file "
        "system); grant it in the unit's drop-in (systemctl edit ocpp-fw-agent): "
        f"ReadWritePaths=/srv/slots/{slot}.img\n"
        for slot in ("A", "B")
    ), denied.stderr
    assert oct(c.path(STATE_DIR).stat().st_mode & 0o777) == "0o700"  # left as the unit has it
    c.path(f"/etc/systemd/system/{UNIT}.d/slots.conf").write_text(
        "[Service]\nReadWritePaths=/srv/slots\n"
    )
    c.daemon_reload()
    granted = c.run("ocpp-fw-agent", "check-config", "--deep", check=False)
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert granted.stdout.endswith("no problems: updates can run\n")
    boots = len(system.csms.messages("BootNotification"))
    c.run("systemctl", "restart", UNIT)
    system.csms.wait_message("BootNotification", count=boots + 1, timeout=20)

    with FirmwareHttpServer() as server:
        server.put("/fw/2.0.bin", UPDATE_IMAGE)
        firmware = Firmware(server.url("/fw/2.0.bin"), UPDATE_IMAGE, rig.sign(UPDATE_IMAGE))
        started = time.monotonic()
        request = call.SignedUpdateFirmware(**rig.request(firmware, UPDATE_REQUEST_ID))
        assert system.csms.call(CHARGE_POINT_ID, request).status == "Accepted"
        assert c.proc is not None
        code = c.proc.wait(90)
    system.report.timing("SignedUpdateFirmware -> download, verify, arm -> reboot", started)
    assert code == 133, f"systemd-nspawn exited {code}, not 133 (reboot)"
    mine = [s for s, request_id in system.csms.statuses() if request_id == UPDATE_REQUEST_ID]
    assert mine == HAPPY
    assert c.path("/srv/slots/B.img").read_bytes()[: len(UPDATE_IMAGE)] == UPDATE_IMAGE
    assert filemodel.load_env(env)["trial"]["slot"] == "B"

    # Power on: the bootloader's rules pick the armed trial slot; the kernel has a new boot id.
    assert filemodel.power_on(env) == "B"
    c.path("/srv/boot_id").write_text("boot-2\n")
    started = time.monotonic()
    assert c.boot() in ("running", "degraded")
    system.csms.wait_for(
        lambda: ("Installed", UPDATE_REQUEST_ID) in system.csms.statuses(), 60, "Installed"
    )
    system.report.timing("boot of the new slot -> Installed", started)
    system.csms.wait_for(
        lambda: any(
            m.payload["type"] == "FirmwareUpdated"
            for m in system.csms.messages("SecurityEventNotification")
        ),
        30,
        "SecurityEventNotification FirmwareUpdated",
    )
    assert filemodel.load_env(env)["primary"] == "B", "the new slot was not committed"
    c.wait_running("after the update")


API_GROUP = "ocpp-fw"
API_SOCKET = "/run/ocpp-fw-agent/api.sock"
API_DROPIN_EXAMPLE = "/usr/share/doc/ocpp-fw-agent/examples/api-mode.conf"
# The README's client, run in the container as another user: what `hello` got, or why not.
API_CLIENT = """\
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect_error": exc.strerror}))
    sys.exit(1)
sock.sendall(b'{"id": 1, "method": "hello", "params": {"api": 1}}\\n')
print(sock.makefile("r", encoding="utf-8").readline().strip())
"""
NOBODY = ("--reuid=65534", "--regid=65534")


def api_hello(c: Container, *setpriv: str) -> dict[str, Any]:
    done = c.run("setpriv", *setpriv, "/usr/bin/python3", "-I", "-c", API_CLIENT, API_SOCKET,
                 check=False)  # fmt: skip
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_api_mode_with_the_shipped_dropin(system: System) -> None:
    """Issue 13 mode 2 as packaged: the group the package made, the example drop-in (its
    problems named by the deep check before it is installed, none after), the socket 0660
    root:ocpp-fw in the runtime directory, a member of the group gets `hello` answered, anyone
    else is refused (by the file mode, and by the agent's peer check past it)."""
    c = system.container
    group = c.run("getent", "group", API_GROUP).stdout.split(":")
    gid = int(group[2])
    assert gid < 1000, f"{API_GROUP} is not a system group: {group}"
    dropins = c.path(f"/etc/systemd/system/{UNIT}.d")
    dropins.mkdir(parents=True, exist_ok=True)
    c.path(CONFFILE).write_text(
        agent_config(system.port).replace("[csms]\n", '[csms]\nmode = "api"\n', 1)
    )

    started = time.monotonic()
    before = c.run("ocpp-fw-agent", "check-config", "--deep", check=False)
    system.report.timing("check-config --deep in API mode, without the drop-in", started)
    fix = (
        f"grant it in the unit's drop-in (systemctl edit ocpp-fw-agent, as in {API_DROPIN_EXAMPLE})"
    )
    add = f"add to the unit's drop-in (systemctl edit ocpp-fw-agent, as in {API_DROPIN_EXAMPLE})"
    api_lines = [line for line in before.stderr.splitlines() if line.startswith("problem: [api]")]
    assert [line for line in api_lines if line.startswith("problem: [api] group")] == [
        f"problem: [api] group: the daemon is not a member of {API_GROUP} and has no CAP_CHOWN, "
        f"so it cannot give the socket to the group; {add}: SupplementaryGroups={API_GROUP}",
        "problem: [api] group: the system call filter refuses chown, so the daemon cannot give "
        f"the socket to the group; {add}: SystemCallFilter=@chown",
    ], before.stderr
    # /run is read-only under ProtectSystem=strict on a charger; in this container systemd 252
    # leaves it writable to the unit (with ProtectKernelTunables=), so the line may be absent.
    assert [line for line in api_lines if line.startswith("problem: [api] socket")] in (
        [],
        [
            "problem: [api] socket: /run/ocpp-fw-agent does not exist and cannot be made here "
            f"(read-only file system); {fix}: RuntimeDirectory=ocpp-fw-agent"
        ],
    ), before.stderr

    shutil.copy(c.path(API_DROPIN_EXAMPLE), dropins / "api-mode.conf")
    c.daemon_reload()
    c.run("systemd-analyze", "verify", UNIT)
    score = exposure(c.run("systemd-analyze", "security", UNIT).stdout)
    system.report.line(f"exposure with the API-mode drop-in: {score}")
    assert score <= MAX_EXPOSURE
    after = c.run("ocpp-fw-agent", "check-config", "--deep", check=False)
    assert "problem: [api]" not in after.stderr, after.stderr

    started = time.monotonic()
    c.run("systemctl", "restart", UNIT)
    c.wait_running("in API mode")
    # /run is the container's own tmpfs: looked at from inside.
    shown = wait_until(
        lambda: c.run("stat", "-c", "%F %a %u %g", API_SOCKET, check=False).stdout.strip(),
        20,
        "the socket",
    )
    system.report.timing("restart in API mode -> socket", started)
    assert shown == f"socket 660 0 {gid}", shown
    assert c.run("stat", "-c", "%a %U", "/run/ocpp-fw-agent").stdout.split() == ["755", "root"]

    member = api_hello(c, *NOBODY, f"--groups={gid}")
    assert member["result"]["api"] == 1, member
    assert api_hello(c, *NOBODY, "--clear-groups") == {"connect_error": "Permission denied"}
    past_mode = api_hello(
        c, *NOBODY, "--clear-groups", "--inh-caps=+dac_override", "--ambient-caps=+dac_override"
    )
    assert past_mode["error"]["code"] == "forbidden", past_mode
    assert f"uid 65534 is not root and not in group {API_GROUP}" in past_mode["error"]["message"]
    assert "not root and not in group" in c.journal()

    # The deep check beside the running daemon: its socket is live, and the runtime directory
    # stays (the check's transient unit shares it and must not remove it).
    beside = c.run("ocpp-fw-agent", "check-config", "--deep", check=False)
    assert "problem: [api]" not in beside.stderr, beside.stderr
    c.run("test", "-S", API_SOCKET)
    assert api_hello(c, *NOBODY, f"--groups={gid}")["result"]["api"] == 1

    c.run("systemctl", "stop", UNIT)
    c.run("test", "!", "-e", "/run/ocpp-fw-agent")  # RuntimeDirectory=: no socket outlives it
    (dropins / "api-mode.conf").unlink()
    c.daemon_reload()


def test_purge_removes_unit_and_state(system: System) -> None:
    c = system.container
    shutil.rmtree(c.path(f"/etc/systemd/system/{UNIT}.d"))  # the test's own drop-in
    c.daemon_reload()
    started = time.monotonic()
    c.run("apt-get", "purge", "-y", "-q", "ocpp-fw-agent")
    system.report.timing("apt-get purge", started)
    wait_until(lambda: not system.csms.connected(CHARGE_POINT_ID), 10, "the agent to disconnect")
    assert c.show("LoadState")["LoadState"] == "not-found"
    for gone in (
        f"/lib/systemd/system/{UNIT}",
        f"/etc/systemd/system/multi-user.target.wants/{UNIT}",
        STATE_DIR,
        CONFFILE,
        "/usr/share/ocpp-fw-agent",
        "/usr/bin/ocpp-fw-agent",
    ):
        assert not os.path.lexists(c.path(gone)), f"{gone} left after purge"
    # The group of the API socket stays (the charger's stack may still carry its gid).
    assert c.run("getent", "group", API_GROUP, check=False).returncode == 0
    # What the integrator put there (the manufacturer roots) is theirs to remove.
    etc = c.path("/etc/ocpp-fw-agent")
    assert not etc.exists() or {p.name for p in etc.iterdir()} <= {"roots"}


def test_the_sandbox_can_reboot(system: System) -> None:
    """The unit's own sandbox, with the daemon replaced by `systemctl reboot`: the container
    reboots (systemd-nspawn exits 133). Proves the reboot needs no capability."""
    c = system.container
    lines = []
    for line in UNIT_SOURCE.read_text().splitlines():
        if line.startswith("[Install]"):
            break
        if line.startswith(("WatchdogSec=", "NotifyAccess=", "Restart")):
            continue
        line = {"Type=notify": "Type=oneshot"}.get(line, line)
        if line.startswith("ExecStart="):
            line = "ExecStart=/bin/systemctl reboot"
        lines.append(line)
    c.path("/etc/systemd/system/reboot-probe.service").write_text("\n".join(lines) + "\n")
    c.daemon_reload()
    started = time.monotonic()
    c.run("systemctl", "start", "--no-block", "reboot-probe.service")
    assert c.proc is not None
    code = c.proc.wait(30)
    system.report.timing("reboot from the sandbox -> container rebooted", started)
    assert code == 133, f"systemd-nspawn exited {code}, not 133 (reboot)"
