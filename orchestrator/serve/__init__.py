"""`orchestrator serve`: the provisioning service, a third front-end (next to the CLI and the Python API) on the
same job and runner. Imported only by that command: `orchestrator --version` and the other commands never load
Starlette, uvicorn or this package.

- state.py: the warm state (the job prepared once, reloaded on change or SIGHUP), onboarding and status of one school;
- survey.py: the fleet survey behind GET /v1/fleet, kept no older than --survey-every;
- spares.py: each server's spares topped up in the background (--spares);
- auth.py: the bearer token; app.py: the routes; openapi.py: the API's description; server.py: uvicorn and signals.
"""
