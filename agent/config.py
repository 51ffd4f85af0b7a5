"""agent.toml → frozen dataclasses, with every default and every check in one place.

A mistake in the file is reported as one line naming the file, the key and the problem
(`ConfigError`); the CLI turns it into exit status 2 without a traceback. Secrets (the
AuthorizationKey) are kept out of `repr()` and masked by `effective()`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.firmware.certpolicy import CRL_POLICIES, CRL_REFUSE, DEFAULT_EC_CURVES, KNOWN_EC_CURVES
from agent.slots.pair import DEFAULT_STATE_DIR, pair_problem

DEFAULT_PATH = Path("/etc/ocpp-fw-agent/agent.toml")
# Tells a daemon restart from a reboot: the kernel makes a new one at every boot.
DEFAULT_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
SIGNATURE_ALGORITHMS = ("rsa-pss", "rsa-pkcs1v15", "ecdsa")
DOWNLOAD_SCHEMES = ("https", "http", "ftp", "ftps")
# The websocket subprotocol offered: ocpp1.6, ocpp2.0.1 or ocpp2.1.
OCPP_VERSIONS = ("1.6", "2.0.1", "2.1")
MASK = "********"


class ConfigError(Exception):
    """Every mistake found, one line each: `<file>: [section] key: problem`.

    All of them at once, so an integrator fixes a file in one round, not one per mistake.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclasses.dataclass(frozen=True)
class CsmsConfig:
    url: str
    charge_point_id: str
    security_profile: int
    authorization_key: bytes | None = dataclasses.field(default=None, repr=False)
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    call_timeout: float = 30.0
    heartbeat_interval: int = 300
    reconnect_min: float = 1.0
    reconnect_max: float = 300.0
    ping_interval: float = 60.0
    ocpp_version: str = "1.6"
    mode: str = "direct"  # "direct": the agent is the OCPP client; "sidecar": see agent/sidecar;
    # "api": no websocket, the charger's stack delegates through the local API (agent/api)
    # Bounds on what the CSMS can make the charger hold (issue 11); the defaults are measured
    # margins, the ranges (LIMITS) refuse values that would break OCPP or the memory cap.
    max_message_bytes: int = 64 * 1024
    max_handshake_bytes: int = 16 * 1024
    max_pending_messages: int = 8
    outbox_max_entries: int = 500
    outbox_max_bytes: int = 256 * 1024
    # The wss:// URL for profiles 2 and 3 once the CSMS raises the profile from 0 or 1 over
    # OCPP (A05); default: `url` with wss://. See agent/security/credentials.py.
    tls_url: str | None = None

    @property
    def endpoint(self) -> str:
        """The connection URL: the CSMS URL + '/' + the percent-encoded identity (OCPP-J §3.1.1)."""
        return self.url.rstrip("/") + "/" + urllib.parse.quote(self.charge_point_id, safe="")


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    vendor: str
    model: str
    serial_number: str | None = None
    charge_box_serial_number: str | None = None
    firmware_version: str | None = None
    firmware_version_file: Path | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial_number: str | None = None

    def current_firmware_version(self) -> str | None:
        """The running slot's version, read from the file each time: each slot reports its own."""
        if self.firmware_version_file is not None:
            try:
                return self.firmware_version_file.read_text(encoding="utf-8").strip()[:50] or None
            except OSError:
                return self.firmware_version
        return self.firmware_version


@dataclasses.dataclass(frozen=True)
class FirmwareConfig:
    manufacturer_roots: Path | None = None
    crl_dir: Path | None = None
    crl_policy: str = CRL_REFUSE
    allowed_ec_curves: tuple[str, ...] = DEFAULT_EC_CURVES
    online_crl: bool = False
    # InstallCertificate/DeleteCertificate of ManufacturerRootCertificate by the CSMS (M03-M05):
    # off, because a root the CSMS installs could sign firmware (README "Certificates").
    csms_manages_manufacturer_roots: bool = False
    online_ocsp: bool = False
    ocsp_responder: str | None = None
    # Seconds for each online exchange (a CRL, an OCSP answer); the CSMS awaits the answer.
    online_timeout: float = 5.0
    signature_algorithms: tuple[str, ...] = SIGNATURE_ALGORITHMS
    default_retries: int = 3
    default_retry_interval: int = 60
    connect_timeout: float = 30.0
    stall_timeout: float = 60.0
    ca_file: Path | None = None
    allowed_schemes: tuple[str, ...] = DOWNLOAD_SCHEMES
    allowed_hosts: tuple[str, ...] = ()
    max_download_rate: int = 0
    signing_key_pins: tuple[str, ...] = ()
    image_check: tuple[str, ...] = ()
    install_gate: tuple[str, ...] = ()
    gate_poll_interval: float = 30.0
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    checkpoint_bytes: int = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class SlotsConfig:
    backend: str = "file"
    devices: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    deadline: float = 600.0
    commands: tuple[tuple[str, ...], ...] = ()
    require_system_running: bool = False
    max_transitions: int = 32


