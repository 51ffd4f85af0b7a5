"""The manufacturer's and operator's commands, run as a person would: sign, verify, request,
slots, --version."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from ocpp.messages import Call, validate_payload

import agent
from agent.demo import pki
from agent.demo.rig import SOURCE_ROOT, ChargerRig
from agent.firmware import certs


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def files(rig: ChargerRig, tmp_path: Path) -> dict[str, Path]:
    out = {
        "image": tmp_path / "fw-2.0.bin",
        "key": tmp_path / "signer.key",
        "cert": tmp_path / "signer.pem",
    }
    out["image"].write_bytes(b"firmware 2.0\n" * 10_000)
    out["key"].write_bytes(rig.signer.key_pem)
    out["cert"].write_text(rig.signer.pem)
    return out


def test_sign_then_verify_offline(tmp_path):
    rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
    paths = files(rig, tmp_path)
    signed = cli("sign", "--key", str(paths["key"]), str(paths["image"]))
    assert signed.returncode == 0, signed.stderr
    signature = signed.stdout.strip()
    (tmp_path / "fw.sig").write_text(signature + "\n")
    roots = str(rig.base / "roots")
    for given in (signature, str(tmp_path / "fw.sig")):  # inline or as a file
        ok = cli("verify", "--cert", str(paths["cert"]), "--signature", given, "--roots", roots,
                 str(paths["image"]))  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith("OK: rsa-pss signature over sha256 ")

    paths["image"].write_bytes(b"firmware 2.0, tampered\n")
    bad = cli("verify", "--cert", str(paths["cert"]), "--signature", signature, "--roots", roots,
              str(paths["image"]))  # fmt: skip
    assert bad.returncode == 1
    assert bad.stdout.startswith("REJECTED (InvalidSignature)")


def test_verify_prints_the_key_pin_and_checks_pins(tmp_path):
    rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
    paths = files(rig, tmp_path)
    signature = cli("sign", "--key", str(paths["key"]), str(paths["image"])).stdout.strip()
    base = ["verify", "--cert", str(paths["cert"]), "--signature", signature,
            "--roots", str(rig.base / "roots")]  # fmt: skip
    ok = cli(*base, str(paths["image"]))
    pin = ok.stdout.split("signing key pin: ")[1].strip()
    assert pin == certs.key_pin(rig.signer.cert)
    colons = ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper()
    assert cli(*base, "--pin", colons, str(paths["image"])).returncode == 0
    refused = cli(*base, "--pin", "00" * 32, str(paths["image"]))
    assert refused.returncode == 1
    assert refused.stdout.startswith("REJECTED (InvalidCertificate)")
    assert "pinned" in refused.stdout


def test_verify_refuses_a_certificate_from_another_root(tmp_path):
    rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
    other_roots = tmp_path / "other-roots"
    other_roots.mkdir()
    other = pki.issue("Another Manufacturer Root", pki.rsa_key(2048, 555), ca=True)
    (other_roots / "root.pem").write_text(other.pem)
    paths = files(rig, tmp_path)
    signature = cli("sign", "--key", str(paths["key"]), str(paths["image"])).stdout.strip()
    done = cli("verify", "--cert", str(paths["cert"]), "--signature", signature,
               "--roots", str(other_roots), str(paths["image"]))  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.startswith("REJECTED (InvalidCertificate)")


def test_request_prints_a_payload_the_official_schema_accepts(tmp_path):
    rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
    paths = files(rig, tmp_path)
    done = cli("request", "--location", "https://fw.example/2.0.bin", "--cert", str(paths["cert"]),
               "--signature", "c2lnbmF0dXJl", "--request-id", "17", "--retries", "2",
               "--retry-interval", "30", "--install-at", "2030-01-01T02:00:00Z")  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["requestId"] == 17 and payload["retries"] == 2
    assert payload["firmware"]["installDateTime"] == "2030-01-01T02:00:00.000Z"
    assert payload["firmware"]["signingCertificate"] == rig.signer.pem
    # Raises if the payload breaks the OCA schema.
    asyncio.run(validate_payload(Call("1", "SignedUpdateFirmware", payload), "1.6"))


def test_slots_shows_what_the_backend_sees(tmp_path):
    rig = ChargerRig(tmp_path, "ws://127.0.0.1:9/ocpp")
    done = cli("-c", str(rig.config()), "slots")
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout)
    assert (seen["backend"], seen["booted"], seen["primary"]) == ("file", "A", "A")
    assert seen["health"] == {"A": "good", "B": "good"} and seen["problems"] == []


def test_version():
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"ocpp-fw-agent {agent.__version__}"
