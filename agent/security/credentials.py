"""The CSMS connection's security profile and Basic password: configured, changed over OCPP.

agent.toml gives the starting values (`[csms] security_profile`, `authorization_key`). The CSMS
may change them (white paper A01, A05) with ChangeConfiguration; the agent keeps the new values
in its state dir (`connection.json`, and the key alone in `authorization_key`, mode 0600, hex;
both replaced atomically) and the transport asks `current()` for what to use at each attempt.

- AuthorizationKey (A00.FR.205/304, §7.2): a string of 32 to 40 hexadecimal digits (16 to 20
  bytes once decoded; the Basic password is the decoded bytes, OCTT TC_085_CS), else
  `Rejected`. Accepted: used from the next connection, which follows at once when the profile
  uses Basic authentication (A01 steps 3-4). The key is never logged (A01.FR.12) nor returned.
- SecurityProfile (A05, §7.6): only upward (A05.FR.01); to 1 or 2 only with an
  AuthorizationKey (A05.FR.02), to 2 or 3 only with a CSMS root in the store (A05.FR.03), to 3
  only with a valid client certificate (A05.FR.04), otherwise `Rejected`. Accepted: saved,
  the connection dropped and made again with the new profile (A05.FR.05-07). If
  `TRIAL_ATTEMPTS` connection attempts in a row fail with it, the agent goes back to the
  previous profile and says so (A05.FR.08 "SHOULD fallback to its previous security profile
  setting"; A05 error handling: "to prevent that the Charge Point will become unable to
  reconnect to the Central System on its own"). The first successful connection makes the new
  profile final (A05.FR.09).
- Going from ws:// (profiles 0, 1) to wss:// (2, 3) needs a TLS URL: `[csms] tls_url`, or the
  configured URL with wss://.
- OCPP 2.0.1/2.1 (`agent.security.profile2x`): the password is `SecurityCtrlr.BasicAuthPassword`,
  a passwordString of 16 to 40 characters sent as it is (`set_password`), and a new profile
  comes with a new CSMS URL from a network profile (`switch`, B09/B10, A05): tried like a raised
  profile, the previous profile and URL being the fallback.
- Lowering the profile is not possible over OCPP (A00.FR.005): an integrator edits agent.toml.
  When the configured profile or key differ from those the saved values started from, the
  configuration wins and the saved values are dropped (one log line).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeGuard

from agent.config import CsmsConfig
from agent.durable import (
    StateFileError,
    StateWriteError,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
)
from agent.firmware import certs
from agent.ocpp.v16 import ConfigurationStatus
from agent.security.certstore import validity

LOG = logging.getLogger(__name__)
TRIAL_ATTEMPTS = 3
SETTINGS_FILE = "connection.json"
KEY_FILE = "authorization_key"
VERSION = 1


def decode_authorization_key(text: str) -> bytes | None:
    """The password bytes of an AuthorizationKey value, or None when it breaks the rules."""
    if not 32 <= len(text) <= 40 or len(text) % 2:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


# 2.x passwordString (part 2 §2.1.4 primitive datatypes): these characters only.
PASSWORD_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*-_=:+|@."
)
PASSWORD_MIN, PASSWORD_MAX = 16, 40  # A00.FR.205; the maxLimit the agent reports


def password_problem(text: str) -> str | None:
    """Why `text` cannot be a 2.x BasicAuthPassword, or None; never quotes the text."""
    if not PASSWORD_MIN <= len(text) <= PASSWORD_MAX:
        return f"{len(text)} characters; {PASSWORD_MIN}-{PASSWORD_MAX} required"
    if not set(text) <= PASSWORD_CHARS:
        return "characters outside a-z A-Z 0-9 *-_=:+|@."
    return None


def _is_profile(value: object) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= 3


def _stored_key(text: str) -> bytes | None:
    """The password saved in KEY_FILE (hex): a 1.6 key, or a 2.x password's bytes."""
    if not 32 <= len(text) <= 2 * PASSWORD_MAX or len(text) % 2:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _digest(key: bytes | None) -> str | None:
    """Tells whether agent.toml's key changed, without keeping it a second time."""
    if key is None:
        return None
    return hashlib.sha256(b"ocpp-fw-agent configured key\0" + key).hexdigest()