@dataclasses.dataclass(frozen=True)
class SidecarConfig:
    """`[csms] mode = "sidecar"`: where the charger's own OCPP stack connects to the agent."""

    listen: str = "127.0.0.1:8180"
    update_firmware: str = "refuse"  # legacy UpdateFirmware: "refuse" (NotSupported) or "forward"

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    """`[csms] mode = "api"`: the local socket through which the charger's stack delegates."""

    socket: Path = Path("/run/ocpp-fw-agent/api.sock")
    group: str = "ocpp-fw"  # a group name or a numeric gid: the socket's group, who may connect
    max_clients: int = 4
    response_timeout: float = 5.0  # how long events wait for response_sent after start_update


@dataclasses.dataclass(frozen=True)
class StationConfig:
    """Direct 2.x mode: the charger's connectors the agent reports availability for, and the
    integrator's command that blocks new sessions while an update waits (see README)."""

    connectors: tuple[tuple[int, int], ...] = ((1, 1),)  # (evseId, connectorId)
    session_block: tuple[str, ...] = ()  # run with "block" or "allow" appended


@dataclasses.dataclass(frozen=True)
class Config:
    source: Path
    csms: CsmsConfig
    identity: IdentityConfig
    state_dir: Path
    boot_id_file: Path
    firmware: FirmwareConfig
    slots: SlotsConfig
    health: HealthConfig
    sidecar: SidecarConfig = SidecarConfig()
    api: ApiConfig = ApiConfig()
    station: StationConfig = StationConfig()

    def effective(self) -> dict[str, Any]:
        """The configuration as loaded, defaults filled in, secrets masked (for check-config)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            return value

        out: dict[str, Any] = {}
        for section in (
            "csms",
            "identity",
            "firmware",
            "slots",
            "health",
            "sidecar",
            "api",
            "station",
        ):
            values = dataclasses.asdict(getattr(self, section))
            out[section] = {k: plain(v) for k, v in values.items() if v is not None}
        if self.csms.authorization_key is not None:
            out["csms"]["authorization_key"] = MASK
        out["state"] = {"dir": str(self.state_dir), "boot_id_file": str(self.boot_id_file)}
        return out


# --- field checkers: each returns the converted value or raises ValueError("problem") ---------


def _string(max_len: int | None = None) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError("expected a non-empty string")
        if max_len is not None and len(value) > max_len:
            raise ValueError(f"at most {max_len} characters (OCPP limit), got {len(value)}")
        return value

    return check


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected an integer {low}-{high}")
        if not low <= value <= high:
            raise ValueError(f"expected an integer {low}-{high}, got {value}")
        return value

    return check


def _seconds(low: float = 0.0) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or value < low:
            raise ValueError(f"expected a number of seconds >= {low:g}")
        return float(value)

    return check


def _seconds_between(low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not low <= value <= high:
            raise ValueError(f"expected a number of seconds {low:g}-{high:g}")
        return float(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _readable_file(value: Any) -> Path:
    path = Path(_string()(value))
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


def _existing_path(value: Any) -> Path:
    path = Path(_string()(value))
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    return path


def _path(value: Any) -> Path:
    return Path(_string()(value))


def _argv(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError('expected a command as a list of strings, e.g. ["systemctl", "reboot"]')
    return tuple(value)


def _argv_list(value: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of commands (each a list of strings)")
    return tuple(_argv(v) for v in value)


def _choices(allowed: tuple[str, ...]) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise ValueError(f"expected a non-empty list drawn from {list(allowed)}")
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ValueError(f"unknown value(s) {bad}; allowed: {list(allowed)}")
        return tuple(value)

    return check


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    return check


_HOST_PATTERN = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$"
)


def _hosts(value: Any) -> tuple[str, ...]:
    """Host names, IP addresses or `*.domain` patterns; an empty list allows every host."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('expected a list of host names, e.g. ["fw.example.com", "*.cdn.example"]')
    hosts = tuple(v.strip().lower() for v in value)
    for host in hosts:
        if not (_HOST_PATTERN.match(host) or _is_ip(host)):
            raise ValueError(f"{host!r} is not a host name, an IP address or *.domain")
    return hosts


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _http_url(value: Any) -> str:
    """An http(s) URL with a host (an OCSP responder: its answers are signed, http is usual)."""
    text = _string()(value)
    try:
        parts = urllib.parse.urlsplit(text)
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {text!r}")
    return text


