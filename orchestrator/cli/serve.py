"""`orchestrator serve`: the provisioning service (orchestrator/serve/), started from the same option groups as the
other database commands. Starlette and uvicorn are imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..settings import DEFAULT_LISTEN, DEFAULT_SPARES, DEFAULT_SURVEY_EVERY, format_duration
from . import app
from .options import BUDGETS, DATABASES, EXTENSIONS, GATE, ONBOARDING, SESSION, Flags, Group, Spares, command

SERVICE_PANEL = "Service"
SERVE_GATE = Group(GATE.panel, (GATE.flags[0],))  # --allow-unsafe: a rehearsal per onboarding would cost seconds


@command(app, DATABASES, BUDGETS, SESSION, ONBOARDING, EXTENSIONS, SERVE_GATE)
def serve(
    flags: Flags,
    listen: Annotated[
        str,
        typer.Option("--listen", help="HOST:PORT to listen on.", metavar="<host:port>", rich_help_panel=SERVICE_PANEL),
    ] = DEFAULT_LISTEN,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="File holding the API token every /v1 request must bear (else $ORCHESTRATOR_API_TOKEN; without "
            "either the service refuses to start).",
            rich_help_panel=SERVICE_PANEL,
        ),
    ] = None,
    spares: Spares = DEFAULT_SPARES,
    survey_every: Annotated[
        str,
        typer.Option(
            "--survey-every",
            help="How old the fleet survey behind GET /v1/fleet may get (a status of every school).",
            metavar="<duration>",
            rich_help_panel=SERVICE_PANEL,
        ),
    ] = format_duration(DEFAULT_SURVEY_EVERY),
) -> None:
    """Run the provisioning service: an HTTP API that onboards schools (PUT /v1/schools/{id}, what provision does)
    and shows the fleet (GET /v1/fleet, /metrics, a dashboard at /), warm between requests."""
    from .run import execute_serve

    execute_serve(flags, listen=listen, token_file=token_file, spares=spares, survey_every=survey_every)
