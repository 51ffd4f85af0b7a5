"""`python -m agent` is the same CLI as `ocpp-fw-agent`."""

import sys

from agent.cli import main

sys.exit(main())