def key_pins(value: Any) -> tuple[str, ...]:
    """SHA-256 digests (hex, colons allowed) of SubjectPublicKeyInfo structures, normalised
    to lower-case hex as `certs.key_pin` gives them (also for `ocpp-fw-agent verify --pin`)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of SHA-256 key digests in hex")
    pins = tuple(v.replace(":", "").strip().lower() for v in value)
    for pin in pins:
        if not re.fullmatch(r"[0-9a-f]{64}", pin):
            raise ValueError(f"{pin[:70]!r} is not a SHA-256 digest (64 hex digits)")
    return pins


def _hex_key(value: Any) -> bytes:
    text = _string()(value).strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError("AuthorizationKey must be hexadecimal") from None
    if not 16 <= len(key) <= 20:
        raise ValueError(f"AuthorizationKey must be 16-20 bytes once decoded, got {len(key)}")
    return key


def _devices(value: Any) -> dict[str, Path]:
    """Two slots, each an existing block device or regular file. A missing path is refused
    here rather than created later: a mistyped /dev/mmcblk0p2 must never become a file."""
    problem = pair_problem(value) if isinstance(value, dict) else "expected exactly two slots"
    if problem:
        raise ValueError(f'{problem}, e.g. {{ A = "/dev/mmcblk0p2", B = "..." }}')
    devices = {str(name): _path(path) for name, path in value.items()}
    problems = [p for p in (_slot_kind(name, path) for name, path in devices.items()) if p]
    if problems:
        raise ValueError("; ".join(problems))
    return devices


def _slot_kind(name: str, path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return (
            f"slot {name}: {path} does not exist (give an existing partition or image file; "
            "nothing is created)"
        )
    except OSError as exc:
        return f"slot {name}: cannot inspect {path}: {exc.strerror}"
    if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
        return f"slot {name}: {path} is neither a block device nor a regular file"
    return None


def _listen(value: Any) -> str:
    """host:port to listen on; an IP literal, so nothing is resolved at start."""
    if not isinstance(value, str):
        raise ValueError('expected "host:port"')
    host, _, port = value.rpartition(":")
    if not host or not _is_ip(host.strip("[]")):
        raise ValueError(f"expected an IP address before the port, got {host!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected a port 1-65535, got {port!r}")
    return value


def _group(value: Any) -> str:
    """A group name or a numeric gid (resolved when the socket is made)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
        return str(value)
    if not isinstance(value, str) or not re.fullmatch(
        r"[A-Za-z_][A-Za-z0-9_.-]{0,31}|\d{1,10}", value
    ):
        raise ValueError("expected a group name or a numeric gid")
    return value


def _wss_url(value: Any) -> str:
    url = _string()(value)
    if urllib.parse.urlsplit(url).scheme != "wss":
        raise ValueError(f"expected a wss:// URL, got {url[:80]!r}")
    return url


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a table")
    return dict(value)


def _connectors(value: Any) -> tuple[tuple[int, int], ...]:
    """[[evseId, connectorId], ...]: positive, distinct, at most 64 (a station, not a fleet)."""
    if not isinstance(value, list) or not 1 <= len(value) <= 64:
        raise ValueError("expected 1 to 64 [evseId, connectorId] pairs")
    pairs = []
    for pair in value:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(type(n) is int and 1 <= n <= 1000 for n in pair)
        ):
            raise ValueError(f"{pair!r}: expected [evseId, connectorId], each 1..1000")
        pairs.append((pair[0], pair[1]))
    if len(set(pairs)) != len(pairs):
        raise ValueError("a connector is listed twice")
    return tuple(pairs)


Checker = Callable[[Any], Any]

