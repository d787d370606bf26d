"""Each server's spares kept topped up in the background (--spares N): `orchestrator template --spares N`'s own run
(`template_fleet.keep_templates`, through the runner) over every school the service knows, at start, after an
onboarding used a spare (or copied the template), and every --survey-every. Cancelled at shutdown: a spare
half-made is dropped (scratch.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio

from ..command import Command
from ..errors import InvalidInput
from ..job import for_schools
from ..logsetup import get_logger
from ..runner import run_any
from ..spare_seals import remembering
from ..template_fleet import TemplateReport
from .state import ServerHealth, Service

log = get_logger("orchestrator.serve")


async def keep_spares(service: Service) -> None:
    while True:
        service.refill = anyio.Event()  # before the pass: an onboarding during it asks for the next one
        try:
            await top_up(service)
        except Exception as exc:  # one pass failing as a whole; a server's failure is in its ServerTemplate
            log.error("serve.spares_failed", error=str(exc))
        with anyio.move_on_after(service.survey_every):
            await service.refill.wait()


async def top_up(service: Service) -> None:
    try:
        with remembering(service.seals):  # each spare made (or read) sealed: onboardings take it unread
            report = await run_any(for_schools(service.ready_job, service.tenants, (), Command.TEMPLATE))
    except InvalidInput:
        return  # no school onboards from a template: no spares to keep
    assert isinstance(report, TemplateReport)
    now = datetime.now(UTC)
    for server in report.servers:
        health = service.servers.setdefault(server.server, ServerHealth())
        health.template = server.template
        if server.ok:
            service.heard(server.server, now, None)
            health.spares_ready = server.spares
            service.metrics.spares(server.server, server.spares)
        else:
            health.error = server.error
