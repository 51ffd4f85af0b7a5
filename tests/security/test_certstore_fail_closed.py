"""The manufacturer roots fail closed (L01.FR.23/.24): when the certificate store cannot be
derived at start, `<state>/certs/manufacturer/` trusts nothing, so a root removed from
agent.toml is never trusted from a stale copy; every request is InvalidCertificate until the
store is derived again, and the self-check says so.

The write failure is the kernel's: the real CertStore runs in a child process whose file size
limit (RLIMIT_FSIZE) makes every write of a certificate fail with EFBIG, as a full disk would.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from agent.demo import pki
from agent.demo.csms import TestCsms
from agent.demo.rig import ChargerRig, Firmware
from agent.firmware import certs
from agent.firmware.clock import TrustedClock
from agent.firmware.errors import CertificateRejected
from agent.security import certstore
from agent.security.certstore import MANUFACTURER_ROOT, CertStore
from tests.security import certfactory as make

ROOT = Path(__file__).resolve().parents[2]
LOAD = """
import logging, sys
from pathlib import Path
from agent.security.certstore import CertStore, configured_stores
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
store = CertStore(Path(sys.argv[1]), configured_stores(None, Path(sys.argv[2])))
store.load()
print(getattr(store, "manufacturer_failure", None))
"""


def roots(n: int) -> list[pki.Issued]:
    return [pki.issue(f"Manufacturer Root {i}", pki.ec_key(n=100 + i), ca=True) for i in range(n)]


def signer(root: pki.Issued) -> pki.Issued:
    return pki.issue("Firmware Signing", pki.ec_key(n=200), root)


def write_roots(directory: Path, chosen: list[pki.Issued]) -> None:
    for old in directory.glob("*.pem"):
        old.unlink()
    for n, root in enumerate(chosen):
        (directory / f"root{n}.pem").write_text(root.pem)


def trusted(store_dir: Path) -> set[str]:
    """The roots the firmware check reads from the derived directory, by fingerprint."""
    return {certstore.fingerprint(c) for c in certs.load_roots(store_dir / "manufacturer").roots}


def load_with_file_size_limit(state: Path, configured: Path) -> subprocess.CompletedProcess[str]:
    def limit() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    return subprocess.run(
        [sys.executable, "-c", LOAD, str(state), str(configured)],
        cwd=ROOT,
        preexec_fn=limit,
        capture_output=True,
        text=True,
        check=True,
    )


def verdict(store_dir: Path, leaf: pki.Issued) -> str:
    """What the updater answers for a request signed under `leaf` (its certificate check)."""
    try:
        certs.check_signing_certificate(
            leaf.pem, certs.load_roots(store_dir / "manufacturer"), certs.CrlSet(()), TrustedClock()
        )
    except CertificateRejected as exc:
        return exc.status
    return "Accepted"


def test_a_root_removed_from_agent_toml_is_not_trusted_when_the_store_cannot_be_rewritten(
    tmp_path: Path,
) -> None:
    """L01.FR.24: agent.toml drops root 1 and adds root 2 while the state dir refuses writes:
    the derived directory trusts no root (before the fix it kept root 1's stale file), the
    failure is logged, and every signing certificate is InvalidCertificate; the next start
    with a working disk trusts exactly agent.toml's roots again."""
    r0, r1, r2 = roots(3)
    configured = tmp_path / "roots"
    configured.mkdir()
    state = tmp_path / "state" / "certs"
    write_roots(configured, [r0, r1])
    CertStore(state, certstore.configured_stores(None, configured)).load()
    assert trusted(state) == {certstore.fingerprint(r0.cert), certstore.fingerprint(r1.cert)}
    assert verdict(state, signer(r1)) == "Accepted"

    (state / "manufacturer" / "dropped-in.crt").write_text(r1.pem)  # not the store's file
    CertStore(state, certstore.configured_stores(None, configured)).load()
    assert trusted(state) == {certstore.fingerprint(r0.cert), certstore.fingerprint(r1.cert)}
    assert sorted(p.suffix for p in (state / "manufacturer").iterdir()) == [".pem", ".pem"]

    write_roots(configured, [r0, r2])  # root 1 is withdrawn
    done = load_with_file_size_limit(state, configured)
    assert trusted(state) == set(), "a stale manufacturer root is still trusted"
    assert done.stdout.strip().startswith("cannot write"), done.stderr
    assert "failing closed" in done.stderr
    for root in (r0, r1, r2):
        assert verdict(state, signer(root)) == "InvalidCertificate"
    assert not list(state.glob(f"{certstore.STALE_PREFIX}*")), "the stale copy is removed"

    problems = certstore.manufacturer_problems(state, certstore.configured_stores(None, configured))
    assert len(problems) == 1 and "lacks 2 of the 2 manufacturer root(s)" in problems[0]
    assert "InvalidCertificate" in problems[0]

    again = CertStore(state, certstore.configured_stores(None, configured))
    again.load()
    assert again.manufacturer_failure is None
    assert trusted(state) == {certstore.fingerprint(r0.cert), certstore.fingerprint(r2.cert)}
    assert verdict(state, signer(r2)) == "Accepted"
    assert (
        certstore.manufacturer_problems(state, certstore.configured_stores(None, configured)) == []
    )


def test_a_root_added_to_agent_toml_before_the_restart_is_not_a_failure(tmp_path: Path) -> None:
    """`check-config` after agent.toml gained a manufacturer root, before the agent restarts
    (issue 12's integrator flow, the system test): the derived directory lacks it, but the
    agent did not fail closed, so the check names no problem; the next start derives it."""
    r0, r1 = roots(2)
    configured = tmp_path / "roots"
    configured.mkdir()
    state = tmp_path / "state" / "certs"
    write_roots(configured, [r0])
    CertStore(state, certstore.configured_stores(None, configured)).load()
    write_roots(configured, [r0, r1])
    stores = certstore.configured_stores(None, configured)
    assert certstore.manufacturer_problems(state, stores) == []
    CertStore(state, certstore.configured_stores(None, configured)).load()
    assert trusted(state) == {certstore.fingerprint(r0.cert), certstore.fingerprint(r1.cert)}


@pytest.mark.parametrize(
    "entry",
    [
        {
            "store": MANUFACTURER_ROOT,
            "pem": "-----BEGIN CERTIFICATE-----\ngarbage",
            "origin": "installed",
        },
        {"store": MANUFACTURER_ROOT, "pem": "x", "origin": "installed", "extra": 1},
        {"store": "NoSuchStore", "origin": "installed", "pem": "x"},
        {
            "store": MANUFACTURER_ROOT,
            "pem": make.as_pem(make.beyond_v3(roots(1)[0].der)),
            "origin": "installed",
        },
    ],
    ids=["pem-garbage", "unknown-field", "unknown-store", "version-beyond-v3"],
)
def test_a_torn_index_entry_fails_closed_instead_of_stopping_the_daemon(
    tmp_path: Path, entry: dict[str, object]
) -> None:
    """An index entry that does not parse: the store trusts nothing (it cannot tell which
    roots were deleted) and says why, rather than the start failing with a traceback."""
    (r0,) = roots(1)
    configured = tmp_path / "roots"
    configured.mkdir()
    write_roots(configured, [r0])
    state = tmp_path / "certs"
    CertStore(state, certstore.configured_stores(None, configured)).load()
    assert trusted(state) == {certstore.fingerprint(r0.cert)}
    document = json.loads((state / "index.json").read_text())
    document["entries"].append(entry)
    (state / "index.json").write_text(json.dumps(document))

    store = CertStore(state, certstore.configured_stores(None, configured))
    store.load()
    assert store.manufacturer_failure is not None
    assert "cannot work out the trusted roots" in store.manufacturer_failure
    assert trusted(state) == set()
    assert verdict(state, signer(r0)) == "InvalidCertificate"
    (problem,) = certstore.manufacturer_problems(
        state, certstore.configured_stores(None, configured)
    )
    assert "cannot work out the manufacturer roots" in problem


def test_the_daemon_fails_closed_answers_invalid_certificate_and_says_why(
    tmp_path: Path, csms: TestCsms, run_agent: Any
) -> None:
    """The real daemon on a state dir whose certificate index has a torn entry: it starts,
    logs 'failing closed', answers a request signed under agent.toml's own root
    InvalidCertificate (L01.FR.24) with the InvalidFirmwareSigningCertificate event
    (L01.FR.02), and `ocpp-fw-agent status` names the problem."""
    rig = ChargerRig(tmp_path, csms.url, charge_point_id="CP-TEST-1")
    certs_dir = rig.state / "certs"
    certs_dir.mkdir()
    torn = {
        "store": MANUFACTURER_ROOT,
        "pem": "-----BEGIN CERTIFICATE-----\nx",
        "origin": "installed",
    }
    (certs_dir / "index.json").write_text(json.dumps({"version": 1, "entries": [torn]}))
    stale = certs_dir / "manufacturer"
    stale.mkdir()
    (stale / "withdrawn.pem").write_text(rig.root.pem)  # a copy the store does not list
    agent = run_agent(rig.config())
    csms.wait_message("BootNotification")
    agent.wait_log("failing closed")
    assert trusted(certs_dir) == set()

    firmware = Firmware("http://127.0.0.1:9/fw.bin", b"x", rig.sign(b"x"))
    reply = csms.call(rig.charge_point_id, call.SignedUpdateFirmware(**rig.request(firmware, 5)))
    assert reply.status == "InvalidCertificate"
    csms.wait_for(
        lambda: any(
            m.payload["type"] == "InvalidFirmwareSigningCertificate"
            for m in csms.messages("SecurityEventNotification")
        ),
        what="InvalidFirmwareSigningCertificate",
    )

    status = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(rig.base / "agent.toml"), "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        "problem:      certificate store: cannot work out the manufacturer roots" in status.stdout
    )
