"""The deep self-check: can the daemon, where it runs, do an update from start to finish?

`slots` run from a shell sees the board as root sees it; the daemon runs in the unit's sandbox,
where nothing is writable until a drop-in grants it. So every check here is made by trying
(opening for writing, writing nothing), and a sandbox denial (EROFS, EACCES, EPERM) is reported
with the drop-in line that fixes it. Nothing is created: a missing slot stays missing.

`problems(config, backend)` is what the daemon runs at start-up and for each request (a
request is then Rejected with the first line as the reason); `check-config --deep` prints it.
Each finding is one line that names what to fix.
"""

from __future__ import annotations

import datetime
import errno
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from agent.api.server import SocketError, resolve_group, someone_listens
from agent.config import Config
from agent.firmware import certpolicy, certs
from agent.firmware.certpolicy import CertPolicy
from agent.security import certstore
from agent.slots.base import BackendError, BootBackend

DENIED: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
UBOOT_LOCK: Final = Path("/var/lock/fw_printenv.lock")  # libubootenv's flock file
GUIDE: Final = "see docs/integrator-guide.md#manufacturer-pki"


def problems(config: Config, backend: BootBackend) -> list[str]:
    """Every problem that would make an update fail here, one line each; [] when none."""
    inner = getattr(backend, "inner", backend)  # SerializedBackend wraps the real one
    found = file_problems(config)
    if config.firmware.manufacturer_roots is None:
        found.append(
            "[firmware] manufacturer_roots is not set: every SignedUpdateFirmware would be "
            f"answered InvalidCertificate ({GUIDE})"
        )
    try:
        backend_problems = backend.self_check()
    except BackendError as exc:
        backend_problems = [str(exc)]
    found += backend_problems
    if inner.slots:
        found += slot_problems(inner.slots, _booted(backend))
        found += env_problems(inner)
    found += _dir_problems("state dir", config.state_dir)
    found += certstore_problems(config)
    return _unique(found)


def certstore_problems(config: Config) -> list[str]:
    """The manufacturer roots the daemon derived into its state dir are the ones its store and
    agent.toml give (a derive that failed leaves none: every update is InvalidCertificate)."""
    return certstore.manufacturer_problems(
        config.state_dir / "certs",
        certstore.configured_stores(config.csms.ca_file, config.firmware.manufacturer_roots),
        certs.policy_from_config(config.firmware),
    )


# --- slots -----------------------------------------------------------------------------------


def slot_problems(slots: Mapping[str, Path], booted: str | None) -> list[str]:
    """Each slot exists, is a block device or an existing regular file, can be opened for
    writing, and (all but the booted one) is not mounted."""
    out = []
    for name, path in slots.items():
        problem = _slot_problem(name, path, exclusive=name != booted)
        if problem:
            out.append(problem)
    return out


def _slot_problem(name: str, path: Path, *, exclusive: bool) -> str | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"slot {name}: {path} does not exist (fix [slots] devices; nothing is created)"
    except OSError as exc:
        return f"slot {name}: cannot inspect {path}: {exc.strerror}"
    block = stat.S_ISBLK(info.st_mode)
    if not (block or stat.S_ISREG(info.st_mode)):
        return f"slot {name}: {path} is neither a block device nor a regular file"
    mount_point = _mount_point(info.st_rdev) if block and exclusive else None
    if mount_point is not None:
        return (
            f"slot {name}: {path} is mounted on {mount_point}; the agent never writes a mounted "
            "slot (unmount it, or fix [slots] devices if it is the running system)"
        )
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except OSError as exc:
        return _denied(f"slot {name}", path, exc, device=block)
    return None


def _mount_point(rdev: int) -> str | None:
    """Where the block device `rdev` is mounted, from /proc/self/mountinfo (not O_EXCL: the
    update's own writer holds the slot that way while a new request is checked)."""
    wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[2] == wanted:
            return fields[4]
    return None


def _booted(backend: BootBackend) -> str | None:
    try:
        return backend.observe().booted or None
    except BackendError:
        return None


# --- the boot environment --------------------------------------------------------------------


