"""The service's warm state in-process (orchestrator/serve/state.py), against a real server: the path each onboarding
took (a spare, a copy of the template, the files, an existing school), the per-school locks gone once used, and the
recent onboardings newest first."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from fleetkit import cli, make_migrations, registry_url, write_registry
from pgfixtures import (
    PG_PASSWORD,
    database_exists,
    drop_database,
    drop_template,
    run_sync,
    unique_db_name,
)

from orchestrator.command import Command
from orchestrator.devserver import DevServer
from orchestrator.errors import SchoolConflict
from orchestrator.job import Request
from orchestrator.registry import caller_tenant
from orchestrator.serve.state import Service, service_request


@pytest.fixture
def template(pg: DevServer) -> Iterator[str]:
    name = unique_db_name("statetpl")
    yield name
    drop_template(pg.url(), name)


def service(tmp_path: Path, pg: DevServer, defaults: str = "") -> Service:
    os.environ["PGPW"] = PG_PASSWORD
    migrations = make_migrations(tmp_path / "migrations")
    registry = write_registry(
        tmp_path / "tenants.yaml", [("listed", registry_url(pg, "state_never_made"), [])], defaults=defaults
    )
    request = Request(Command.PROVISION, migrations=(migrations,), registry=registry)
    made = Service(service_request(request, spares=0, survey_every=60), survey_every=60)
    made.load()
    return made


def test_each_path_is_told_apart(tmp_path: Path, pg: DevServer, template: str) -> None:
    svc = service(tmp_path, pg, f"defaults:\n  template: {template}\n")
    registry = tmp_path / "tenants.yaml"
    made = cli("template", "--registry", str(registry), "--migrations", str(tmp_path / "migrations"), "--spares", "1",
               "--yes")  # fmt: skip
    assert made.returncode == 0, made.stderr
    names = [unique_db_name("state_path") for _ in range(2)]

    async def main() -> list[str]:
        paths = []
        for i, name in enumerate([names[0], names[1], names[1]]):
            outcome = await svc.onboard(caller_tenant(f"p{min(i, 1)}", pg.url(name), "test"))
            assert outcome.result.ok, outcome.result
            paths.append(svc.onboardings[0].path)
        svc.kept.close()  # on the loop that opened them
        return paths

    try:
        assert anyio.run(main) == ["spare", "template", "existing"]
        assert [o.tenant for o in svc.onboardings] == ["p1", "p1", "p0"]
    finally:
        for name in names:
            run_sync(drop_database(pg.url(), name))


def test_two_onboardings_of_one_school_share_a_lock_that_goes_away(tmp_path: Path, pg: DevServer) -> None:
    svc = service(tmp_path, pg)  # no template: the files
    name = unique_db_name("state_twice")
    tenant = caller_tenant("twice", pg.url(name), "test")
    results = []

    async def main() -> None:
        async def one() -> None:
            results.append((await svc.onboard(tenant)).result)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        svc.kept.close()

    try:
        anyio.run(main)
        assert sorted(r.status.value for r in results) == ["applied", "up_to_date"]
        assert sorted(o.path for o in svc.onboardings) == ["existing", "files"]
        assert svc._school_locks == {}
        assert "twice" in svc.extra  # known from now on
    finally:
        run_sync(drop_database(pg.url(), name))


def test_one_database_under_two_ids_at_once_is_refused(tmp_path: Path, pg: DevServer) -> None:
    svc = service(tmp_path, pg)
    name, other = unique_db_name("state_claim"), unique_db_name("state_claim")
    outcomes: dict[str, object] = {}

    async def main() -> None:
        async def one(tenant_id: str, database: str) -> None:
            try:
                outcomes[tenant_id] = (await svc.onboard(caller_tenant(tenant_id, pg.url(database), "test"))).result
            except SchoolConflict as error:
                outcomes[tenant_id] = error

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "first", name)
            tg.start_soon(one, "second", name)  # the same database under another id
            tg.start_soon(one, "first", other)  # the same id on another database
        svc.kept.close()

    try:
        anyio.run(main)
        assert isinstance(outcomes["second"], SchoolConflict)
        assert [o.tenant for o in svc.onboardings] == ["first"]
        assert not run_sync(database_exists(pg.url(), other))
        assert svc._claims == {}
    finally:
        run_sync(drop_database(pg.url(), name))
        run_sync(drop_database(pg.url(), other))
