"""The service's Prometheus metrics (GET /metrics), in a registry of its own: onboardings by outcome and path, their
latency, spares ready per server, the fleet survey's age and its version histogram. Labels are statuses, paths,
versions and `host:port`: never a URL, never a password."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from .state import Onboarding

# Onboarding from a spare takes milliseconds; from files, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.onboardings = Counter(
            "orchestrator_onboardings",
            "Onboardings (PUT /v1/schools/{id}) by outcome (the school's status) and path (spare, template, files, "
            "existing).",
            ["outcome", "path"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "orchestrator_onboarding_seconds",
            "Time to onboard one school, by path.",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.spares_ready = Gauge(
            "orchestrator_spares_ready", "Ready copies of the template, per server.", ["server"], registry=self.registry
        )
        self.survey_age = Gauge(
            "orchestrator_fleet_survey_age_seconds",
            "Seconds since the last fleet survey finished (-1: none yet).",
            registry=self.registry,
        )
        self.surveyed_at: float | None = None  # time.monotonic() of the last survey
        self.survey_age.set_function(self._survey_age)
        self.fleet = Gauge(
            "orchestrator_fleet_schools",
            'Schools at each version in the last survey (version "none": no history).',
            ["version"],
            registry=self.registry,
        )

    def onboarded(self, onboarding: Onboarding, *, ok: bool) -> None:
        self.onboardings.labels(onboarding.status, onboarding.path).inc()
        if ok:
            self.latency.labels(onboarding.path).observe(onboarding.ms / 1000)

    def spares(self, server: str, ready: int) -> None:
        self.spares_ready.labels(server).set(ready)

    def surveyed(self, histogram: Iterable[tuple[int | None, int]]) -> None:
        self.surveyed_at = time.monotonic()
        self.fleet.clear()
        for version, schools in histogram:
            self.fleet.labels("none" if version is None else str(version)).set(schools)

    def _survey_age(self) -> float:
        return -1.0 if self.surveyed_at is None else time.monotonic() - self.surveyed_at

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
