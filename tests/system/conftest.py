"""The system test builds the .deb and boots Debian 12 under systemd-nspawn (about a minute, and
it installs nothing on the host). It runs in `make system` (which sets OCPP_FW_AGENT_SYSTEM_TEST=1),
not in the unit and compatibility runs that collect all of tests/."""

from __future__ import annotations

import os

if os.environ.get("OCPP_FW_AGENT_SYSTEM_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]
