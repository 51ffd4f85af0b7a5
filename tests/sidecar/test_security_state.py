"""The state behind the connection's keys and the CA stores (agent/security), on real files:
what survives a restart, what a power cut between two writes leaves, what a failed write
answers, and when agent.toml wins over what the CSMS set."""

from __future__ import annotations

import json
from pathlib import Path

from agent.config import CsmsConfig
from agent.demo import pki
from agent.ocpp.v16 import CertificateStatus, ConfigurationStatus, DeleteCertificateStatus
from agent.security import certstore, credentials
from agent.security.certstore import CSMS_ROOT, MANUFACTURER_ROOT, CertStore, hash_data
from agent.security.credentials import ConnectionSettings
from tests.security import certfactory as make

KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
ROOT = pki.issue("Unit Root", pki.ec_key("secp256r1", 500), ca=True)
OTHER = pki.issue("Unit Other Root", pki.ec_key("secp256r1", 501), ca=True)


def store(tmp_path: Path, manufacturer: Path | None = None) -> CertStore:
    made = CertStore(
        tmp_path / "certs",
        {CSMS_ROOT: None, MANUFACTURER_ROOT: manufacturer},
        csms_manages_manufacturer_roots=True,
    )
    made.load()
    return made


def test_a_power_cut_between_the_index_and_its_files_is_repaired_at_start(tmp_path: Path) -> None:
    """index.json is the truth; the TLS bundle and the roots directory follow it at start."""
    first = store(tmp_path)
    assert first.install(CSMS_ROOT, ROOT.pem)[0] is CertificateStatus.ACCEPTED
    assert first.install(MANUFACTURER_ROOT, OTHER.pem)[0] is CertificateStatus.ACCEPTED
    first.csms_bundle.write_text("")  # as if the power went before the derived files
    for path in first.manufacturer_dir.iterdir():
        path.unlink()
    second = store(tmp_path)
    assert second.csms_bundle.read_text() == ROOT.pem
    assert [p.read_text() for p in second.manufacturer_dir.iterdir()] == [OTHER.pem]


def test_a_write_that_fails_answers_failed_and_changes_nothing(tmp_path: Path) -> None:
    """M05.FR.04 / M04.FR.03: a real failed rename (the index's name taken by a directory)."""
    made = store(tmp_path)
    assert made.install(CSMS_ROOT, ROOT.pem)[0] is CertificateStatus.ACCEPTED
    index = tmp_path / "certs" / "index.json"
    saved = index.read_text()
    index.unlink()
    (index / "blocker").mkdir(parents=True)
    assert made.install(CSMS_ROOT, OTHER.pem)[0] is CertificateStatus.FAILED
    status, _ = made.delete(hash_data(ROOT.cert), lambda root, left: False)
    assert status is DeleteCertificateStatus.FAILED
    assert made.certificates(CSMS_ROOT) == [ROOT.cert]
    assert made.csms_bundle.read_text() == ROOT.pem
    (index / "blocker").rmdir()
    index.rmdir()
    index.write_text(saved)


def test_a_configured_root_deleted_stays_deleted_a_new_one_comes_in(tmp_path: Path) -> None:
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "a.pem").write_text(ROOT.pem)
    made = store(tmp_path, roots)
    assert made.certificates(MANUFACTURER_ROOT) == [ROOT.cert]
    wanted = hash_data(ROOT.cert, "SHA384")  # M04.FR.07: the CSMS's algorithm is used
    wanted["serialNumber"] = "00" + wanted["serialNumber"].lower()
    assert made.delete(wanted, lambda root, left: False)[0] is DeleteCertificateStatus.ACCEPTED
    (roots / "b.pem").write_text(OTHER.pem)
    again = store(tmp_path, roots)
    assert again.certificates(MANUFACTURER_ROOT) == [OTHER.cert]
    assert json.loads((tmp_path / "certs" / "index.json").read_text())["removed"]


def settings(tmp_path: Path, bundle: Path | None, **csms: object) -> ConnectionSettings:
    values: dict[str, object] = {
        "url": "ws://127.0.0.1:9/ocpp",
        "charge_point_id": "CP-UNIT-1",
        "security_profile": 1,
        "authorization_key": KEY,
    }
    values.update(csms)
    return ConnectionSettings(
        CsmsConfig(**values),  # type: ignore[arg-type]
        tmp_path,
        csms_roots=lambda: bundle,
        client_certificate=lambda: None,
        tls_url="wss://localhost:9443/ocpp",
    )


def test_a_raised_profile_falls_back_after_its_attempts_and_stays_back(tmp_path: Path) -> None:
    """A05.FR.08, counted in connection attempts; the fallback is saved."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(ROOT.pem)
    made = settings(tmp_path, bundle)
    assert made.raise_profile("2")[0] is ConfigurationStatus.ACCEPTED
    tried = [made.current() for _ in range(credentials.TRIAL_ATTEMPTS)]
    assert {(c.security_profile, c.url, c.ca_file) for c in tried} == {
        (2, "wss://localhost:9443/ocpp", bundle)
    }
    assert made.current().security_profile == 1
    assert settings(tmp_path, bundle).current().security_profile == 1


def test_a_raised_profile_that_connects_holds_across_a_restart(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(ROOT.pem)
    made = settings(tmp_path, bundle)
    assert made.raise_profile("2")[0] is ConfigurationStatus.ACCEPTED
    assert made.current().security_profile == 2
    made.connected()
    again = settings(tmp_path, bundle)
    assert [again.current().security_profile for _ in range(5)] == [2] * 5


def test_agent_toml_wins_when_its_profile_or_key_changed(tmp_path: Path) -> None:
    """A00.FR.005: lowering is not done over OCPP; an integrator edits agent.toml, and then
    the values the CSMS set give way."""
    made = settings(tmp_path, None)
    new_key = "F0E1D2C3B4A5968778695A4B3C2D1E0F00FFEE11"
    assert made.set_authorization_key(new_key)[0] is ConfigurationStatus.ACCEPTED
    assert settings(tmp_path, None).current().authorization_key == bytes.fromhex(new_key)
    edited = settings(tmp_path, None, authorization_key=bytes(16))
    assert edited.current().authorization_key == bytes(16)


def test_a_certificate_beyond_v3_is_refused_not_raised(tmp_path: Path) -> None:
    """cryptography's InvalidVersion is no ValueError: a charge point certificate and the
    CSMS's server certificate whose version field says v4 count as ones that do not parse,
    instead of raising out of ChangeConfiguration or DeleteCertificate."""
    bad = make.beyond_v3(ROOT.der)
    assert certstore.issued(bad, ROOT.cert) is False
    assert certstore.issued(ROOT.der, ROOT.cert) is True
    bundle, cert, key = tmp_path / "bundle.pem", tmp_path / "cp.pem", tmp_path / "cp.key"
    bundle.write_text(ROOT.pem)
    cert.write_text(make.as_pem(bad))
    key.write_text("a key")
    made = settings(tmp_path, bundle, client_cert=cert, client_key=key)
    assert made.raise_profile("3") == (
        ConfigurationStatus.REJECTED,
        "SecurityProfile 3 needs a valid charge point certificate",
    )
    cert.write_text(ROOT.pem)
    assert made.raise_profile("3")[0] is ConfigurationStatus.ACCEPTED
