"""Sidecar mode (issue 13, mode 1): the charger's own OCPP stack talks to the agent as if it
were the CSMS; the agent holds the one connection to the real CSMS and forwards the rest."""
