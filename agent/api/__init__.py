"""API mode: the local socket through which a charger's own OCPP stack delegates firmware work."""
