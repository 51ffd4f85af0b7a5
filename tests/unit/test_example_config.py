"""The shipped example (the Debian conffile) loads as is and documents every key."""

from __future__ import annotations

import re
import subprocess
import sys

from agent import config
from agent.demo.rig import SOURCE_ROOT

EXAMPLE = SOURCE_ROOT / "agent.example.toml"


def test_the_example_loads_as_shipped():
    loaded = config.load(EXAMPLE)
    assert loaded.csms.security_profile == 0
    assert loaded.csms.authorization_key is None  # never a secret in a shipped file
    done = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(EXAMPLE), "check-config"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_every_key_is_documented_in_the_example():
    text = EXAMPLE.read_text()
    sections = re.split(r"^\[(\w+)\]$", text, flags=re.MULTILINE)
    documented = {name: body for name, body in zip(sections[1::2], sections[2::2], strict=True)}
    assert set(documented) == set(config.SECTIONS)
    for section, keys in config.SECTIONS.items():
        for key in keys:
            assert re.search(rf"^#? ?{key} = ", documented[section], re.MULTILINE), (section, key)
