"""The certificate policy end to end: the real daemon, the real CSMS (issue 11).

Every class the policy refuses is answered `InvalidCertificate` (or `RevokedCertificate`) in
the SignedUpdateFirmware.conf, with SecurityEventNotification InvalidFirmwareSigningCertificate
naming the reason (L01.FR.23/.24/.25/.02, CP-REQ-2..6), and nothing starts: no status, no
download. `crl_policy` and `allowed_ec_curves` from agent.toml reach the daemon's checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agent.demo import pki
from agent.demo.rig import ChargerRig, Firmware
from tests.e2e import conftest as e2e
from tests.security import certfactory as make

# The e2e fixtures, used as they are (a module attribute that is a fixture is collected).
rig, charger, firmware, fileserver = e2e.rig, e2e.charger, e2e.firmware, e2e.fileserver

SIGNER_KEY = (2048, 101)  # the rig's signing key: only the certificate around it changes
STALE = pki.NOW - 3 * pki.DAY


def _key() -> pki.PrivateKey:
    return pki.rsa_key(*SIGNER_KEY)


def _weak_root(rig: ChargerRig) -> str:
    """An RSA-1024 root installed beside the good one; the signer is its."""
    weak = pki.issue("Weak Manufacturer Root", pki.rsa_key(1024, 150), ca=True)
    (rig.base / "roots" / "weak.pem").write_text(weak.pem)
    return pki.issue("Firmware Signing", _key(), weak).pem


def _crl(next_update: Any) -> Callable[[ChargerRig], dict[str, Any]]:
    def write(rig: ChargerRig) -> dict[str, Any]:
        folder = rig.base / "crl"
        folder.mkdir()
        if next_update is not None:
            (folder / "root.crl").write_bytes(make.crl(rig.root, (), next_update=next_update))
        return {"crl_dir": str(folder)}

    return write


def _none(rig: ChargerRig) -> dict[str, Any]:
    return {}


# name: (signing certificate, extra [firmware] settings, reason in the techInfo)
CASES: dict[str, tuple[Callable[[ChargerRig], str | None], Callable, str]] = {
    "MD5": (lambda rig: make.weak_hash("md5", rig.root, _key()).pem, _none, "signed with MD5"),
    "SHA-1": (lambda rig: make.weak_hash("sha1", rig.root, _key()).pem, _none, "with SHA1"),
    "serverAuth only": (
        lambda rig: make.server_auth_only(rig.root, _key()).pem,
        _none,
        "does not include codeSigning",
    ),
    "CA leaf": (lambda rig: make.ca_leaf(rig.root, _key()).pem, _none, "is a CA (CA:TRUE)"),
    "RSA-1024 root": (_weak_root, _none, "not an installed manufacturer root"),
    "secp256k1": (
        lambda rig: pki.issue("Firmware Signing", make.secp256k1_key(), rig.root).pem,
        _none,
        "EC curve secp256k1 (256 bits) not allowed",
    ),
    "garbled issuer name": (
        lambda rig: make.garbled_issuer(rig.signer),
        _none,
        "signing certificate does not parse",
    ),
    "stale CRL": (lambda rig: None, _crl(STALE), "is stale since"),
    "missing CRL": (lambda rig: None, _crl(None), "no CRL from CN=Example Manufacturer Root"),
}


@pytest.mark.parametrize("case", CASES)
def test_the_policy_refuses_before_anything_starts(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware, fileserver: Any, case: str
) -> None:
    make_cert, settings, reason = CASES[case]
    certificate = make_cert(rig)
    agent = charger.start(firmware=settings(rig))
    extra = {} if certificate is None else {"certificate": certificate}
    assert charger.update(firmware, 3, **extra) == "InvalidCertificate"
    event = charger.wait_event("InvalidFirmwareSigningCertificate")
    assert reason in event["tech_info"]
    e2e_nothing_started(charger)
    assert fileserver.requests == []
    if case == "RSA-1024 root":
        agent.wait_log("refusing manufacturer root")
        assert charger.update(firmware, 4, **extra) == "InvalidCertificate"  # read again
        agent.wait_log("request 4: ")  # logged after the roots were read for it
        lines = [s for s in agent.log.splitlines() if "refusing manufacturer root" in s]
        assert len(lines) == 1, lines  # one line, not one per request
        assert "weak.pem" in lines[0] and "RSA key of 1024 bits" in lines[0]


def e2e_nothing_started(charger: e2e.Charger) -> None:
    """CP-REQ-6: no status; the trigger still answers Idle."""
    assert charger.trigger() == {"status": "Idle"}
    assert charger.csms.statuses() == [("Idle", None)]
    assert not charger.job()


def test_a_stale_crl_listing_the_signer_answers_revoked(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware, fileserver: Any
) -> None:
    """Listed is revoked whatever the CRL's age and crl_policy (L01.FR.25)."""
    folder = rig.base / "crl"
    folder.mkdir()
    serial = rig.signer.cert.serial_number
    (folder / "root.crl").write_bytes(make.crl(rig.root, (serial,), next_update=STALE))
    charger.start(firmware={"crl_dir": str(folder), "crl_policy": "ignore"})
    assert charger.update(firmware, 4) == "RevokedCertificate"
    assert "revoked" in charger.wait_event("InvalidFirmwareSigningCertificate")["tech_info"]
    assert fileserver.requests == []


def test_crl_policy_warn_accepts_a_stale_crl_and_says_so(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware
) -> None:
    """The configured crl_policy reaches the daemon: warn accepts, logs, and the published
    status shows what the check found."""
    agent = charger.start(firmware=_crl(STALE)(rig) | {"crl_policy": "warn"})
    assert charger.update(firmware, 5) == "Accepted"
    charger.wait_status("SignatureVerified")
    agent.wait_log("revocation cannot be checked")
    assert "crl_policy = warn" in agent.log

    def published() -> str:
        status = rig.state / "status.json"
        return status.read_text() if status.exists() else ""

    e2e.wait_until(lambda: "crl_policy = warn" in published(), 30, "the status to show it")


def test_allowed_ec_curves_reaches_the_daemon(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware
) -> None:
    """With secp256k1 allowed, its certificate passes the check (the image's signature is
    the rig's RSA key's, so the update then stops at the signature: InvalidSignature)."""
    k1 = pki.issue("Firmware Signing", make.secp256k1_key(), rig.root).pem
    charger.start(firmware={"allowed_ec_curves": ["secp256r1", "secp256k1"]})
    assert charger.update(firmware, 6, certificate=k1) == "Accepted"
    charger.wait_status("InvalidSignature")


def test_a_current_crl_and_good_extensions_pass(
    charger: e2e.Charger, rig: ChargerRig, firmware: Firmware
) -> None:
    """The good counterparts: codeSigning in the extendedKeyUsage, a current CRL."""
    good = make.code_signing(rig.root, _key()).pem
    charger.start(firmware=_crl(pki.NOW + 30 * pki.DAY)(rig))
    assert charger.update(firmware, 7, certificate=good) == "Accepted"
    charger.wait_status("SignatureVerified")
    assert charger.events() == []
