"""The onboarding figure of bench/bench.py: one new school at a time, as the admin service's hook onboards them, in a
project of `--onboarding-migrations` generated files.

- `files`: `provision` applying every file to a new database (engine.provision, in-process);
- `template, spare ready`: `provision --template` with ready copies of the template on the server (what
  `orchestrator template --spares N` keeps, ahead of time and untimed, as the template itself is): a rename;
- `template, copying`: `provision --template` with no spare left: CREATE DATABASE ... TEMPLATE, a copy;
- `bare CREATE DATABASE`: connect to the maintenance database, CREATE DATABASE, close: the floor of any onboarding.
Each path runs in blocks of consecutive onboardings after a CHECKPOINT, the block order rotating; the median per
school is shown. Alongside, as context: the first
onboarding on a server (which builds the template), making one spare, the same call through the Python API
(`orchestrator.provision`, with loading the files and the safety gate), and the bare copy under each CREATE DATABASE
strategy.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from pgutil import checkpoint

import orchestrator
from orchestrator import engine, template
from orchestrator.connection import quote_ident
from orchestrator.devserver import DevServer
from orchestrator.engine import EngineOptions
from orchestrator.outcome import DatabaseResult
from orchestrator.source import load_migrations
from orchestrator.target import DatabaseTarget
from orchestrator.template import STRATEGY

TARGET_FILES_VS_TEMPLATE = 5.0  # provision --template at least 5x faster than applying the files
TARGET_TEMPLATE_VS_BARE = 2.0  # and within 2x of a bare CREATE DATABASE
TEMPLATE_NAME = "bench_school_template"
SPARE, COPY = "template, spare ready", "template, copying"  # the two paths of provision --template
FIRST_VERSION = 20240101000000


def generate_migrations(directory: Path, count: int) -> Path:
    """`count` files of a school schema growing over the years: tables with keys, foreign keys and indexes, columns
    added to earlier tables, views, functions and a few seed rows."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        parts = [
            f"CREATE TABLE t{i} (\n  id bigserial PRIMARY KEY,\n  name text NOT NULL,\n"
            f"  created_at timestamptz NOT NULL DEFAULT now(),\n  score numeric(6,2),\n"
            + (f"  parent_id bigint REFERENCES t{i - 1} (id),\n" if i > 1 else "")
            + f"  CONSTRAINT t{i}_name_not_blank CHECK (name <> '')\n);",
            f"CREATE INDEX t{i}_name_idx ON t{i} (name);",
        ]
        if i % 3 == 0:
            parts.append(f"ALTER TABLE t{i - 2} ADD COLUMN note_{i} text;")
        if i % 5 == 0:
            parts.append(f"CREATE VIEW v{i} AS SELECT id, name FROM t{i} WHERE score IS NOT NULL;")
            parts.append(
                f"CREATE FUNCTION f{i}(x bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT x * {i} $$;"
            )
        if i % 10 == 0:
            parts.append(f"INSERT INTO t{i} (name) SELECT 'seed ' || g FROM generate_series(1, 20) g;")
        (directory / f"{FIRST_VERSION + i}_step_{i}.sql").write_text("\n".join(parts) + "\n")
    return directory


@dataclass
class OnboardingResult:
    migrations: int
    schools: int
    durable: bool
    targeted: bool = True  # the figure the targets are about (the longer history is context)
    runs: dict[str, list[float]] = field(default_factory=dict)  # path -> seconds per school
    context: dict[str, float] = field(default_factory=dict)  # first build, API call, bare copies per strategy
    problems: list[str] = field(default_factory=list)  # onboardings that failed or took another path than timed

    @property
    def ok(self) -> bool:
        return not self.problems

    def note(self, problem: str | None) -> None:
        if problem is not None:
            self.problems.append(problem)

    def median(self, path: str) -> float:
        return statistics.median(self.runs[path])


DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")


async def run_onboarding(
    server: DevServer, workdir: Path, migrations: int, schools: int, *, durable: bool, targeted: bool = True
) -> OnboardingResult:
    """The figure on `server`; `durable`: with fsync, synchronous_commit and full_page_writes on for the run, as on
    a production server (the throwaway server turns them off), and back off afterwards."""
    await _durability(server, durable)
    try:
        result = await _run(server, workdir, migrations, schools, durable)
    finally:
        await _durability(server, False)
    result.targeted = targeted
    return result


