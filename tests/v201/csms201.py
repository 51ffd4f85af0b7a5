"""A real OCPP 2.0.1 CSMS for tests: the `ocpp` library's v201 ChargePoint, on loopback.

The 1.6 `TestCsms` with the other side swapped (`agent.demo.csms.Csms2x`, shared with the
2.1 tests and the demo): every CALL the agent sends is checked against the library's official
2.0.1 JSON schemas (violations collected, checked at teardown), and the library checks each
answer of the agent to our CALLs against them too. Test-only.
"""

from __future__ import annotations

from agent.demo.csms import Csms2x

Csms201 = Csms2x  # 2.0.1 unless told another version: `Csms201("2.1")`
