"""The routes (Starlette): /v1 behind the bearer token; /healthz, /readyz, /metrics, /openapi.json and the dashboard
(/) open. Every refusal is `{"error": {"code", "message", "hint"}}` with a 4xx, nothing done; a school's result is
the report's school object (docs/report.md), with 200 when it ended ok, 409 for a school in a state a human must
settle (dirty, modified, locked, missing), 503 for one that could not be reached safely (unreachable, pooled,
interrupted), 500 otherwise."""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import BodyTooLarge, InvalidInput, RequestRefused, SchoolConflict, Unauthorized, UnknownSchool
from ..fleet import TenantOutcome
from ..logsetup import get_logger
from ..outcome import Status
from ..report import school_dict
from ..settings import SERVE_BODY_LIMIT
from . import auth
from .openapi import openapi
from .spares import keep_spares
from .state import Refused, Service
from .survey import Surveyor, fleet_json

log = get_logger("orchestrator.serve")

_REFUSED_HTTP: dict[type[InvalidInput], int] = {
    Unauthorized: 401,
    UnknownSchool: 404,
    SchoolConflict: 409,
    BodyTooLarge: 413,
}
_STATUS_HTTP = {
    Status.DIRTY: 409,
    Status.MODIFIED: 409,
    Status.LOCKED: 409,
    Status.MISSING: 409,
    Status.UNREACHABLE: 503,
    Status.POOLED: 503,
    Status.SKIPPED: 503,  # not attempted (the service is stopping)
}


def make_app(service: Service, token: str) -> Starlette:
    surveyor = Surveyor(service)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        job = service.ready_job
        log.info("serve.started", schools=len(job.tenants), servers=len(job.servers), latest_version=job.source.latest)
        async with anyio.create_task_group() as tg:
            tg.start_soon(surveyor.keep_fresh)
            tg.start_soon(keep_spares, service)
            tg.start_soon(_reload_on_sighup, service)
            yield
            tg.cancel_scope.cancel()
        service.kept.close()
        log.info("serve.stopped")

    def authorized(request: Request) -> None:
        auth.check(request.headers.get("authorization"), token)

    async def put_school(request: Request) -> Response:
        authorized(request)
        url = _url_of(await _body(request))
        tenant = await service.school(request.path_params["id"], url)
        return _school_response(await service.onboard(tenant))

    async def get_school(request: Request) -> Response:
        authorized(request)
        tenant = await service.school(request.path_params["id"], None)
        outcome = await service.status(tenant)
        return JSONResponse(school_dict(outcome))

    async def get_fleet(request: Request) -> Response:
        authorized(request)
        survey = await surveyor.fresh(refresh=request.query_params.get("refresh") in ("1", "true"))
        return JSONResponse(fleet_json(survey, service))

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(_: Request) -> Response:
        problems = surveyor.ready_problems()
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)

    async def metrics(_: Request) -> Response:
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi_json(_: Request) -> Response:
        return JSONResponse(openapi())

    async def dashboard(_: Request) -> Response:
        return HTMLResponse(_render_dashboard())

    async def refused(request: Request, exc: Exception) -> Response:
        if isinstance(exc, Refused):
            error, status = exc.error, exc.status
        else:
            assert isinstance(exc, InvalidInput)
            error, status = exc, _REFUSED_HTTP.get(type(exc), 400)
        log.info("serve.refused", method=request.method, path=request.url.path, status=status, code=error.code)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": error.to_dict()}, status_code=status, headers=headers)

    routes = [
        Route("/v1/schools/{id}", put_school, methods=["PUT"]),
        Route("/v1/schools/{id}", get_school, methods=["GET"]),
        Route("/v1/fleet", get_fleet, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/", dashboard, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {InvalidInput: refused, Refused: refused}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.surveyor = surveyor
    return app


async def _body(request: Request) -> Any:
    """The JSON body (None when empty), read up to SERVE_BODY_LIMIT bytes. Raises RequestRefused."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > SERVE_BODY_LIMIT:
        raise _too_large()
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > SERVE_BODY_LIMIT:
            raise _too_large()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestRefused(
            "the request body is not JSON",
            hint='send {"url": "postgresql://..."}, or no body for a school the registry lists',
        ) from None


def _too_large() -> BodyTooLarge:
    return BodyTooLarge(
        f"the request body is larger than {SERVE_BODY_LIMIT:,} bytes", hint='send {"url": "postgresql://..."} only'
    )


def _url_of(body: Any) -> str | None:
    if body is None:
        return None
    if not isinstance(body, dict) or set(body) - {"url"}:
        raise RequestRefused(
            "the request body must be a JSON object with one key, url",
            hint='send {"url": "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"}, or no body for a school the '
            "registry lists",
        )
    url = body.get("url")
    if url is not None and not isinstance(url, str):
        raise RequestRefused("url must be a string", hint='e.g. {"url": "postgresql://app@db1:5432/school_a"}')
    return url


def _school(outcome: TenantOutcome) -> dict[str, Any]:
    """The report's school object (report.RunReport.school_dicts)."""
    return {
        "id": outcome.tenant.id,
        "tags": list(outcome.tenant.tags),
        "wave": outcome.wave,
        **outcome.result.to_dict(),
    }


def _school_response(outcome: TenantOutcome) -> Response:
    result = outcome.result
    status = 200 if result.ok else _STATUS_HTTP.get(result.status, 500)
    return JSONResponse(school_dict(outcome), status_code=status)


def _render_dashboard() -> str:
    """The operators' page (dashboard.py); a placeholder until it is there."""
    try:
        module = importlib.import_module(f"{__package__}.dashboard")
    except ImportError:
        return "<!doctype html><title>orchestrator</title><p>The dashboard is not installed; see /v1/fleet.</p>"
    page: str = module.render_dashboard()
    return page


async def _reload_on_sighup(service: Service) -> None:
    import signal

    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            log.info("serve.sighup", message="reading the migrations and the registry again")
            await service.reload(force=True)
