"""agent.toml validation: one test per class of mistake.

Each mistake is one line naming the file, the key and the problem (`ConfigError`), and
`python -m agent -c FILE check-config` exits 2 with exactly that line on stderr, no traceback
(issue 2, "Configuration"). A valid file prints the effective config with the AuthorizationKey
masked (OCPP-J 1.6 §6.2.2: the key is write-only).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from agent import config
from agent.config import ConfigError
from agent.demo import pki
from tests.unit.conftest import ConfigWriter

ROOT = Path(__file__).resolve().parents[2]
KEY_HEX = "00112233445566778899aabbccddeeff0a0b0c0d"  # 20 bytes, the maximum (A00.FR.205)
KEY_BYTES = bytes.fromhex(KEY_HEX)


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(path), "check-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_rejected(path: Path, *fragments: str) -> str:
    """The one-line message names the file and contains every fragment; the CLI agrees."""
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert KEY_HEX not in message.lower()  # never echo the secret
    proc = check_config(path)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    assert proc.stderr == f"ocpp-fw-agent: {message}\n"
    assert proc.stdout == ""
    return message


@pytest.fixture
def pem(tmp_path: Path) -> Callable[[str], str]:
    """A real PEM file: `key.pem` is the private key of every certificate made here (check-config
    loads them and checks that the key belongs to the client certificate)."""
    issued = pki.issue("Config Test", pki.ec_key("secp256r1", 7), ca=True)

    def make(name: str) -> str:
        path = tmp_path / name
        path.write_bytes(issued.key_pem if name == "key.pem" else issued.pem.encode())
        return str(path)

    return make


# --- structure ------------------------------------------------------------------------------


def test_unknown_section(write_config: ConfigWriter) -> None:
    path = write_config(extra='\n[csmss]\nurl = "ws://x"\n')
    assert_rejected(path, "unknown section [csmss]")


def test_unknown_key(write_config: ConfigWriter) -> None:
    path = write_config(csms={"hearbeat_interval": 60})
    assert_rejected(path, "[csms] hearbeat_interval", "unknown key")


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("csms", "security_profile", "2", "expected an integer 0-3"),
        ("csms", "security_profile", True, "expected an integer 0-3"),
        ("csms", "security_profile", 4, "expected an integer 0-3, got 4"),
        ("csms", "call_timeout", "30s", "expected a number of seconds"),
        ("csms", "heartbeat_interval", 1.5, "expected an integer"),
        ("identity", "vendor", 5, "expected a non-empty string"),
        ("identity", "model", "M" * 21, "at most 20 characters"),
        ("state", "dir", ["/var/lib"], "expected a non-empty string"),
        ("health", "require_system_running", "yes", "expected true or false"),
        ("firmware", "reboot_command", "systemctl reboot", "list of strings"),
        ("firmware", "allowed_hosts", "fw.example.com", "expected a list of host names"),
        ("firmware", "allowed_hosts", ["https://fw.example.com"], "is not a host name"),
        ("firmware", "allowed_hosts", ["*"], "is not a host name"),
        ("firmware", "allowed_hosts", ["fw.example.com:443"], "is not a host name"),
        ("firmware", "signing_key_pins", "ab" * 32, "expected a list of SHA-256 key digests"),
        ("firmware", "max_download_rate", "1M", "expected an integer"),
        ("firmware", "max_download_rate", -1, "expected an integer"),
        ("firmware", "signing_key_pins", ["ab" * 31], "is not a SHA-256 digest"),
        ("firmware", "signing_key_pins", ["zz" * 32], "is not a SHA-256 digest"),
        # The CSMS awaits the answer while the responder is asked: at most a minute.
        ("firmware", "online_timeout", 61, "expected a number of seconds 1-60"),
        ("firmware", "online_timeout", 0.5, "expected a number of seconds 1-60"),
    ],
)
def test_wrong_type_or_value(
    write_config: ConfigWriter, section: str, key: str, value: object, problem: str
) -> None:
    path = write_config(**{section: {key: value}})
    assert_rejected(path, f"[{section}] {key}", problem)


@pytest.mark.parametrize(
    ("section", "key"),
    [("csms", "url"), ("csms", "charge_point_id"), ("csms", "security_profile"),
     ("identity", "vendor"), ("identity", "model")],
)  # fmt: skip
def test_missing_required_key(write_config: ConfigWriter, section: str, key: str) -> None:
    path = write_config(drop=((section, key),))
    assert_rejected(path, f"[{section}] {key}", "missing")


def test_missing_required_section(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[identity]\nvendor = "V"\nmodel = "M"\n', encoding="utf-8")
    assert_rejected(path, "[csms] url", "missing")


# --- the file itself ------------------------------------------------------------------------


def test_config_file_that_does_not_exist(tmp_path: Path) -> None:
    assert_rejected(tmp_path / "nope.toml", "no such file")


def test_config_file_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "a-directory.toml"
    path.mkdir()  # unreadable as a file even for root
    assert_rejected(path, "cannot read")


@pytest.mark.parametrize(
    "content", [b'[csms\nurl = "ws://x"\n', b"url = \n", b'[identity]\nvendor = "\xff"\n']
)
def test_config_file_that_is_not_toml(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(content)
    assert_rejected(path, "not valid TOML")


def test_referenced_file_that_cannot_be_read(write_config: ConfigWriter, tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    path = write_config(
        csms={"url": "wss://csms.example/ocpp", "security_profile": 2, "authorization_key": KEY_HEX,
              "ca_file": str(missing)}
    )  # fmt: skip
    assert_rejected(path, "[csms] ca_file", f"cannot read {missing}", "No such file")


def test_key_file_that_is_a_directory(write_config: ConfigWriter, tmp_path: Path) -> None:
    path = write_config(csms={"security_profile": 1, "authorization_key_file": str(tmp_path)})
    assert_rejected(path, "[csms] authorization_key_file", "cannot read")


# --- security profile and credentials (OCPP 1.6 security white paper §2, reference §3.6) -----


@pytest.mark.parametrize(
    ("profile", "url", "problem"),
    [
        (0, "wss://csms.example/ocpp", "security profile 0 uses ws://, not wss://"),
        (1, "wss://csms.example/ocpp", "security profile 1 uses ws://, not wss://"),
        (2, "ws://csms.example/ocpp", "security profile 2 needs wss://, not ws://"),
        (3, "ws://csms.example/ocpp", "security profile 3 needs wss://, not ws://"),
        (0, "http://csms.example/ocpp", "scheme must be ws:// or wss://, got http"),
        (0, "csms.example/ocpp", "scheme must be ws:// or wss://, got none"),
    ],
)
def test_url_scheme_that_does_not_match_the_profile(
    write_config: ConfigWriter, pem: Callable[[str], str], profile: int, url: str, problem: str
) -> None:
    path = write_config(
        csms={"url": url, "security_profile": profile, "authorization_key": KEY_HEX,
              "ca_file": pem("ca.pem"), "client_cert": pem("c.pem"), "client_key": pem("k.pem")}
    )  # fmt: skip
    assert_rejected(path, "[csms] url", problem)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("00" * 15, "16-20 bytes once decoded, got 15"),
        ("00" * 21, "16-20 bytes once decoded, got 21"),
        ("zz" * 16, "must be hexadecimal"),
        ("0" * 33, "must be hexadecimal"),  # an odd number of digits
        (KEY_HEX + "0e", "16-20 bytes once decoded, got 21"),  # the message must not echo it
    ],
)
def test_authorization_key_of_wrong_length_or_not_hex(
    write_config: ConfigWriter, key: str, problem: str
) -> None:
    """AuthorizationKey: 16-20 bytes, hex-encoded (A00.FR.205, white paper §7.2)."""
    path = write_config(csms={"security_profile": 1, "authorization_key": key})
    message = assert_rejected(path, "[csms] authorization_key", problem)
    assert key not in message


def test_authorization_key_file_with_a_bad_key(write_config: ConfigWriter, tmp_path: Path) -> None:
    key_file = tmp_path / "authorization.key"
    key_file.write_text("00" * 8 + "\n", encoding="ascii")
    path = write_config(csms={"security_profile": 1, "authorization_key_file": str(key_file)})
    assert_rejected(path, "[csms] authorization_key_file", str(key_file), "got 8")


def test_authorization_key_and_key_file_both(write_config: ConfigWriter, tmp_path: Path) -> None:
    key_file = tmp_path / "authorization.key"
    key_file.write_text(KEY_HEX, encoding="ascii")
    path = write_config(
        csms={"security_profile": 1, "authorization_key": KEY_HEX,
              "authorization_key_file": str(key_file)}
    )  # fmt: skip
    assert_rejected(path, "[csms] authorization_key_file", "not both")


@pytest.mark.parametrize("profile", [1, 2])
def test_basic_auth_profile_without_a_key(
    write_config: ConfigWriter, pem: Callable[[str], str], profile: int
) -> None:
    scheme = "ws" if profile == 1 else "wss"
    path = write_config(
        csms={"url": f"{scheme}://csms.example/ocpp", "security_profile": profile,
              "ca_file": pem("ca.pem")}
    )  # fmt: skip
    assert_rejected(path, "[csms] authorization_key", f"security profile {profile} needs")


def test_basic_auth_identity_with_a_colon(write_config: ConfigWriter) -> None:
    """The Basic auth user-id cannot contain ':' (reference §3.6, A00.FR.303)."""
    path = write_config(
        csms={"security_profile": 1, "authorization_key": KEY_HEX, "charge_point_id": "CP:1"}
    )
    assert_rejected(path, "[csms] charge_point_id", "':'")


def test_profile_2_without_ca_file(write_config: ConfigWriter) -> None:
    path = write_config(
        csms={"url": "wss://csms.example/ocpp", "security_profile": 2, "authorization_key": KEY_HEX}
    )
    assert_rejected(path, "[csms] ca_file", "security profile 2 needs the CSMS root CA")


@pytest.mark.parametrize("missing", ["client_cert", "client_key"])
def test_profile_3_without_client_certificate(
    write_config: ConfigWriter, pem: Callable[[str], str], missing: str
) -> None:
    csms = {"url": "wss://csms.example/ocpp", "security_profile": 3, "ca_file": pem("ca.pem"),
            "client_cert": pem("cert.pem"), "client_key": pem("key.pem")}  # fmt: skip
    del csms[missing]
    path = write_config(csms=csms)
    assert_rejected(path, f"[csms] {missing}", "security profile 3 needs a client certificate")


def test_reconnect_bounds_that_cross(write_config: ConfigWriter) -> None:
    path = write_config(csms={"reconnect_min": 30, "reconnect_max": 10})
    assert_rejected(path, "[csms] reconnect_min", "must not exceed reconnect_max")


# --- valid files ----------------------------------------------------------------------------


def test_check_config_prints_the_effective_config_with_the_key_masked(
    write_config: ConfigWriter,
) -> None:
    path = write_config(csms={"security_profile": 1, "authorization_key": KEY_HEX.upper()})
    loaded = config.load(path)
    assert loaded.csms.authorization_key == KEY_BYTES
    assert KEY_HEX not in repr(loaded).lower()
    proc = check_config(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert KEY_HEX not in proc.stdout.lower()
    assert repr(KEY_BYTES)[2:-1] not in proc.stdout
    effective = json.loads(proc.stdout)
    assert effective["csms"]["authorization_key"] == config.MASK
    assert effective["csms"]["security_profile"] == 1
    assert effective["csms"]["call_timeout"] == 30.0  # defaults filled in
    assert effective["state"]["dir"] == str(path.parent / "state")


def test_a_key_file_is_read_decoded_and_masked(
    write_config: ConfigWriter, pem: Callable[[str], str], tmp_path: Path
) -> None:
    """Profile 2: the key comes from a file (trailing newline allowed); the header later uses
    the hex-DECODED bytes (OCTT TC_085_CS)."""
    key_file = tmp_path / "authorization.key"
    key_file.write_text(KEY_HEX + "\n", encoding="ascii")
    path = write_config(
        csms={"url": "wss://csms.example/ocpp", "security_profile": 2, "ca_file": pem("ca.pem"),
              "authorization_key_file": str(key_file)}
    )  # fmt: skip
    assert config.load(path).csms.authorization_key == KEY_BYTES
    proc = check_config(path)
    assert proc.returncode == 0, proc.stderr
    assert KEY_HEX not in proc.stdout.lower()
    assert json.loads(proc.stdout)["csms"]["authorization_key"] == config.MASK


def test_profile_3_with_certificates_is_valid(
    write_config: ConfigWriter, pem: Callable[[str], str]
) -> None:
    path = write_config(
        csms={"url": "wss://csms.example/ocpp", "security_profile": 3, "ca_file": pem("ca.pem"),
              "client_cert": pem("cert.pem"), "client_key": pem("key.pem")}
    )  # fmt: skip
    proc = check_config(path)
    assert proc.returncode == 0, proc.stderr
    effective = json.loads(proc.stdout)
    assert effective["csms"]["client_cert"].endswith("cert.pem")
    assert "authorization_key" not in effective["csms"]


def test_endpoint_appends_the_percent_encoded_identity(write_config: ConfigWriter) -> None:
    """OCPP-J 1.6 §3.1.1: URL + '/' + percent-encoded charge point identity."""
    path = write_config(csms={"url": "ws://csms.example/ocppj/", "charge_point_id": "RDAM 123/x"})
    assert config.load(path).csms.endpoint == "ws://csms.example/ocppj/RDAM%20123%2Fx"


# --- every mistake in one round (issue 12, stumble 5) ---------------------------------------


def test_check_config_lists_every_mistake_in_one_run(write_config: ConfigWriter) -> None:
    """Three mistakes in three sections: three lines, one run, exit 2 (fails before this
    change: the first mistake stopped the check)."""
    path = write_config(
        csms={"security_profile": 4, "hearbeat_interval": 60},
        identity={"model": "M" * 21},
        health={"deadline": -1},
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    expected = [
        f"{path}: [csms] security_profile: expected an integer 0-3, got 4",
        f"{path}: [csms] hearbeat_interval: unknown key",
        f"{path}: [identity] model: at most 20 characters (OCPP limit), got 21",
        f"{path}: [health] deadline: expected a number of seconds >= 1",
    ]
    assert caught.value.problems == expected
    proc = check_config(path)
    assert proc.returncode == 2
    assert proc.stderr == "".join(f"ocpp-fw-agent: {line}\n" for line in expected)
    assert proc.stdout == ""


def test_a_profile_mistake_is_listed_with_the_others(write_config: ConfigWriter) -> None:
    path = write_config(csms={"url": "wss://csms.example/ocpp", "heartbeat_interval": 0})
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.problems == [
        f"{path}: [csms] heartbeat_interval: expected an integer 1-86400, got 0",
        f"{path}: [csms] url: security profile 0 uses ws://, not wss://",
    ]


# --- slots must exist: nothing is created (issue 12) ----------------------------------------


def test_a_slot_that_does_not_exist_is_a_configuration_error(
    write_config: ConfigWriter, tmp_path: Path
) -> None:
    """A mistyped device is refused at start with one line naming the key, and no file appears
    in its place (fails before this change: the writer created it at the first update)."""
    real = tmp_path / "A.img"
    real.write_bytes(b"factory")
    typo = tmp_path / "dev" / "mmcblk0p3"
    typo.parent.mkdir()
    path = write_config(slots={"devices": {"A": str(real), "B": str(typo)}})
    message = assert_rejected(path, "[slots] devices")
    assert message == (
        f"{path}: [slots] devices: slot B: {typo} does not exist (give an existing partition "
        "or image file; nothing is created)"
    )
    assert not typo.exists()


def test_a_slot_that_is_a_directory_is_refused(write_config: ConfigWriter, tmp_path: Path) -> None:
    (tmp_path / "A.img").write_bytes(b"")
    path = write_config(slots={"devices": {"A": str(tmp_path / "A.img"), "B": str(tmp_path)}})
    assert_rejected(path, "[slots] devices", f"slot B: {tmp_path} is neither a block device")


def test_existing_regular_files_stay_allowed_as_slots(
    write_config: ConfigWriter, tmp_path: Path
) -> None:
    for name in ("A.img", "B.img"):
        (tmp_path / name).write_bytes(b"")
    devices = {"A": str(tmp_path / "A.img"), "B": str(tmp_path / "B.img")}
    assert config.load(write_config(slots={"devices": devices})).slots.devices["B"] == Path(
        devices["B"]
    )


# --- the files the configuration names load (issue 12, stumble 2) ---------------------------


def test_check_config_names_a_client_key_that_is_a_certificate(
    write_config: ConfigWriter, pem: Callable[[str], str]
) -> None:
    cert = pem("cert.pem")
    path = write_config(
        csms={"url": "wss://csms.example/ocpp", "security_profile": 3, "ca_file": pem("ca.pem"),
              "client_cert": cert, "client_key": cert}
    )  # fmt: skip
    proc = check_config(path)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"problem: [csms] client_key: {cert} is a certificate, not the private key of "
        "[csms] client_cert\n"
    )
    json.loads(proc.stdout)  # the effective configuration is still printed


def test_check_config_names_a_client_cert_whose_key_cannot_be_read(
    write_config: ConfigWriter, tmp_path: Path
) -> None:
    """A key algorithm cryptography does not know: named, not a traceback."""
    from tests.security import certfactory as make

    issued = pki.issue("Config Test RSA", pki.rsa_key(2048, 8))
    cert, key = tmp_path / "odd.pem", tmp_path / "odd.key"
    cert.write_text(make.as_pem(make.unknown_key_algorithm(issued.der)))
    key.write_bytes(issued.key_pem)
    path = write_config(
        csms={"url": "wss://csms.example/ocpp", "security_profile": 3, "ca_file": str(cert),
              "client_cert": str(cert), "client_key": str(key)}
    )  # fmt: skip
    proc = check_config(path)
    assert proc.returncode == 1
    assert f"problem: [csms] client_cert: the key of {cert} cannot be read (" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_names_a_client_key_of_an_unknown_algorithm(
    write_config: ConfigWriter, pem: Callable[[str], str], tmp_path: Path
) -> None:
    """PKCS#8 with an algorithm cryptography does not know (UnsupportedAlgorithm on current
    releases, ValueError on 38): named, not a traceback."""
    ec_key = pki.ec_key("secp256r1", 7).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    id_ec_public_key = bytes.fromhex("06072a8648ce3d0201")
    assert ec_key.count(id_ec_public_key) == 1
    odd = ec_key.replace(id_ec_public_key, id_ec_public_key[:-1] + b"\x63")
    key = tmp_path / "odd.key"
    body = base64.encodebytes(odd).decode("ascii")
    key.write_text(f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n")
    path = write_config(
        csms={"url": "wss://csms.example/ocpp", "security_profile": 3, "ca_file": pem("ca.pem"),
              "client_cert": pem("cert.pem"), "client_key": str(key)}
    )  # fmt: skip
    proc = check_config(path)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"problem: [csms] client_key: {key} is not a PEM private key, not the private key of "
        "[csms] client_cert\n"
    )


def test_check_config_names_an_expired_root_whose_subject_does_not_parse(
    write_config: ConfigWriter, tmp_path: Path
) -> None:
    """The expiry line names the root by its subject; one that does not parse (ValueError,
    KeyError on 38) is named so, not a traceback."""
    from tests.security import certfactory as make

    expired = pki.issue(
        "Old Root", pki.ec_key("secp256r1", 9), ca=True, not_after=pki.NOW - pki.DAY
    )
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "old.pem").write_text(make.garbled_subject(expired.der))
    proc = check_config(write_config(firmware={"manufacturer_roots": str(roots)}))
    assert proc.returncode == 1
    assert f"{roots / 'old.pem'}: root (subject does not parse) expired " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_online_timeout_reaches_the_certificate_policy(write_config: ConfigWriter) -> None:
    """`[firmware] online_timeout` bounds each CRL/OCSP exchange (default 5 s)."""
    from agent.firmware import certs

    default = config.load(write_config())
    assert certs.policy_from_config(default.firmware).online_timeout == 5.0
    slow_link = config.load(write_config(firmware={"online_timeout": 20}))
    assert certs.policy_from_config(slow_link.firmware).online_timeout == 20.0
