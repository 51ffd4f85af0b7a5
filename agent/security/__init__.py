"""The part of the OCPP 1.6 security white paper that belongs to the connection the agent
holds: its keys and security profile, the CA stores, the charge point certificate."""