# [csms] bounds: (lowest, highest). A CSMS message under 8 KiB would refuse a legitimate
# SignedUpdateFirmware (~7 KB with a 5500-character certificate); a handshake answer under
# 4 KiB one behind a load balancer's cookies; past the highs, pending messages x message size
# or the outbox held in memory would approach the unit's MemoryMax=256M.
LIMITS: dict[str, tuple[int, int]] = {
    "max_message_bytes": (8 * 1024, 1024 * 1024),
    "max_handshake_bytes": (4 * 1024, 64 * 1024),
    "max_pending_messages": (1, 64),
    "outbox_max_entries": (10, 100_000),
    "outbox_max_bytes": (16 * 1024, 16 * 1024 * 1024),
}

SECTIONS: dict[str, dict[str, Checker]] = {
    "csms": {
        "url": _string(),
        "charge_point_id": _string(48),
        "security_profile": _integer(0, 3),
        "authorization_key": _hex_key,
        "authorization_key_file": _readable_file,
        "ca_file": _readable_file,
        "client_cert": _readable_file,
        "client_key": _readable_file,
        "call_timeout": _seconds(1),
        "heartbeat_interval": _integer(1, 86400),
        "reconnect_min": _seconds(0.1),
        "reconnect_max": _seconds(1),
        "ping_interval": _seconds(0),
        "ocpp_version": _one_of(OCPP_VERSIONS),
        "mode": _one_of(("direct", "sidecar", "api")),
        **{key: _integer(low, high) for key, (low, high) in LIMITS.items()},
        "tls_url": _wss_url,
    },
    "identity": {
        "vendor": _string(20),
        "model": _string(20),
        "serial_number": _string(25),
        "charge_box_serial_number": _string(25),
        "firmware_version": _string(50),
        "firmware_version_file": _path,
        "iccid": _string(20),
        "imsi": _string(20),
        "meter_type": _string(25),
        "meter_serial_number": _string(25),
    },
    "state": {"dir": _path, "boot_id_file": _path},
    "firmware": {
        "manufacturer_roots": _existing_path,
        "crl_dir": _existing_path,
        "crl_policy": _one_of(CRL_POLICIES),
        "allowed_ec_curves": _choices(KNOWN_EC_CURVES),
        "online_crl": _boolean,
        "csms_manages_manufacturer_roots": _boolean,
        "online_ocsp": _boolean,
        "ocsp_responder": _http_url,
        "online_timeout": _seconds_between(1, 60),
        "signature_algorithms": _choices(SIGNATURE_ALGORITHMS),
        "default_retries": _integer(0, 100),
        "default_retry_interval": _integer(0, 86400),
        "connect_timeout": _seconds(1),
        "stall_timeout": _seconds(1),
        "ca_file": _readable_file,
        "allowed_schemes": _choices(DOWNLOAD_SCHEMES),
        "allowed_hosts": _hosts,
        "max_download_rate": _integer(0, 1 << 40),
        "signing_key_pins": key_pins,
        "image_check": _argv,
        "install_gate": _argv,
        "gate_poll_interval": _seconds(0.1),
        "reboot_command": _argv,
        "checkpoint_bytes": _integer(64 * 1024, 1 << 30),
    },
    "slots": {"backend": _string(), "devices": _devices, "options": _table},
    "health": {
        "deadline": _seconds(1),
        "commands": _argv_list,
        "require_system_running": _boolean,
        "max_transitions": _integer(4, 1000),
    },
    "sidecar": {"listen": _listen, "update_firmware": _one_of(("refuse", "forward"))},
    "api": {
        "socket": _path,
        "group": _group,
        "max_clients": _integer(1, 64),
        "response_timeout": _seconds(0.1),
    },
    "station": {"connectors": _connectors, "session_block": _argv},
}
REQUIRED = {"csms": ("url", "charge_point_id", "security_profile"), "identity": ("vendor", "model")}


