"""The manufacturer's and operator's commands, run as a person would: sign, verify, request,
slots, --version."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

from ocpp.messages import Call, validate_payload

import agent
from agent.demo import pki
from agent.demo.rig import SOURCE_ROOT, ChargerRig
from agent.firmware import certs
from tests.e2e.conftest import wait_until


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
    done = cli("-c", str(rig.config()), "slots", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout)
    assert (seen["backend"], seen["booted"], seen["primary"]) == ("file", "A", "A")
    assert seen["health"] == {"A": "good", "B": "good"} and seen["problems"] == []


def test_slots_prints_text_with_a_documented_exit_status(tmp_path):
    """Issue 12, stumble 6: text by default; exit 0 without a problem, 1 with one (it was 0
    while listing a problem), 2 for a configuration error (fails before this change: JSON
    only)."""
    rig = ChargerRig(tmp_path, "ws://127.0.0.1:9/ocpp")
    config = rig.config()
    done = cli("slots", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == (
        "backend:   file\n"
        f"slot A:    {rig.slots['A']}  good (booted, primary)\n"
        f"slot B:    {rig.slots['B']}  good\n"
        "trial:     none active\n"
        "no problems\n"
    )
    rig.env.unlink()
    broken = cli("slots", "-c", str(config))
    assert broken.returncode == 1
    assert f"problem:   file: environment {rig.env} does not exist\n" in broken.stdout
    assert json.loads(cli("slots", "--json", "-c", str(config)).stdout)["problems"] == [
        f"file: environment {rig.env} does not exist"
    ]
    unconfigured = rig.config(slots={"devices": {}})
    assert cli("slots", "-c", str(unconfigured)).returncode == 2  # two slots or none


def test_a_missing_bootloader_tool_names_its_debian_package(tmp_path):
    """Stumble 6: `fw_printenv not found` did not say where to get it."""
    rig = ChargerRig(tmp_path, "ws://127.0.0.1:9/ocpp")
    options = {"fw_printenv": "/nonexistent/fw_printenv", "fw_env_config": str(tmp_path / "c")}
    config = rig.config(slots={"backend": "uboot", "options": options})
    done = cli("slots", "-c", str(config))
    assert done.returncode == 1
    assert (
        "problem:   uboot: /nonexistent/fw_printenv not found (apt-get install libubootenv-tool)"
        in done.stdout.splitlines()
    )


def test_global_options_are_accepted_after_the_command(tmp_path):
    """Stumble 6: `ocpp-fw-agent run -c FILE` was refused (fails before this change)."""
    missing = str(tmp_path / "nope.toml")
    for argv in (("-c", missing, "run"), ("run", "-c", missing), ("run", "--config", missing),
                 ("check-config", "-v", "-c", missing)):  # fmt: skip
        done = cli(*argv)
        assert done.returncode == 2
        assert done.stderr == f"ocpp-fw-agent: {missing}: no such file\n", argv


def test_sign_given_a_certificate_as_the_key_says_so(tmp_path):
    """Stumble 6: it printed `cannot load the private key: ValueError`."""
    rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
    paths = files(rig, tmp_path)
    done = cli("sign", "--key", str(paths["cert"]), str(paths["image"]))
    assert done.returncode == 2
    assert done.stderr == (
        f"ocpp-fw-agent sign: {paths['cert']} is a certificate, not a private key: give --key "
        "the signing certificate's private key (see docs/integrator-guide.md#manufacturer-pki)\n"
    )
    assert done.stdout == ""


def test_request_refuses_a_location_the_agent_could_not_fetch(tmp_path):
    """Stumble 6: `--location ftp:/bad` was accepted into the payload."""
    rig = ChargerRig(tmp_path / "charger", "ws://127.0.0.1:9/ocpp")
    paths = files(rig, tmp_path)
    base = ["request", "--cert", str(paths["cert"]), "--signature", "c2ln"]
    for location, problem in (
        ("ftp:/bad", "'ftp:/bad' names no host (write ftp://HOST/PATH)"),
        ("file:///etc/passwd", "'file:///etc/passwd': the scheme must be one of https, http"),
        ("fw.example/2.0.bin", "'fw.example/2.0.bin': the scheme must be one of"),
    ):
        done = cli(*base, "--location", location)
        assert done.returncode == 2
        assert f"argument --location: {problem}" in done.stderr, done.stderr
        assert done.stdout == ""
    key_as_cert = cli("request", "--location", "https://fw.example/a.bin", "--cert",
                      str(paths["key"]), "--signature", "c2ln")  # fmt: skip
    assert key_as_cert.returncode == 2
    assert f"argument --cert: {paths['key']} is a private key" in key_as_cert.stderr


def test_version():
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"ocpp-fw-agent {agent.__version__}"


def test_status_tells_the_outcome_the_slot_and_when(charger, rig, firmware):
    """Stumble 4: after a successful update text `status` said `request 2: finished` (only
    --json had the outcome). Now the outcome, the committed slot and the time, also once the
    daemon has stopped (fails before this change)."""
    agent = charger.start()
    assert charger.update(firmware, 2) == "Accepted"
    rig.wait_reboot_request(agent)
    rig.versions["B"] = "2.0"
    assert rig.power_cycle(agent) == "B"
    charger.restart()
    charger.wait_status("Installed")
    config = str(rig.base / "agent.toml")

    def update_line() -> str | None:
        done = cli("status", "-c", config)
        lines = [line for line in done.stdout.splitlines() if line.startswith("update:")]
        return lines[0] if lines and "Installed" in lines[0] else None

    line = wait_until(update_line, 30, "status to show the outcome")
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.fullmatch(rf"update:       request 2: Installed, committed slot B at {when}", line)
    charger.agent.stop()
    stopped = cli("status", "-c", config)
    assert stopped.returncode == 1
    assert line in stopped.stdout.splitlines()
    (rig.state / "status.json").unlink()  # as after a daemon that never published in this boot
    unpublished = cli("status", "-c", config).stdout.splitlines()
    assert unpublished[1] == line.replace("update:       ", "last update:  ")