def env_problems(backend: Any) -> list[str]:
    """The files the backend writes to switch slots can be written here (opened for writing,
    nothing written), with the drop-in line when the sandbox says no."""
    probes = _ENV_PROBES.get(backend.name)
    if probes is None:
        return []
    out = []
    for what, path, kind in probes(backend):
        problem = _file_probe(what, path) if kind == "file" else _dir_probe(what, path)
        if problem:
            out.append(problem)
    return out


Probe = tuple[str, Path, str]  # what, path, "file" (written in place) or "dir" (replaced in it)


def _uboot_probes(backend: Any) -> list[Probe]:
    try:
        entries = backend._config_entries()
    except OSError:
        return []  # self_check reports the unreadable fw_env.config
    out: list[Probe] = [("boot environment", Path(fields[0]), "file") for fields in entries]
    for fields in entries:
        device = Path(fields[0])
        if device.name.startswith("mmcblk") and "boot" in device.name:
            force_ro = Path("/sys/class/block") / device.name / "force_ro"
            out.append(("boot environment write switch", force_ro, "file"))
    lock = UBOOT_LOCK if UBOOT_LOCK.exists() else UBOOT_LOCK.parent
    out.append(("libubootenv lock", lock, "file" if lock == UBOOT_LOCK else "dir"))
    return out


def _grub_probes(backend: Any) -> list[Probe]:
    return [("boot environment", Path(backend.envfile), "file")]


def _tryboot_probes(backend: Any) -> list[Probe]:
    image = backend.opts.get("fat_image")
    if image is not None:
        return [("boot partition image", Path(image), "file")]
    return [("autoboot.txt directory", Path(backend.opts["autoboot_txt"]).parent, "dir")]


def _file_backend_probes(backend: Any) -> list[Probe]:
    return [("boot environment directory", Path(backend.env_path).parent, "dir")]


_ENV_PROBES: Final[Mapping[str, Callable[[Any], list[Probe]]]] = {
    "uboot": _uboot_probes,
    "grub": _grub_probes,
    "rpi-tryboot": _tryboot_probes,
    "file": _file_backend_probes,
}


def _file_probe(what: str, path: Path) -> str | None:
    """Open an existing file (or device) for writing and close it: no byte is written."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except FileNotFoundError:
        return None  # the backend's self_check names a missing env
    except OSError as exc:
        return _denied(what, path, exc, device=_is_block(path))
    return None


def _dir_probe(what: str, path: Path) -> str | None:
    """A directory where files are replaced atomically must take a new file."""
    if not path.is_dir():
        return None
    if os.access(path, os.W_OK):
        return None
    reason = "read-only file system" if _read_only(path) else "permission denied"
    return _hint(what, path, reason, device=False)


def _dir_problems(what: str, path: Path) -> list[str]:
    if not path.exists():
        return []  # systemd's StateDirectory= or the daemon creates it
    problem = _dir_probe(what, path)
    return [problem] if problem else []


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _is_block(path: Path) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _denied(what: str, path: Path, exc: OSError, *, device: bool) -> str:
    reason = (exc.strerror or str(exc)).lower()
    if exc.errno in DENIED:
        return _hint(what, path, reason, device=device)
    return f"{what}: cannot open {path} for writing: {reason}"


def _hint(what: str, path: Path, reason: str, *, device: bool) -> str:
    grant = f"DeviceAllow={path} rw" if device else f"ReadWritePaths={path}"
    return (
        f"{what}: {path} is not writable here ({reason}); grant it in the unit's drop-in "
        f"(systemctl edit ocpp-fw-agent): {grant}"
    )


# --- the local API's socket ([csms] mode = "api") ---------------------------------------------

DROPIN_EXAMPLE: Final = "/usr/share/doc/ocpp-fw-agent/examples/api-mode.conf"
CAP_CHOWN: Final = 0  # capability number (linux/capability.h)


def api_problems(config: Config) -> list[str]:
    """In API mode, what would stop the daemon from making its socket here: the directory, the
    group, handing the socket to the group, a file left at the path. Not part of `problems()`:
    the daemon's own per-request check would otherwise connect to its own socket."""
    if config.csms.mode != "api":
        return []
    path, group = config.api.socket, config.api.group
    out = _socket_dir_problems(path.parent)
    try:
        gid = resolve_group(group)
    except SocketError:
        out.append(
            f"[api] group: there is no group {group} here; create it (addgroup --system {group}; "
            "the package makes ocpp-fw) or give a numeric gid"
        )
    else:
        out += _handover_problems(group, gid)
    out += _stale_socket_problems(path)
    return out


