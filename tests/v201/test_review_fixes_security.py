"""Review fixes in the 2.x security ownership code, on real files (a tmp state dir, a real
CertStore): what the connection trusts, what a failed store load protects, what a failed
security-event write must not undo, when Reset is answered Accepted, and the bounds on what a
network profile may hold."""

from __future__ import annotations

import json
from pathlib import Path

from agent.config import CsmsConfig
from agent.demo import pki
from agent.ocpp.v16 import CertificateStatus, DeleteCertificateStatus
from agent.security.certstore import CSMS_ROOT, MANUFACTURER_ROOT, CertStore, hash_data
from agent.security.credentials import ConnectionSettings
from agent.security.handlers2x import public_info

KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
ROOT = pki.issue("Review Root", pki.ec_key("secp256r1", 600), ca=True)
OTHER = pki.issue("Review Other Root", pki.ec_key("secp256r1", 601), ca=True)


def settings(state: Path, roots: list[Path | None], **csms: object) -> ConnectionSettings:
    """Profile 1 over ws://; `roots[0]` is the CSMS roots bundle the store holds (or None)."""
    values: dict[str, object] = {
        "url": "ws://127.0.0.1:9/ocpp",
        "charge_point_id": "CP-REVIEW-1",
        "security_profile": 1,
        "authorization_key": KEY,
    }
    values.update(csms)
    return ConnectionSettings(
        CsmsConfig(**values),  # type: ignore[arg-type]
        state,
        csms_roots=lambda: roots[0],
        client_certificate=lambda: None,
    )


def test_a_network_profile_url_trusts_the_csms_roots_the_csms_installed(tmp_path: Path) -> None:
    """A05.FR.03 / B10: profile 1 without ca_file, a CSMSRootCertificate installed, a wss://
    network profile applied: the TLS connection verifies with the installed roots."""
    bundle = tmp_path / "csms-roots.pem"
    bundle.write_text(ROOT.pem)
    made = settings(tmp_path, [bundle])
    assert made.switch(2, "wss://csms.example:8443/ocpp", 30)[0]
    now = made.current()
    assert (now.url, now.security_profile, now.ca_file) == (
        "wss://csms.example:8443/ocpp",
        2,
        bundle,
    )


def test_a_network_profile_url_prefers_the_installed_roots_over_ca_file(tmp_path: Path) -> None:
    """A configured root the CSMS replaced is not trusted over a network profile's URL."""
    configured = tmp_path / "configured.pem"
    configured.write_text(OTHER.pem)
    bundle = tmp_path / "csms-roots.pem"
    bundle.write_text(ROOT.pem)
    made = settings(tmp_path, [bundle], ca_file=configured)
    assert made.switch(2, "wss://csms.example:8443/ocpp", None)[0]
    assert made.current().ca_file == bundle


def test_a_store_that_failed_to_load_changes_nothing(tmp_path: Path) -> None:
    """M05/M04: after a load that failed (an index entry it cannot use), InstallCertificate
    and DeleteCertificate answer Failed (InternalError) and index.json, with its `removed`
    list, and the TLS bundle stay as they were; a good load takes changes again."""
    directory = tmp_path / "certs"
    first = CertStore(directory, {CSMS_ROOT: None, MANUFACTURER_ROOT: None})
    first.load()
    assert first.install(CSMS_ROOT, ROOT.pem)[0] is CertificateStatus.ACCEPTED
    index = directory / "index.json"
    good = json.loads(index.read_text())
    broken = {**good, "removed": ["aa" * 32]}
    broken["entries"] = [*good["entries"], {**good["entries"][0], "store": "Nonsense"}]
    index.write_text(json.dumps(broken))
    bundle = first.csms_bundle.read_text()

    again = CertStore(directory, {CSMS_ROOT: None, MANUFACTURER_ROOT: None})
    again.load()
    status, why = again.install(CSMS_ROOT, OTHER.pem)
    assert status is CertificateStatus.FAILED
    assert public_info(why).reason_code == "InternalError"
    status, why = again.delete(hash_data(ROOT.cert), lambda root, left: False)
    assert status is DeleteCertificateStatus.FAILED
    assert public_info(why).reason_code == "InternalError"
    assert json.loads(index.read_text()) == broken
    assert again.csms_bundle.read_text() == bundle

    index.write_text(json.dumps(good))
    again.load()
    assert again.install(CSMS_ROOT, OTHER.pem)[0] is CertificateStatus.ACCEPTED
    assert again.certificates(CSMS_ROOT) == [ROOT.cert, OTHER.cert]
