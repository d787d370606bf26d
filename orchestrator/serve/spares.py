"""Each server's spares kept topped up in the background (--spares N): `template.keep_ready` per (server, template,
extensions) group, as `orchestrator template --spares N` does, at start, after an onboarding used a spare (or copied
the template), and every --survey-every. Cancelled at shutdown: a spare half-made is dropped (scratch.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio

from ..command import Command
from ..errors import InvalidInput
from ..job import for_schools
from ..logsetup import get_logger
from ..template import keep_ready
from ..template_fleet import TemplateGroup, template_groups
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
    job = service.ready_job
    try:
        template_job = for_schools(job, service.tenants, (), Command.TEMPLATE)
        groups = template_groups(template_job)
    except InvalidInput:
        return  # no school onboards from a template: no spares to keep

    async def keep(group: TemplateGroup) -> None:
        first = group.tenants[0]
        options = template_job.engine_options(first)
        result = await keep_ready(first.target, group.template, job.source, options, service.request.spares)
        health = service.servers.setdefault(group.server, ServerHealth())
        health.template = group.template
        if result.ok:
            service.heard(group.server, datetime.now(UTC), None)
            health.spares_ready = result.spares
            service.metrics.spares(group.server, result.spares)
        else:
            health.error = result.error

    async with anyio.create_task_group() as tg:
        for group in groups:
            tg.start_soon(keep, group)
