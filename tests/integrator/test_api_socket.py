"""Issue 13 mode 2 (local API) as an integrator meets it: what `check-config --deep` prints about
the socket before the daemon trips over it at start (exit 2) or the charger's stack meets a
dead socket. The exact line each time.

Real parts: the CLI as a process on the rig's file-slot charger, real Unix sockets, a read-only
/run (a tmpfs mounted read-only in a private mount namespace, as ProtectSystem=strict leaves it)
and a process without CAP_CHOWN (setpriv). The shipped unit's system call filter and drop-in
are tests/system/test_package.py's part (systemd is not PID 1 here).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.demo.rig import SOURCE_ROOT, ChargerRig

EXAMPLE = "/usr/share/doc/ocpp-fw-agent/examples/api-mode.conf"
DROPIN = f"the unit's drop-in (systemctl edit ocpp-fw-agent, as in {EXAMPLE})"
GROUP = "4300"  # numeric: no entry in /etc/group needed


def deep_check(config: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "agent", "-c", str(config), "check-config", "--deep"],
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def api_charger(tmp_path: Path, socket_path: Path, group: str = GROUP) -> Path:
    rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
    return rig.config(csms={"mode": "api"}, api={"socket": str(socket_path), "group": group})


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"needs {name}")
    return found


def test_a_socket_left_by_a_dead_agent_is_named(tmp_path: Path) -> None:
    """An agent killed outside systemd (no RuntimeDirectory= to clean up) leaves its socket:
    the charger's stack gets 'connection refused' there. The check names it and the fix, and
    is quiet once it is gone (fails without the API checks: exit 0, nothing printed)."""
    path = tmp_path / "api.sock"
    config = api_charger(tmp_path, path)
    assert deep_check(config).returncode == 0
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))
    left.close()  # the file stays, nobody listens
    done = deep_check(config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (
        f"problem: [api] socket: {path} is left from an agent that is not running (nobody "
        "listens); the charger's stack gets 'connection refused' there: remove it (rm "
        f"{path}) or start the agent (systemctl restart ocpp-fw-agent), which replaces it\n"
    )
    path.unlink()
    assert deep_check(config).returncode == 0


def test_a_live_socket_is_no_problem_and_a_file_in_its_place_is(tmp_path: Path) -> None:
    """The check beside a running agent sees its socket answer: nothing to report. A regular
    file at the path would be replaced by the daemon's socket: named."""
    path = tmp_path / "api.sock"
    config = api_charger(tmp_path, path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen(1)
        done = deep_check(config)
        assert done.returncode == 0, done.stderr
    path.unlink()
    path.write_text("notes\n")
    done = deep_check(config)
    assert done.stderr == (
        f"problem: [api] socket: {path} exists and is not a socket; the daemon would replace "
        "it: move it away or fix [api] socket\n"
    )


def test_a_group_that_does_not_exist_is_named(tmp_path: Path) -> None:
    """`[api] group` by name, without the group on this system (the package was not installed,
    or the name was mistyped): the daemon would stop at start with exit 2."""
    config = api_charger(tmp_path, tmp_path / "api.sock", group="ocpp-fw-typo")
    done = deep_check(config)
    assert done.returncode == 1
    assert done.stderr == (
        "problem: [api] group: there is no group ocpp-fw-typo here; create it (addgroup "
        "--system ocpp-fw-typo; the package makes ocpp-fw) or give a numeric gid\n"
    )


@pytest.mark.root
def test_without_cap_chown_the_daemon_must_be_in_the_group(tmp_path: Path) -> None:
    """Under the shipped unit the daemon is root without any capability: it can give the socket
    to the group only as a member. Root without CAP_CHOWN is told SupplementaryGroups=; as a
    member of the group it is not (the API helper's finding, now found before the start)."""
    setpriv = tool("setpriv")
    config = api_charger(tmp_path, tmp_path / "api.sock")
    no_chown = (setpriv, "--bounding-set=-chown", "--inh-caps=-chown", "--clear-groups")
    done = deep_check(config, no_chown)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (
        f"problem: [api] group: the daemon is not a member of {GROUP} and has no CAP_CHOWN, so "
        f"it cannot give the socket to the group; add to {DROPIN}: SupplementaryGroups={GROUP}\n"
    )
    member = (setpriv, "--bounding-set=-chown", "--inh-caps=-chown", f"--groups={GROUP}")
    done = deep_check(config, member)
    assert done.returncode == 0, done.stderr


@pytest.mark.root
def test_a_read_only_run_names_runtime_directory(tmp_path: Path) -> None:
    """The default socket, /run/ocpp-fw-agent/api.sock, where /run is read-only (the unit's
    ProtectSystem=strict): the daemon cannot make the directory, systemd can
    (RuntimeDirectory=). A directory elsewhere is granted with ReadWritePaths=."""
    unshare, mount = tool("unshare"), tool("mount")
    read_only_run = (unshare, "--mount", "--propagation", "private", "sh", "-c",
                     f'{mount} -t tmpfs -o ro tmpfs /run && exec "$@"', "sh")  # fmt: skip
    config = api_charger(tmp_path, Path("/run/ocpp-fw-agent/api.sock"))
    done = deep_check(config, read_only_run)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (
        "problem: [api] socket: /run/ocpp-fw-agent does not exist and cannot be made here "
        f"(read-only file system); grant it in {DROPIN}: RuntimeDirectory=ocpp-fw-agent\n"
    )

    elsewhere = tmp_path / "sockets"
    elsewhere.mkdir()
    config = api_charger(tmp_path / "other", elsewhere / "api.sock")
    read_only_dir = (unshare, "--mount", "--propagation", "private", "sh", "-c",
                     f"{mount} --bind {elsewhere} {elsewhere} && "
                     f'{mount} -o remount,bind,ro {elsewhere} && exec "$@"', "sh")  # fmt: skip
    done = deep_check(config, read_only_dir)
    assert done.stderr == (
        f"problem: [api] socket: {elsewhere} is not writable here (read-only file system); "
        f"grant it in {DROPIN}: ReadWritePaths={elsewhere}\n"
    )