def tls_endpoint_url(url: str, tls_url: str | None) -> str:
    if tls_url:
        return tls_url
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(scheme="wss")) if parts.scheme == "ws" else url


class ConnectionSettings:
    """Read by the transport thread (`current`), changed by the loop: every field under a lock."""

    def __init__(
        self,
        csms: CsmsConfig,
        state_dir: Path,
        *,
        csms_roots: Callable[[], Path | None],
        client_certificate: Callable[[], tuple[Path, Path] | None],
        tls_url: str | None = None,
        on_fallback: Callable[[int, int], None] = lambda new, old: None,
    ) -> None:
        self._configured = csms
        self._file = state_dir / SETTINGS_FILE
        self._key_file = state_dir / KEY_FILE
        self._csms_roots = csms_roots
        self._client_certificate = client_certificate
        self._tls_url = tls_url
        self._on_fallback = on_fallback
        self._lock = threading.Lock()
        self._profile = csms.security_profile
        self._key = csms.authorization_key
        self._fallback: int | None = None  # the profile to go back to while trying a new one
        self._attempts = 0
        self._key_set = False  # the CSMS set the key in use (kept in KEY_FILE)
        # 2.x network profiles: the CSMS URL and message timeout in use (None: agent.toml's)
        # and, while a new one is tried, the previous ones (with `_fallback`).
        self._url: str | None = None
        self._timeout: int | None = None
        self._fallback_url: str | None = None
        self._fallback_timeout: int | None = None
        self._load()

    # --- persistence -------------------------------------------------------------------------

    def _basis(self) -> dict[str, object]:
        return {
            "profile": self._configured.security_profile,
            "key": _digest(self._configured.authorization_key),
        }

    def _load(self) -> None:
        try:
            saved = read_json(self._file, VERSION)
        except StateFileError as exc:
            LOG.error("ignoring the saved connection settings: %s", exc)
            return
        if saved is None:
            return
        if saved.get("configured") != self._basis():
            LOG.warning(
                "agent.toml's security profile or AuthorizationKey changed: the values the CSMS "
                "set are dropped, agent.toml's are used"
            )
            return
        # Saved since 2.x network profiles (absent before: the same URL).
        if saved.get("configured_url", self._configured.url) != self._configured.url:
            LOG.warning("agent.toml's CSMS url changed: the connection the CSMS set is dropped")
            return
        profile, fallback = saved.get("profile", self._profile), saved.get("fallback")
        if not _is_profile(profile) or not (fallback is None or _is_profile(fallback)):
            LOG.error("ignoring the saved connection settings: a profile is not 0-3")
            return
        self._profile, self._fallback = profile, fallback
        self._url, self._timeout = _text(saved.get("url")), _number(saved.get("timeout"))
        self._fallback_url = _text(saved.get("fallback_url"))
        self._fallback_timeout = _number(saved.get("fallback_timeout"))
        if saved.get("key_set"):
            try:
                key = _stored_key(self._key_file.read_text("ascii").strip())
            except (OSError, UnicodeDecodeError) as exc:
                LOG.error("cannot read the AuthorizationKey the CSMS set: %s", type(exc).__name__)
                key = None
            if key is None:
                LOG.error("the AuthorizationKey the CSMS set is unusable; agent.toml's is used")
            else:
                self._key, self._key_set = key, True

    def _save(self) -> None:
        atomic_write_json(
            self._file,
            {
                "version": VERSION,
                "configured": self._basis(),
                "configured_url": self._configured.url,
                "profile": self._profile,
                "fallback": self._fallback,
                "key_set": self._key_set,
                "url": self._url,
                "timeout": self._timeout,
                "fallback_url": self._fallback_url,
                "fallback_timeout": self._fallback_timeout,
            },
            update_step=False,
        )

    # --- what the transport uses -------------------------------------------------------------

    def current(self) -> CsmsConfig:
        """The settings of the next connection attempt (counted while a new profile is tried)."""
        with self._lock:
            if self._fallback is not None:
                self._attempts += 1
                if self._attempts > TRIAL_ATTEMPTS:
                    self._fall_back()
            return self._build(self._profile)

    def _fall_back(self) -> None:
        assert self._fallback is not None
        new, old = self._profile, self._fallback
        LOG.warning(
            "security profile %d: %d connection attempts failed; back to profile %d (A05.FR.08)",
            new,
            TRIAL_ATTEMPTS,
            old,
        )
        self._profile, self._fallback, self._attempts = old, None, 0
        self._url, self._timeout = self._fallback_url, self._fallback_timeout
        self._fallback_url = self._fallback_timeout = None
        try:
            self._save()
        except StateWriteError as exc:  # in memory it is done; a restart would try again
            LOG.error("cannot save the fallback to profile %d: %s", old, exc)
        self._on_fallback(new, old)

    def _build(self, profile: int) -> CsmsConfig:
        configured = self._configured
        url, ca_file = configured.url, configured.ca_file
        client_cert, client_key = configured.client_cert, configured.client_key
        if self._url is not None:  # a 2.x network profile's: its scheme fits its profile
            url = self._url
        elif profile >= 2:
            url = tls_endpoint_url(url, self._tls_url)
        if profile >= 2:  # the roots the CSMS installed, whichever URL (A05.FR.03)
            ca_file = self._csms_roots() or ca_file
        if profile == 3:
            pair = self._client_certificate()
            if pair is not None:
                client_cert, client_key = pair
        return dataclasses.replace(
            configured,
            url=url,
            security_profile=profile,
            authorization_key=self._key,
            ca_file=ca_file,
            client_cert=client_cert,
            client_key=client_key,
            call_timeout=float(self._timeout) if self._timeout else configured.call_timeout,
        )

    def connected(self) -> None:
        """The CSMS took a connection: a profile being tried is the profile now (A05.FR.09)."""
        with self._lock:
            if self._fallback is None:
                return
            LOG.info("connected with security profile %d; it stays (A05.FR.09)", self._profile)
            self._fallback, self._attempts = None, 0
            self._fallback_url = self._fallback_timeout = None
            try:
                self._save()
            except StateWriteError as exc:
                LOG.error("cannot save security profile %d: %s", self._profile, exc)

    # --- what the CSMS may change ------------------------------------------------------------

    @property
    def profile(self) -> int:
        with self._lock:
            return self._profile

    def uses_basic_auth(self) -> bool:
        return self.profile in (1, 2)

    def set_authorization_key(self, value: str) -> tuple[ConfigurationStatus, str]:
        """ChangeConfiguration(AuthorizationKey): (status, why); `why` never holds the key."""
        key = decode_authorization_key(value)
        if key is None:
            return (
                ConfigurationStatus.REJECTED,
                f"AuthorizationKey of {len(value)} characters refused: 32-40 hexadecimal digits "
                "(16-20 bytes) required",
            )
        with self._lock:
            try:
                atomic_write_bytes(self._key_file, value.lower().encode("ascii"), update_step=False)
                was, self._key_set = self._key_set, True
                self._save()
            except StateWriteError as exc:
                self._key_set = was
                return ConfigurationStatus.REJECTED, f"AuthorizationKey not saved: {exc.strerror}"
            self._key = key
        return ConfigurationStatus.ACCEPTED, "AuthorizationKey changed"

    def set_password(self, text: str) -> tuple[bool, str]:
        """2.x SetVariables(SecurityCtrlr.BasicAuthPassword), A01: (saved, why); `why` never
        holds the password. Sent as it is (its UTF-8 bytes), kept as hex like a 1.6 key."""
        problem = password_problem(text)
        if problem is not None:
            return False, f"BasicAuthPassword refused: {problem}"
        with self._lock:
            try:
                atomic_write_bytes(
                    self._key_file, text.encode("ascii").hex().encode("ascii"), update_step=False
                )
                was, self._key_set = self._key_set, True
                self._save()
            except StateWriteError as exc:
                self._key_set = was
                return False, f"BasicAuthPassword not saved: {exc.strerror}"
            self._key = text.encode("ascii")
        return True, "BasicAuthPassword changed"

    @property
    def network_url(self) -> str | None:
        """The URL of the 2.x network profile in use; None: agent.toml's."""
        with self._lock:
            return self._url

    @property
    def configured_profile(self) -> int:
        return self._configured.security_profile

    @property
    def url(self) -> str:
        """The CSMS URL in use (without the identity)."""
        with self._lock:
            return self._build(self._profile).url

    def refusal(self, new: int, now: datetime.datetime | None = None) -> str | None:
        """Why profile `new` cannot be used with what the charger holds (A05.FR.02-04)."""
        if new in (1, 2) and self._key is None:
            return f"SecurityProfile {new} needs a password (AuthorizationKey) first"
        if new in (2, 3) and (self._csms_roots() or self._configured.ca_file) is None:
            return f"SecurityProfile {new} needs a CSMS root certificate"
        if new == 3 and not self._client_valid(now):
            return "SecurityProfile 3 needs a valid charge point certificate"
        return None

    def switch(self, profile: int, url: str | None, timeout: int | None) -> tuple[bool, str]:
        """2.x: connect with a network profile's URL (None: agent.toml's), profile and message
        timeout from now on (B10, A05); tried like a raised profile, the settings in use being
        the fallback. Never lower (A05; checked again here: the profile may have changed)."""
        with self._lock:
            current = self._profile
            if profile < current:
                return False, f"SecurityProfile {profile}: lower than {current} in use"
            refused = self.refusal(profile)
            if refused is not None:
                return False, refused
            before = (
                self._profile,
                self._fallback,
                self._attempts,
                self._url,
                self._timeout,
                self._fallback_url,
                self._fallback_timeout,
            )
            if self._fallback is None:  # a switch during a trial keeps the first fallback
                self._fallback = current
                self._fallback_url, self._fallback_timeout = self._url, self._timeout
            self._profile, self._attempts, self._url, self._timeout = profile, 0, url, timeout
            try:
                self._save()
            except StateWriteError as exc:
                (
                    self._profile,
                    self._fallback,
                    self._attempts,
                    self._url,
                    self._timeout,
                    self._fallback_url,
                    self._fallback_timeout,
                ) = before
                return False, f"network profile not saved: {exc.strerror}"
        return True, f"SecurityProfile {current} -> {profile}"

    def raise_profile(
        self, value: str, now: datetime.datetime | None = None
    ) -> tuple[ConfigurationStatus, str]:
        """ChangeConfiguration(SecurityProfile), A05.FR.01-05."""
        rejected = ConfigurationStatus.REJECTED
        try:
            new = int(value.strip())
        except ValueError:
            return rejected, f"SecurityProfile {value[:20]!r} is not 0-3"
        with self._lock:
            current = self._profile
            if not 0 <= new <= 3:
                return rejected, f"SecurityProfile {new} is not 0-3"
            if new <= current:
                return rejected, f"SecurityProfile {new}: only raising is allowed, now {current}"
            if new in (1, 2) and self._key is None:
                return rejected, f"SecurityProfile {new} needs an AuthorizationKey first"
            if new in (2, 3) and (self._csms_roots() or self._configured.ca_file) is None:
                return rejected, f"SecurityProfile {new} needs a CentralSystemRootCertificate"
            if new == 3 and not self._client_valid(now):
                return rejected, "SecurityProfile 3 needs a valid charge point certificate"
            before = (self._profile, self._fallback, self._attempts)
            self._profile, self._fallback, self._attempts = new, current, 0
            try:
                self._save()
            except StateWriteError as exc:
                self._profile, self._fallback, self._attempts = before
                return rejected, f"SecurityProfile {new} not saved: {exc.strerror}"
        return ConfigurationStatus.ACCEPTED, f"SecurityProfile {current} -> {new}"

    def _client_valid(self, now: datetime.datetime | None) -> bool:
        pair = self._client_certificate()
        if pair is None:
            cert, key = self._configured.client_cert, self._configured.client_key
            if cert is None or key is None:
                return False
            pair = (cert, key)
        try:
            certificate = certs.load_pem_certificate(pair[0].read_bytes())
        except (OSError, ValueError):
            return False
        start, end = validity(certificate)
        return start <= (now or datetime.datetime.now(datetime.UTC)) <= end


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> int | None:
    return value if type(value) is int else None