async def _durability(server: DevServer, on: bool) -> None:
    conn = await asyncpg.connect(server.url())
    try:
        for name in DURABILITY:
            await conn.execute(f"ALTER SYSTEM SET {name} = on" if on else f"ALTER SYSTEM RESET {name}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def _run(server: DevServer, workdir: Path, migrations: int, schools: int, durable: bool) -> OnboardingResult:
    directory = generate_migrations(workdir / f"onboarding-{migrations}", migrations)
    source = load_migrations(directory)
    options = EngineOptions()
    result = OnboardingResult(migrations, schools, durable)
    # Names of their own per run (durability and project): no run meets another's template or schools.
    run_id = f"{'d' if durable else 'f'}{migrations}"
    name = f"{TEMPLATE_NAME}_{run_id}"
    create_from_template = template.creator(name, source, options)
    counter = iter(range(1_000_000))

    def new_school(path: str) -> DatabaseTarget:
        return DatabaseTarget.parse(server.url(f"onboard_{run_id}_{path}_{next(counter)}"))

    async def by_files() -> str | None:
        return _problem(await engine.provision(new_school("files"), source, options))

    async def by_spare() -> str | None:
        done = await engine.provision(new_school("spare"), source, options, creator=create_from_template)
        return _problem(done, how=SPARE)

    async def by_copy() -> str | None:
        done = await engine.provision(new_school("tpl"), source, options, creator=create_from_template)
        return _problem(done, how=COPY)

    async def bare() -> str | None:
        conn = await asyncpg.connect(server.url())
        try:
            await conn.execute(f"CREATE DATABASE {quote_ident(new_school('bare').database)}")
        finally:
            await conn.close()
        return None

    # The first onboarding on the server builds the template (once per server and release).
    seconds, problem = await _timed(by_copy)
    result.context["first onboarding, builds the template"] = seconds
    result.note(problem)
    paths: list[tuple[str, Callable[[], Awaitable[str | None]]]] = [
        ("files", by_files),
        (SPARE, by_spare),
        (COPY, by_copy),
        ("bare CREATE DATABASE", bare),
    ]
    server_target = DatabaseTarget.parse(server.url())
    making: list[float] = []
    # Each path in blocks of consecutive onboardings, each block after a CHECKPOINT and an OS sync (no path pays
    # for another's writes), the block order rotating. Before the spare path's block, as many spares as it takes
    # are made (untimed, as `orchestrator template` would between onboardings); before the others, none is left.
    blocks = 3
    per_block = -(-schools // blocks)
    for block in range(blocks):
        shift = block % len(paths)
        for path, work in paths[shift:] + paths[:shift]:
            started = time.perf_counter()
            ready = await template.keep_ready(server_target, name, source, options, per_block if path == SPARE else 0)
            result.note(f"keeping spares ready: {ready.error}" if ready.error else None)
            if ready.made:
                making.append((time.perf_counter() - started) / ready.made)
            await _settle(server)
            for _ in range(per_block):
                seconds, problem = await _timed(work)
                result.runs.setdefault(path, []).append(seconds)
                result.note(problem)

    api: list[float] = []
    for _ in range(max(1, schools // 2)):
        url = new_school("api").dsn
        started = time.perf_counter()
        done = await orchestrator.provision_async(url, migrations=directory, template=name, allow_unsafe=True)
        api.append(time.perf_counter() - started)
        result.note(_problem(done, how=COPY))
    result.context["orchestrator.provision(template=...), with loading the files and the gate"] = statistics.median(api)
    result.context["making one spare (orchestrator template, ahead of time)"] = statistics.median(making)
    for strategy in ("WAL_LOG", "FILE_COPY"):
        copies = [new_school(f"copy_{strategy.lower()}").database for _ in range(5)]
        result.context[copy_alone(strategy)] = await _bare_copies(server, name, strategy, copies)
    return result


def copy_alone(strategy: str) -> str:
    return f"CREATE DATABASE ... TEMPLATE STRATEGY {strategy} alone"


async def _settle(server: DevServer) -> None:
    await checkpoint(server)
    os.sync()


async def _timed(work: Callable[[], Awaitable[str | None]]) -> tuple[float, str | None]:
    started = time.perf_counter()
    problem = await work()
    return time.perf_counter() - started, problem


def _problem(done: DatabaseResult, *, how: str | None = None) -> str | None:
    """Why an onboarding does not count for its path: it failed, or a template onboarding applied files or took
    another path than `how` (a spare or a copy)."""
    if not done.ok:
        return f"{done.database}: {done.status.value}: {done.error.message if done.error else ''}"
    if how is None:
        return None
    said = {SPARE: "from a ready copy (", COPY: "from template "}[how]
    if done.applied_versions or not any(said in note for note in done.notes):
        return f"{done.database}: not {how}: {'; '.join(done.notes)}"
    return None


async def _bare_copies(server: DevServer, name: str, strategy: str, copies: list[str]) -> float:
    conn = await asyncpg.connect(server.url())
    try:
        times = []
        for copy in copies:
            started = time.perf_counter()
            await conn.execute(f"CREATE DATABASE {copy} TEMPLATE {name} STRATEGY {strategy}")
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        await conn.close()


def report_lines(result: OnboardingResult) -> list[str]:
    """The figures, their ratios (same run) and the targets, as printed lines. The targets are about onboarding as
    shipped: `orchestrator template` keeps spares ready, `provision --template` takes one; the copy (no spare left)
    is shown beside them with its own ratios."""
    files, spare, copying, bare = (result.median(p) for p in ("files", SPARE, COPY, "bare CREATE DATABASE"))
    durability = (
        "fsync, synchronous_commit and full_page_writes on, as in production"
        if result.durable
        else "the throwaway server's fsync off: commits and checkpoints cost next to nothing"
    )
    lines = [
        f"onboarding one school, {result.migrations} migrations (median of {result.schools}, one at a time; "
        f"{durability}):"
    ]
    for path, seconds in (("files", files), (SPARE, spare), (COPY, copying), ("bare CREATE DATABASE", bare)):
        lines.append(f"  {path:<22} {seconds * 1000:8.1f} ms")
    speedup, vs_bare = files / spare, spare / bare
    if result.targeted:
        verdict = {True: "met", False: "MISSED"}
        lines.append(
            f"  target: files / template (spare ready) = {speedup:.1f}x (>= {TARGET_FILES_VS_TEMPLATE:.0f}x): "
            f"{verdict[speedup >= TARGET_FILES_VS_TEMPLATE]}"
        )
        lines.append(
            f"  target: template (spare ready) / bare CREATE DATABASE = {vs_bare:.2f}x "
            f"(<= {TARGET_TEMPLATE_VS_BARE:.0f}x): {verdict[vs_bare <= TARGET_TEMPLATE_VS_BARE]}"
        )
    else:
        lines.append(f"  files / template (spare ready) = {speedup:.1f}x, / bare CREATE DATABASE = {vs_bare:.2f}x")
    lines.append(
        f"  no spare left (copying): files / template = {files / copying:.1f}x, template / bare CREATE DATABASE = "
        f"{copying / bare:.2f}x"
    )
    copy = result.context.get(copy_alone(STRATEGY))
    if copy:
        # The copy statement alone bounds every onboarding that copies the template: its cost follows the template's
        # size (the schema's tables, indexes, sequences and their catalog rows on top of template1's) and the disk.
        lines.append(
            f"  ceiling of copying: files / the copy statement alone = {files / copy:.1f}x (the copy alone is "
            f"{copy / bare:.2f}x a bare CREATE DATABASE); a spare is renamed, not copied"
        )
    for what, seconds in result.context.items():
        lines.append(f"  context: {what}: {seconds * 1000:.1f} ms")
    if result.problems:
        lines.append(f"  NOT OK: {len(result.problems)} onboarding(s) failed or took another path than timed, e.g.")
        lines.append(f"    {result.problems[0]}")
    return lines
