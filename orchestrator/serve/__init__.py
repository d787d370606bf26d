"""`orchestrator serve`: the provisioning service (the HTTP API, the dashboard)."""
