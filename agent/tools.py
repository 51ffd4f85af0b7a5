"""The manufacturer's and operator's commands: sign, verify, request, slots.

They work offline, on files, so a firmware release can be signed and checked on a build machine
and a ready SignedUpdateFirmware payload handed to the CSMS operator.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from agent.config import DOWNLOAD_SCHEMES, key_pins
from agent.firmware import certs, signature
from agent.firmware.errors import FirmwareError
from agent.ocpp import v16
from agent.ocpp.validate import parse_datetime, to_wire


def _text_or_file(value: str) -> str:
    """A value given inline or as the path of a file holding it."""
    path = Path(value)
    try:
        if path.is_file():
            return path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        pass
    return value.strip()


def key_file_problem(path: str, data: bytes) -> str | None:
    """Why `data` is not an unencrypted PEM private key, in words; None when it looks like one."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        return (
            f"{path} is a certificate, not a private key: give --key the signing certificate's "
            "private key (see docs/integrator-guide.md#manufacturer-pki)"
        )
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
        return f"{path} is an encrypted private key: decrypt it first (openssl pkey -in {path})"
    if b"PUBLIC KEY-----" in data:
        return f"{path} is a public key; signing needs the private key"
    if b"PRIVATE KEY-----" not in data:
        return f"{path} is not a PEM private key"
    return None


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        key = Path(args.key).read_bytes()
        problem = key_file_problem(args.key, key)
        if problem:
            print(f"ocpp-fw-agent sign: {problem}", file=sys.stderr)
            return 2
        print(signature.sign_image(Path(args.image), key))
    except (OSError, ValueError) as exc:
        print(f"ocpp-fw-agent sign: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        roots = certs.load_roots(Path(args.roots))
        crls = certs.load_crls(Path(args.crls)) if args.crls else None
        verdict = signature.verify_image(
            Path(args.image),
            _text_or_file(args.signature),
            Path(args.cert).read_text(encoding="ascii"),
            roots,
            crls=crls,
            pins=args.pin,
        )
    except FirmwareError as exc:
        print(f"REJECTED ({exc.status}): {exc.message}")
        return 1
    except OSError as exc:
        print(f"ocpp-fw-agent verify: {exc}", file=sys.stderr)
        return 1
    print(f"OK: {verdict.algorithm} signature over sha256 {verdict.digest.hex()}")
    print(f"    signed by {verdict.certificate.summary}")
    print(f"    signing key pin: {certs.key_pin(verdict.certificate.certificate)}")
    return 0


def _key_pin(text: str) -> str:
    """One `--pin`, checked and normalised as `[firmware] signing_key_pins` entries are."""
    try:
        return key_pins([text])[0]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _location(text: str) -> str:
    """A download URL the agent would fetch: a supported scheme, a host, at most 512 chars."""
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL ({exc})") from None
    if parts.scheme.lower() not in DOWNLOAD_SCHEMES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the scheme must be one of {', '.join(DOWNLOAD_SCHEMES)}"
        )
    if not host:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no host (write {parts.scheme}://HOST/PATH)"
        )
    if len(text) > 512:
        raise argparse.ArgumentTypeError(f"the location is {len(text)} characters, at most 512")
    return text


def _certificate_file(path: str) -> str:
    """A PEM certificate file (the signing certificate), not a key."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None
    if b"PRIVATE KEY-----" in data:
        raise argparse.ArgumentTypeError(
            f"{path} is a private key; give the signing certificate (never send the key)"
        )
    try:
        certs.parse_certificates(data)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{path} is not a PEM certificate ({exc})") from None
    return path


def cmd_request(args: argparse.Namespace) -> int:
    """Print a SignedUpdateFirmware payload, validated by the agent's own message types."""
    now = datetime.datetime.now(datetime.UTC)
    try:
        certificate = Path(args.cert).read_text(encoding="ascii")
        firmware = v16.Firmware(
            location=args.location,
            retrieve_date_time=parse_datetime(args.retrieve_at) if args.retrieve_at else now,
            signing_certificate=certificate,
            signature=_text_or_file(args.signature),
            install_date_time=parse_datetime(args.install_at) if args.install_at else None,
        )
    except (OSError, ValueError) as exc:
        print(f"ocpp-fw-agent request: {exc}", file=sys.stderr)
        return 2
    request = v16.SignedUpdateFirmwareReq(
        request_id=args.request_id,
        firmware=firmware,
        retries=args.retries,
        retry_interval=args.retry_interval,
    )
    payload: dict[str, Any] = to_wire(request)
    print(json.dumps(payload, indent=2))
    if len(certificate) > 5500 or len(firmware.signature) > 800 or len(args.location) > 512:
        print("warning: a field exceeds its OCPP maximum length", file=sys.stderr)
    return 0


def add_commands(sub: Any, add: Any) -> None:
    """Register the subcommands on the CLI's parser (`add(name, func, help)`)."""
    sign = add("sign", cmd_sign, "sign a firmware image (RSA-PSS or ECDSA), print Base64")
    sign.add_argument("--key", required=True, help="PEM private key of the signing certificate")
    sign.add_argument("image")

    verify = add("verify", cmd_verify, "check an image, signature and certificate offline")
    verify.add_argument("--cert", required=True, help="PEM signing certificate")
    verify.add_argument("--signature", required=True, help="Base64 signature, or a file with it")
    verify.add_argument("--roots", required=True, help="manufacturer root directory or bundle")
    verify.add_argument("--crls", help="CRL directory or file")
    verify.add_argument(
        "--pin",
        action="append",
        default=[],
        type=_key_pin,
        help="require the signing key to have this SHA-256 pin (repeatable; "
        "[firmware] signing_key_pins)",
    )
    verify.add_argument("image")

    request = add("request", cmd_request, "print a ready SignedUpdateFirmware payload")
    request.add_argument(
        "--location",
        required=True,
        type=_location,
        help="URL of the image (https, http, ftp, ftps)",
    )
    request.add_argument(
        "--cert", required=True, type=_certificate_file, help="PEM signing certificate"
    )
    request.add_argument("--signature", required=True, help="Base64 signature, or a file")
    request.add_argument("--request-id", type=int, default=1)
    request.add_argument("--retries", type=int, help="retries after the first attempt")
    request.add_argument("--retry-interval", type=int, help="seconds between attempts")
    request.add_argument("--retrieve-at", help="RFC 3339 time to download (default: now)")
    request.add_argument("--install-at", help="RFC 3339 time to install")
