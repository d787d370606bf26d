"""The JSON report is streamed school by school; what it says must equal the report's own values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.errors import MigrationFailed
from orchestrator.fleet import FleetRun, TenantOutcome
from orchestrator.outcome import DatabaseResult, MigrationStep, Status
from orchestrator.output_files import write_atomically
from orchestrator.registry import single_tenant
from orchestrator.report import RunReport, read_previous_run


def sample_report(schools: int) -> RunReport:
    outcomes = []
    for i in range(schools):
        tenant = single_tenant(f"postgresql://app:s3cret@db{i % 3}:5432/school_{i}")
        result = DatabaseResult(tenant.target.database, tenant.server, Status.APPLIED, None, 2, [
            MigrationStep(1, "one", "up", 0.01), MigrationStep(2, "two \"quoted\"", "up", 0.02)
        ])  # fmt: skip
        if i % 4 == 3:
            result.status = Status.FAILED
            result.error = MigrationFailed("2_two.sql:3: boom", version=2, file="2_two.sql", line=3, sqlstate="42P07")
        outcomes.append(TenantOutcome(tenant, result, "main"))
    now = datetime.now(UTC)
    return RunReport("migrate", FleetRun(outcomes, now, now), "migrations", 2)


def test_the_streamed_json_equals_the_report_values(tmp_path: Path) -> None:
    for schools in (0, 1, 9):
        report = sample_report(schools)
        write_atomically(tmp_path / "r.json", report.json_chunks())
        text = (tmp_path / "r.json").read_text()
        assert json.loads(text) == json.loads(json.dumps(report.to_dict()))
        assert "s3cret" not in text
        assert text.count('\n    {"id": ') == schools, "one school per line"


def test_resume_reads_the_schools_that_did_not_end_ok(tmp_path: Path) -> None:
    write_atomically(tmp_path / "r.json", sample_report(8).json_chunks())
    assert read_previous_run(tmp_path / "r.json").not_ok == {"school_3", "school_7"}
