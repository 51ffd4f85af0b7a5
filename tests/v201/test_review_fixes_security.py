"""Review fixes in the 2.x security ownership code, on real files (a tmp state dir, a real
CertStore): what the connection trusts, what a failed store load protects, what a failed
security-event write must not undo, when Reset is answered Accepted, and the bounds on what a
network profile may hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import CsmsConfig
from agent.demo import pki
from agent.durable import StateWriteError
from agent.firmware.reporting import Reporter
from agent.ocpp import v16, v201
from agent.ocpp.outbox import Outbox
from agent.ocpp.v16 import CertificateStatus, DeleteCertificateStatus
from agent.security.certstore import CSMS_ROOT, MANUFACTURER_ROOT, CertStore, hash_data
from agent.security.cpcert import ChargePointCertificate
from agent.security.credentials import ConnectionSettings
from agent.security.handlers import SecurityHandlers
from agent.security.handlers2x import public_info
from agent.security.profile2x import PASSWORD, SECURITY, NetworkProfiles, Profile2x

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
    deleted, why = again.delete(hash_data(ROOT.cert), lambda root, left: False)
    assert deleted is DeleteCertificateStatus.FAILED
    assert public_info(why).reason_code == "InternalError"
    assert json.loads(index.read_text()) == broken
    assert again.csms_bundle.read_text() == bundle

    index.write_text(json.dumps(good))
    again.load()
    assert again.install(CSMS_ROOT, OTHER.pem)[0] is CertificateStatus.ACCEPTED
    assert again.certificates(CSMS_ROOT) == [ROOT.cert, OTHER.cert]


def network_profile(
    slot: int, url: str, profile: int, timeout: int = 30
) -> v201.SetNetworkProfileRequest:
    return v201.SetNetworkProfileRequest(
        configuration_slot=slot,
        connection_data=v201.NetworkConnectionProfile(
            ocpp_version=v201.OcppVersion.OCPP20,
            ocpp_transport=v201.OcppTransport.JSON,
            ocpp_csms_url=url,
            message_timeout=timeout,
            security_profile=profile,
            ocpp_interface=v201.OcppInterface.WIRED0,
        ),
    )


class Rig:
    """The agent's connection owners on a tmp state dir, with a real outbox whose journal
    can be made unwritable (its name taken by a directory: every append raises)."""

    def __init__(self, state: Path, roots: Path | None = None) -> None:
        self.state = state
        self.outbox = Outbox(state / "outbox.json")
        self.reporter = Reporter(self.outbox)
        self.roots = [roots]  # what the certificate store holds: a test may delete it
        self.settings = settings(state, self.roots)
        self.profiles = NetworkProfiles(state)
        self.reconnects = 0
        self.registrations = 0
        self.network = Profile2x(
            self.settings,
            self.profiles,
            self.reporter,
            charge_point_id="CP-REVIEW-1",
            ocpp_version="2.0.1",
            reconnect=self._reconnect,
            payloads=v201.PAYLOADS,
            new_csms=self._new_csms,
        )

    def _reconnect(self) -> None:
        self.reconnects += 1

    def _new_csms(self) -> None:
        self.registrations += 1

    def break_outbox(self) -> None:
        journal = self.state / "outbox.journal"
        journal.unlink(missing_ok=True)
        journal.mkdir()
        with pytest.raises(StateWriteError):
            self.reporter.security_event(v16.SecurityEvent.RECONFIGURATION_OF_SECURITY_PARAMETERS)


def test_a_saved_password_stays_accepted_when_its_event_cannot_be_written(tmp_path: Path) -> None:
    """A01: the password is saved: SetVariables must not answer Rejected (the CSMS would keep
    the old one) and the reconnect with the new one still follows."""
    rig = Rig(tmp_path)
    rig.break_outbox()
    (owned,) = [v for v in rig.network.variables() if (v.component, v.name) == (SECURITY, PASSWORD)]
    assert owned.write is not None
    owned.write("NewPassword-0123456789")
    assert rig.settings.current().authorization_key == b"NewPassword-0123456789"
    rig.network.after_set_variables()
    assert rig.reconnects == 1


def test_an_applied_network_profile_reconnects_when_its_event_cannot_be_written(
    tmp_path: Path,
) -> None:
    """B10/A05: the switch is saved; registering again and reconnecting must not be skipped
    (nor the loop thread get the exception)."""
    rig = Rig(tmp_path)
    rig.profiles.store(
        1,
        {"url": "ws://127.0.0.1:10/other", "security_profile": 1, "message_timeout": 30},
    )
    rig.profiles.set_priority("1,0")
    rig.break_outbox()
    assert rig.network.apply_priority()
    assert (rig.registrations, rig.reconnects) == (1, 1)
    assert rig.settings.url == "ws://127.0.0.1:10/other"


def test_a_16_key_change_stays_accepted_when_its_event_cannot_be_written(tmp_path: Path) -> None:
    """1.6 A01: ChangeConfiguration(AuthorizationKey) saved is answered Accepted, reconnects."""
    rig = Rig(tmp_path)
    store = CertStore(tmp_path / "certs", {CSMS_ROOT: None, MANUFACTURER_ROOT: None})
    store.load()
    handlers = SecurityHandlers(
        rig.settings,
        store,
        rig.reporter,
        reconnect=rig._reconnect,
        peer_certificate=lambda: None,
        charge_point_certificate=ChargePointCertificate(tmp_path / "cp", "SN-1"),
    )
    rig.break_outbox()
    request = v16.ChangeConfigurationReq(key="AuthorizationKey", value="ab" * 20)
    answer = handlers.change(request)
    assert answer.status is v16.ConfigurationStatus.ACCEPTED
    handlers.after_change(request, answer)
    assert rig.reconnects == 1
    assert rig.settings.current().authorization_key == bytes.fromhex("ab" * 20)


def test_reset_is_rejected_when_the_profile_to_apply_lacks_its_csms_root(tmp_path: Path) -> None:
    """B10/A05.FR.03: a profile-2 slot stored while a CSMS root was installed; the root
    deleted since: Reset is Rejected (it was Accepted, then the switch refused and only logged)
    and nothing changes."""
    bundle = tmp_path / "csms-roots.pem"
    bundle.write_text(ROOT.pem)
    rig = Rig(tmp_path, bundle)
    answer = rig.network.set_network_profile(network_profile(1, "wss://csms.example:8443/ocpp", 2))
    assert answer.status is v201.SetNetworkProfileStatus.ACCEPTED
    rig.profiles.set_priority("1,0")
    reset = v201.ResetRequest(type=v201.ResetType.IMMEDIATE)
    rig.roots[0] = None  # DeleteCertificate took the last CSMS root
    assert rig.network.reset(reset).status is v201.ResetStatus.REJECTED
    assert not rig.network.apply_priority()
    assert (rig.settings.profile, rig.reconnects) == (1, 0)
    rig.roots[0] = bundle
    assert rig.network.reset(reset).status is v201.ResetStatus.ACCEPTED


def test_a_message_timeout_beyond_an_hour_is_rejected(tmp_path: Path) -> None:
    """B09: messageTimeout becomes the connection's CALL timeout; 2.0.1 bounds it nowhere, the
    agent takes 1-3600 s (a CALL that never times out stalls the outbox)."""
    rig = Rig(tmp_path)
    url = "ws://127.0.0.1:10/other"
    for timeout in (0, 3601, 2**31 - 1):
        answer = rig.network.set_network_profile(network_profile(1, url, 1, timeout))
        assert answer.status is v201.SetNetworkProfileStatus.REJECTED
        assert answer.status_info is not None
        assert answer.status_info.reason_code == "InvalidValue"
        assert "messageTimeout" in (answer.status_info.additional_info or "")
    assert rig.profiles.slot(1) is None
    for timeout in (1, 3600):
        answer = rig.network.set_network_profile(network_profile(1, url, 1, timeout))
        assert answer.status is v201.SetNetworkProfileStatus.ACCEPTED


def test_hand_edited_network_profiles_are_checked_at_load(tmp_path: Path) -> None:
    """S5: valid JSON with unusable slots (as `store` never writes them) is dropped at load,
    with a log line; Reset on the loop is then answered, never an exception."""
    rig = Rig(tmp_path)
    url = "ws://127.0.0.1:10/other"
    assert rig.network.set_network_profile(network_profile(3, url, 1)).status.value == "Accepted"
    path = tmp_path / "network_profiles.json"
    document = json.loads(path.read_text())
    good = document["slots"]["3"]
    document["slots"].update(
        {
            "1": {**good, "security_profile": "two"},
            "2": {**good, "url": 5},
            "4": good,
            "x": good,
        }
    )
    document["priority"] = [1, 2, 3, 0]
    path.write_text(json.dumps(document))
    for broken in ({**good, "message_timeout": 2**40}, {**good, "url": "ws://[::1"}, [good]):
        document["slots"]["2"] = broken
        path.write_text(json.dumps(document))
        again = Rig(tmp_path)
        assert [again.profiles.slot(n) for n in (1, 2, 3, 4)] == [None, None, good, None]
        reset = v201.ResetRequest(type=v201.ResetType.IMMEDIATE)
        assert again.network.reset(reset).status is v201.ResetStatus.REJECTED


@pytest.mark.parametrize("saved", ["abc", 7, None, 2.0])
def test_a_hand_edited_saved_profile_is_ignored_not_fatal(tmp_path: Path, saved: object) -> None:
    """connection.json is the agent's, but a hand edit (or a bit flip that still parses) must
    neither stop the daemon at start nor give it a profile outside 0-3: the saved settings
    are dropped with a log line and agent.toml's are used."""
    bundle = tmp_path / "csms-roots.pem"
    bundle.write_text(ROOT.pem)
    made = settings(tmp_path, [bundle])
    assert made.switch(2, "wss://csms.example:8443/ocpp", 30)[0]
    made.connected()
    path = tmp_path / "connection.json"
    document = json.loads(path.read_text())
    assert document["profile"] == 2
    document["profile"] = saved
    path.write_text(json.dumps(document))
    again = settings(tmp_path, [bundle])
    assert (again.profile, again.current().url) == (1, "ws://127.0.0.1:9/ocpp")
