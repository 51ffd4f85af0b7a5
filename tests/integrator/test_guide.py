"""docs/integrator-guide.md: its manufacturer PKI recipe, run as written, gives certificates that
`ocpp-fw-agent verify` accepts, and its revocation step makes verify refuse them (issue 12,
stumble 3). The commands are taken from the guide's ```sh blocks, so the guide cannot drift."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.demo.rig import SOURCE_ROOT

GUIDE = SOURCE_ROOT / "docs" / "integrator-guide.md"
ANCHOR_HEADING = "## Manufacturer PKI"  # docs/integrator-guide.md#manufacturer-pki


def pki_section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    assert f"\n{ANCHOR_HEADING}\n" in text, "the #manufacturer-pki anchor is linked from messages"
    section = text.split(f"\n{ANCHOR_HEADING}\n", 1)[1]
    return section.split("\n## ", 1)[0]


def sh_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def agent_on_path(bin_dir: Path) -> dict[str, str]:
    """`ocpp-fw-agent` as the guide calls it: this tree's CLI."""
    bin_dir.mkdir()
    shim = bin_dir / "ocpp-fw-agent"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m agent "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(SOURCE_ROOT)}


def test_the_guides_pki_recipe_gives_certificates_verify_accepts(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    blocks = sh_blocks(pki_section())
    assert len(blocks) >= 5, blocks
    work = tmp_path / "pki"
    work.mkdir()
    env = agent_on_path(tmp_path / "bin")
    script = "set -eu\n" + "\n".join(blocks)
    done = subprocess.run(["sh", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^OK: rsa-pss signature over sha256 [0-9a-f]{64}$", done.stdout, re.M)
    assert "signed by CN=Example Firmware Signing 2026 issued by root CN=Example Firmware Root" in (
        done.stdout
    )
    text = subprocess.run(["openssl", "x509", "-in", "signer.pem", "-noout", "-text"], cwd=work,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "Version: 3" in text and "Code Signing" in text and "CA:FALSE" in text

    # The revocation the guide describes, then the same verify: refused.
    section = pki_section()
    for command in re.findall(r"`(openssl ca -config pki.cnf[^`]*)`", section):
        subprocess.run(command.split(), cwd=work, capture_output=True, check=True, timeout=60)
    verify = re.search(r"^(ocpp-fw-agent verify .*?firmware\.bin)$", "\n".join(blocks),
                       flags=re.M | re.S)  # fmt: skip
    assert verify is not None
    refused = subprocess.run(["sh", "-c", verify.group(1)], cwd=work, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 1
    assert refused.stdout.startswith("REJECTED (RevokedCertificate)"), refused.stdout


def test_a_signing_certificate_made_the_quick_way_is_refused_with_the_recipe(
    tmp_path: Path,
) -> None:
    """Stumble 3: `openssl x509 -req` without -extfile gives a v1 certificate; verify used to
    accept it. Now it is refused, and the message points to the guide's recipe."""
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "check": True}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "root.key", "-out", "root.pem", "-days", "3650", "-subj", "/CN=Quick Root",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], **run)  # fmt: skip
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "signer.key", "-out", "signer.csr", "-subj", "/CN=Quick Signer"],
                   **run)  # fmt: skip
    subprocess.run(["openssl", "x509", "-req", "-in", "signer.csr", "-CA", "root.pem", "-CAkey",
                    "root.key", "-CAcreateserial", "-days", "365", "-sha256",
                    "-out", "signer.pem"], **run)  # fmt: skip
    (tmp_path / "roots").mkdir()
    shutil.copy(tmp_path / "root.pem", tmp_path / "roots" / "root.pem")
    (tmp_path / "fw.bin").write_bytes(b"firmware")
    agent = [sys.executable, "-m", "agent"]
    here = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT)}
    signature = subprocess.run([*agent, "sign", "--key", "signer.key", "fw.bin"], **run,
                               env=here).stdout  # fmt: skip
    (tmp_path / "fw.sig").write_text(signature)
    refused = subprocess.run(
        [*agent, "verify", "--cert", "signer.pem", "--signature", "fw.sig", "--roots", "roots",
         "fw.bin"], cwd=tmp_path, capture_output=True, text=True, env=here,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout.startswith("REJECTED (InvalidCertificate)"), refused.stdout
    assert "X.509 v1" in refused.stdout
    assert "docs/integrator-guide.md#manufacturer-pki" in refused.stdout
