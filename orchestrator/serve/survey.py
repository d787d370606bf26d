"""The fleet survey behind GET /v1/fleet: `status` over every school the service knows, kept no older than
--survey-every (a background loop), made again on demand (`?refresh=1`), one at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from ..logsetup import get_logger
from ..report import RunReport
from .state import Service

log = get_logger("orchestrator.serve")


@dataclass(frozen=True)
class FleetSurvey:
    at: datetime  # when it finished
    monotonic: float
    report: RunReport

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.monotonic


class Surveyor:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.latest: FleetSurvey | None = None
        self._lock = anyio.Lock()

    async def fresh(self, *, refresh: bool = False) -> FleetSurvey:
        """The last survey if younger than --survey-every (and not `refresh`), else a new one. Requests that arrive
        while one is made share it."""
        asked = time.monotonic()
        latest = self.latest
        if latest is not None and not refresh and latest.age_s < self.service.survey_every:
            return latest
        async with self._lock:
            latest = self.latest
            if latest is not None and latest.monotonic >= asked:  # made while this request waited: new enough
                return latest
            report = await self.service.survey()
            self.latest = FleetSurvey(datetime.now(UTC), time.monotonic(), report)
            self.service.metrics.surveyed(report.version_histogram())
            return self.latest

    async def keep_fresh(self) -> None:
        """The background loop: a survey at start, then whenever the last one reaches --survey-every."""
        while True:
            try:
                survey = await self.fresh()
                wait = self.service.survey_every - survey.age_s
            except Exception as exc:  # a survey that failed as a whole (not a school's failure: those are values)
                log.error("serve.survey_failed", error=str(exc))
                wait = min(self.service.survey_every, 30.0)
            await anyio.sleep(max(wait, 1.0))

    def ready_problems(self) -> list[str]:
        """Why the service is not ready: no files loaded, a refused reload, a server not heard from recently."""
        service, problems = self.service, []
        if service.job is None:
            problems.append("the migrations and the registry are not loaded")
        if service.source_error is not None:
            problems.append(f"the migrations or the registry were refused: {service.source_error.code}")
        recently = datetime.now(UTC) - timedelta(seconds=2 * service.survey_every)
        for server, health in sorted(service.servers.items()):
            if health.last_answer_at is None or health.last_answer_at < recently:
                problems.append(f"no answer from {server} " + ("yet" if health.last_answer_at is None else "recently"))
        return problems


def fleet_json(survey: FleetSurvey, service: Service) -> dict[str, Any]:
    """GET /v1/fleet (the dashboard's data; docs/serve.md has the shape)."""
    report = survey.report
    recently = datetime.now(UTC) - timedelta(seconds=2 * service.survey_every)
    servers = []
    for server, health in sorted(service.servers.items()):
        answered = health.last_answer_at
        servers.append(
            {
                "server": server,
                "healthy": health.error is None and answered is not None and answered >= recently,
                "last_answer_at": answered.isoformat() if answered else None,
                "spares_ready": health.spares_ready,
                "template": health.template,
                "error": health.error,
            }
        )
    schools = []
    for o in report.outcomes:
        r = o.result
        schools.append(
            {
                "tenant": o.tenant.id,
                "server": r.server,
                "status": r.status.value,
                "ok": r.ok,
                "version": r.version_after,
                "pending": len(r.pending),
                "message": r.error.message if r.error else None,
                "hint": r.error.hint if r.error else None,
            }
        )
    return {
        "surveyed_at": survey.at.isoformat(),
        "age_s": round(survey.age_s, 3),
        "latest_version": service.ready_job.source.latest,
        "histogram": [{"version": v, "schools": n} for v, n in report.version_histogram()],
        "servers": servers,
        "schools": schools,
        "onboardings": [o.to_dict() for o in service.onboardings],
    }
