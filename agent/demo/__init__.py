"""The one-command demo and the local peers it needs: a CSMS, a firmware server, a PKI.

Nothing here is used by the daemon. The CSMS needs the `ocpp` and `websockets` libraries, which
`make demo` (and the test extra) install; only `agent.demo.csms` imports them.
"""