def _socket_dir_problems(directory: Path) -> list[str]:
    """The daemon makes the socket in `directory` (creating it if missing): it must be
    writable, or its nearest existing parent must be."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == directory and not directory.is_dir():
        return [f"[api] socket: {directory} is not a directory; fix [api] socket"]
    if os.access(existing, os.W_OK):
        return []
    reason = "read-only file system" if _read_only(existing) else "permission denied"
    state = "is not writable" if existing == directory else "does not exist and cannot be made"
    return [
        f"[api] socket: {directory} {state} here ({reason}); grant it in the unit's drop-in "
        f"(systemctl edit ocpp-fw-agent, as in {DROPIN_EXAMPLE}): {_dir_grant(directory)}"
    ]


def _dir_grant(directory: Path) -> str:
    """systemd makes (and removes) a directory under /run for the unit; elsewhere it must exist
    and be granted."""
    if directory.is_relative_to("/run") and directory != Path("/run"):
        return f"RuntimeDirectory={directory.relative_to('/run')}"
    return f"ReadWritePaths={directory}"


def _handover_problems(group: str, gid: int) -> list[str]:
    """The socket is made root's and then given to the group (chown): without CAP_CHOWN that
    needs membership, and the system call filter must let chown through."""
    out = []
    member = gid == os.getegid() or gid in os.getgroups()
    if not member and not _has_capability(CAP_CHOWN):
        out.append(
            f"[api] group: the daemon is not a member of {group} and has no CAP_CHOWN, so it "
            "cannot give the socket to the group; add to the unit's drop-in (systemctl edit "
            f"ocpp-fw-agent, as in {DROPIN_EXAMPLE}): SupplementaryGroups={group}"
        )
    if not _chown_allowed():
        out.append(
            "[api] group: the system call filter refuses chown, so the daemon cannot give the "
            "socket to the group; add to the unit's drop-in (systemctl edit ocpp-fw-agent, as "
            f"in {DROPIN_EXAMPLE}): SystemCallFilter=@chown"
        )
    return out


def _has_capability(number: int) -> bool:
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return os.geteuid() == 0
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> number & 1)
    return os.geteuid() == 0


def _chown_allowed() -> bool:
    """Try a chown that changes nothing, on a pipe (no file system, nothing written): only a
    seccomp filter refuses it."""
    read_end, write_end = os.pipe()
    try:
        os.fchown(read_end, -1, -1)
    except PermissionError:
        return False
    finally:
        os.close(read_end)
        os.close(write_end)
    return True


def _stale_socket_problems(path: Path) -> list[str]:
    try:
        info = os.lstat(path)
    except OSError:
        return []
    if not stat.S_ISSOCK(info.st_mode):
        return [
            f"[api] socket: {path} exists and is not a socket; the daemon would replace it: "
            "move it away or fix [api] socket"
        ]
    if someone_listens(path):
        return []
    return [
        f"[api] socket: {path} is left from an agent that is not running (nobody listens); "
        f"the charger's stack gets 'connection refused' there: remove it (rm {path}) or start "
        "the agent (systemctl restart ocpp-fw-agent), which replaces it"
    ]


# --- certificates and keys -------------------------------------------------------------------


def file_problems(config: Config) -> list[str]:
    """The manufacturer roots, CRLs, CA bundles and keys named in the configuration load and
    are usable: what check-config checks without touching the board."""
    out = []
    roots = config.firmware.manufacturer_roots
    if roots is not None:
        out += roots_problems(roots, certs.policy_from_config(config.firmware))
    if config.firmware.crl_dir is not None:
        crls = certs.load_crls(config.firmware.crl_dir)
        out += [f"[firmware] crl_dir: {p}" for p in crls.problems]
    for key, path in (("[csms] ca_file", config.csms.ca_file),
                      ("[csms] client_cert", config.csms.client_cert),
                      ("[firmware] ca_file", config.firmware.ca_file)):  # fmt: skip
        if path is not None:
            out += _pem_certificates(key, path)
    if config.csms.client_key is not None:
        out += _private_key(config.csms.client_key, config.csms.client_cert)
    return out


def roots_problems(path: Path, policy: CertPolicy = certs.DEFAULT_POLICY) -> list[str]:
    """At least one usable root certificate; each file that is not one is named."""
    key = "[firmware] manufacturer_roots"
    files = certs._files(path, certs.CERT_SUFFIXES) if path.exists() else []
    out = []
    usable = 0
    now = datetime.datetime.now(datetime.UTC)
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            out.append(f"{key}: cannot read {file}: {exc.strerror}")
            continue
        if b"PRIVATE KEY-----" in data:
            out.append(
                f"{key}: {file} holds a private key, not a certificate: install the root's "
                f"certificate and keep its key off the charger ({GUIDE})"
            )
            continue
        try:
            found = certs.parse_certificates(data)
        except ValueError as exc:
            out.append(f"{key}: {file} is not a certificate ({exc})")
            continue
        for cert in found:
            if _not_after(cert) < now:
                try:
                    name = certs.describe_name(cert.subject)
                except certpolicy.UNREADABLE:
                    name = "(subject does not parse)"
                out.append(f"{key}: {file}: root {name} expired {_not_after(cert):%Y-%m-%d}")
            else:
                usable += 1
    # What the certificate policy refuses (a root that is not a CA, a weak key), once per file
    # not already named above.
    named = list(out)
    store = certs.load_roots(path, policy)
    for problem in store.problems:
        if not any(problem.startswith(f"{file}:") and str(file) in line
                   for file in files for line in named):  # fmt: skip
            out.append(f"{key}: {problem}")
    if not (usable and store.roots) and not out:
        ignored = _ignored(path)
        out.append(
            f"{key}: {path} holds no certificate, so every SignedUpdateFirmware would be "
            f"answered InvalidCertificate{ignored} ({GUIDE})"
        )
    return out


def _ignored(path: Path) -> str:
    if not path.is_dir():
        return ""
    names = sorted(p.name for p in path.iterdir() if p.suffix.lower() not in certs.CERT_SUFFIXES)
    if not names:
        return ""
    shown = ", ".join(names[:5])
    return f"; ignored {shown} (only {', '.join(certs.CERT_SUFFIXES)} files are read)"


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:  # cryptography < 42
        return cert.not_valid_after.replace(tzinfo=datetime.UTC)
    return value  # type: ignore[no-any-return]


def _pem_certificates(key: str, path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [f"{key}: cannot read {path}: {exc.strerror}"]
    if b"PRIVATE KEY-----" in data:
        return [f"{key}: {path} holds a private key, not a certificate"]
    try:
        certs.parse_certificates(data)
    except ValueError as exc:
        return [f"{key}: {path} is not a PEM certificate ({exc})"]
    return []


def _private_key(path: Path, cert_path: Path | None) -> list[str]:
    key = "[csms] client_key"
    try:
        data = path.read_bytes()
        private = serialization.load_pem_private_key(data, password=None)
    except OSError as exc:
        return [f"{key}: cannot read {path}: {exc.strerror}"]
    except TypeError:
        return [f"{key}: {path} is encrypted; the daemon needs it without a passphrase"]
    except (ValueError, UnsupportedAlgorithm):  # a key algorithm cryptography does not know
        what = "a certificate" if b"CERTIFICATE-----" in data else "not a PEM private key"
        return [f"{key}: {path} is {what}, not the private key of [csms] client_cert"]
    if cert_path is None:
        return []
    try:
        cert = certs.parse_certificates(cert_path.read_bytes())[0]
    except (OSError, ValueError):
        return []  # reported for client_cert
    mine = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        theirs = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except certpolicy.UNREADABLE as exc:  # a key algorithm cryptography does not know
        return [f"[csms] client_cert: the key of {cert_path} cannot be read ({exc})"]
    if mine != theirs:
        return [f"{key}: {path} is not the key of the certificate {cert_path}"]
    return []


def _unique(lines: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(lines))


# --- running the check inside the unit's own sandbox -----------------------------------------

UNIT: Final = "ocpp-fw-agent.service"
# What decides what the daemon can open, copied from the installed unit (with its drop-ins).
# Namespace and address family restrictions are left out: they refuse calls, not paths, and
# `systemctl show` prints them in forms a `-p` does not read back as the same setting. The
# system call filter is copied (printed as the resolved allow list, read back as such): API
# mode's chown of the socket depends on it. The supplementary groups and the runtime directory
# decide whether API mode's socket can be made and given to its group.
# StateDirectoryMode is copied so the transient unit leaves the state dir's mode as it is.
SANDBOX_PROPERTIES: Final = (
    "User", "Group", "UMask", "NoNewPrivileges", "CapabilityBoundingSet", "AmbientCapabilities",
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateMounts", "PrivateIPC",
    "PrivateDevices", "DevicePolicy", "DeviceAllow", "ReadWritePaths", "ReadOnlyPaths",
    "InaccessiblePaths", "StateDirectory", "StateDirectoryMode", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
    "ProtectHostname", "ProtectProc", "RestrictSUIDSGID", "LockPersonality",
    "SupplementaryGroups", "RuntimeDirectory", "RuntimeDirectoryMode",
    "SystemCallFilter", "SystemCallErrorNumber", "SystemCallArchitectures",
)  # fmt: skip
# How `systemctl show` prints a setting that is not set, where that is not empty (and would not
# be read back): no filter, and the default action (kill).
NOT_SET: Final = {"SystemCallFilter": "~", "SystemCallErrorNumber": "2147483646"}
# The transient unit shares the unit's runtime directory (API mode's socket lives there); it
# must not remove it when it ends, under a running daemon.
TRANSIENT_ONLY: Final = ("RuntimeDirectoryPreserve=yes",)
EMPTY_MEANS_NONE: Final = frozenset({"CapabilityBoundingSet", "AmbientCapabilities"})


def unit_installed() -> bool:
    """systemd runs this machine and knows the unit: the check can run in its sandbox."""
    if not Path("/run/systemd/system").is_dir() or os.geteuid() != 0:
        return False
    try:
        done = subprocess.run(
            ["systemctl", "show", "-p", "LoadState", "--value", UNIT],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == "loaded"


def unit_properties() -> list[str]:
    """The unit's sandbox as `systemd-run -p` assignments, read with `systemctl show`."""
    argv = ["systemctl", "show", UNIT]
    for name in SANDBOX_PROPERTIES:
        argv += ["-p", name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    out = []
    for line in done.stdout.splitlines():
        name, sep, value = line.partition("=")
        if NOT_SET.get(name) == value:
            continue
        if sep and name in SANDBOX_PROPERTIES and (value or name in EMPTY_MEANS_NONE):
            out.append(f"{name}={value}")
    return out


def in_unit_sandbox(cli_args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `ocpp-fw-agent <cli_args>` as a transient service with the unit's sandbox and
    return what it printed (`systemd-run --wait --pipe`)."""
    argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect"]
    for assignment in [*unit_properties(), *TRANSIENT_ONLY]:
        argv += ["-p", assignment]
    program = Path(sys.argv[0])
    if program.name == "ocpp-fw-agent" and program.is_absolute() and os.access(program, os.X_OK):
        argv += [str(program)]
    else:  # from a source tree: the interpreter and the package's directory
        package_root = Path(__file__).resolve().parents[2]
        argv += ["-p", f"Environment=PYTHONPATH={package_root}", sys.executable, "-m", "agent"]
    return subprocess.run(
        [*argv, *cli_args], capture_output=True, text=True, timeout=300, check=False
    )