def load(path: Path = DEFAULT_PATH) -> Config:
    """Read and validate `path`; raise ConfigError with a one-line message on any mistake."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(raw, Path(path))


def parse(raw: Mapping[str, Any], source: Path) -> Config:
    """Validate an already-parsed TOML document (the unit of the config tests).

    Every mistake is collected; one ConfigError lists them all.
    """
    problems: list[str] = []

    def note(section: str, key: str | None, problem: str) -> None:
        where = f"[{section}] {key}" if key else f"[{section}]"
        problems.append(f"{source}: {where}: {problem}")

    values: dict[str, dict[str, Any]] = {}
    bad_keys: set[tuple[str, str]] = set()
    for section, table in raw.items():
        if section not in SECTIONS:
            problems.append(f"{source}: unknown section [{section}]")
            continue
        if not isinstance(table, dict):
            note(section, None, "expected a table")
            continue
        checked: dict[str, Any] = {}
        for key, value in table.items():
            checker = SECTIONS[section].get(key)
            if checker is None:
                note(section, key, "unknown key")
                continue
            try:
                checked[key] = checker(value)
            except ValueError as exc:
                note(section, key, str(exc))
                bad_keys.add((section, key))
        values[section] = checked
    for section, keys in REQUIRED.items():
        given = raw.get(section)
        if section == "csms" and isinstance(given, dict) and given.get("mode") == "api":
            keys = ()  # the charger's stack holds the CSMS connection; the agent opens none
        if not isinstance(given, dict):
            if section not in raw:
                note(section, ", ".join(keys), "missing (required section)")
            continue
        for key in keys:
            if key not in given:
                note(section, key, "missing (required)")

    csms = dict(values.get("csms", {}))
    key_file = csms.pop("authorization_key_file", None)
    if key_file is not None:
        if "authorization_key" in csms:
            note("csms", "authorization_key_file", "give the key or the key file, not both")
        else:
            try:
                csms["authorization_key"] = _hex_key(key_file.read_text(encoding="ascii"))
            except (ValueError, UnicodeDecodeError, OSError) as exc:
                note("csms", "authorization_key_file", f"{key_file}: {exc}")
                bad_keys.add(("csms", "authorization_key_file"))
    if all(k in csms for k in REQUIRED["csms"]):
        for key, problem in _profile_problems(csms):
            if ("csms", key) not in bad_keys and ("csms", f"{key}_file") not in bad_keys:
                note("csms", key, problem)
        if csms.get("reconnect_min", 1.0) > csms.get("reconnect_max", 300.0):
            note("csms", "reconnect_min", "must not exceed reconnect_max")
    if problems:
        raise ConfigError(*problems)

    state = values.get("state", {})
    if csms.get("mode") == "api":
        csms = {"url": "", "charge_point_id": "", "security_profile": 0, **csms}
    return Config(
        source=source,
        csms=CsmsConfig(**csms),
        identity=IdentityConfig(**values["identity"]),
        state_dir=state.get("dir", DEFAULT_STATE_DIR),
        boot_id_file=state.get("boot_id_file", DEFAULT_BOOT_ID_FILE),
        firmware=FirmwareConfig(**values.get("firmware", {})),
        slots=SlotsConfig(**values.get("slots", {})),
        health=HealthConfig(**values.get("health", {})),
        sidecar=SidecarConfig(**values.get("sidecar", {})),
        api=ApiConfig(**values.get("api", {})),
        station=StationConfig(**values.get("station", {})),
    )


def csms_url_problem(url: str, profile: int) -> str | None:
    """Why a CSMS URL does not fit security profile `profile` (agent.toml's `url`, and a 2.x
    network profile's `ocppCsmsUrl`), or None."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("ws", "wss"):
        return f"scheme must be ws:// or wss://, got {scheme or 'none'}"
    if profile in (0, 1) and scheme != "ws":
        return f"security profile {profile} uses ws://, not {scheme}://"
    if profile in (2, 3) and scheme != "wss":
        return f"security profile {profile} needs wss://, not {scheme}://"
    return None


def _profile_problems(csms: dict[str, Any]) -> list[tuple[str, str]]:
    """The URL scheme and credentials must match the security profile (OCPP 1.6 security §2).

    (key, problem) pairs, every one found."""
    profile = csms["security_profile"]
    out: list[tuple[str, str]] = []
    problem = csms_url_problem(csms["url"], profile)
    if problem is not None:
        out.append(("url", problem))
    if profile in (1, 2) and "authorization_key" not in csms:
        out.append(("authorization_key", f"security profile {profile} needs an AuthorizationKey"))
    if profile in (1, 2) and ":" in csms["charge_point_id"]:
        out.append(("charge_point_id", "must not contain ':' with HTTP Basic authentication"))
    if profile in (2, 3) and "ca_file" not in csms:
        out.append(("ca_file", f"security profile {profile} needs the CSMS root CA bundle"))
    if profile == 3:
        for key in ("client_cert", "client_key"):
            if key not in csms:
                out.append((key, "security profile 3 needs a client certificate and key"))
    return out
