"""Benchmark: the orchestrator against the real `sqlx` CLI and a plain asyncpg floor, plus a simulated 100k fleet.

Run it with `make bench` or `.venv/bin/python bench/bench.py` (see bench/README.md for what each figure means).
It starts its own throwaway PostgreSQL server in a temporary directory, creates the school databases it needs
from a template that already has uuid-ossp, times each tool on the same work, and removes everything on the way
out (also on Ctrl-C / SIGTERM). It prints figures and the targets they are measured against; it never fails on a
figure: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import asyncpg
import uvloop
from onboarding import OnboardingResult, report_lines, run_onboarding
from pgutil import checkpoint

from orchestrator import eventloop, scram, sqlx
from orchestrator.command import Command
from orchestrator.connection import quote_ident
from orchestrator.devserver import DevServer, DevServerError, create_server, free_port
from orchestrator.fleet import FleetOptions, TenantOutcome, run_fleet
from orchestrator.job import Request, prepare
from orchestrator.lint import lint_paths
from orchestrator.logsetup import configure_logging
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.registry import Tenant, load_registry
from orchestrator.report import RunReport
from orchestrator.runner import run
from orchestrator.settings import Budgets, SchoolSettings
from orchestrator.source import Migration, MigrationSource, load_migrations
from orchestrator.target import DatabaseTarget

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
BIN = Path(sys.executable).parent
PASSWORD_VAR = "BENCH_PG_PASSWORD"
TEMPLATE_DB = "bench_template"

# Targets the figures are compared with (printed, never asserted).
TARGET_COLD_VS_FLOOR = 1.2  # cold rollout at most 1.2x the asyncpg floor
TARGET_STATUS_VS_SQLX = 2.0  # `status` at least 2x faster than xargs -P C `sqlx migrate info`
TARGET_SIM_US_PER_SCHOOL = 50.0  # scheduling overhead per school, zero-latency work
TARGET_SIM_PEAK_MB = 300.0  # peak RSS of a 100k-school run
TARGET_CREATE_VS_FLOOR = 1.2  # new schools in one pass (migrate --create-missing) at most 1.2x the floor
TARGET_STATUS_VS_FLOOR = 1.15  # `status` at most 1.15x the asyncpg floor
TARGET_STARTUP_S = 0.2  # `orchestrator --version`

PHASE_COLD = "cold migrate"
PHASE_CREATE = "new schools, one pass"  # migrate --create-missing: database, extension, history, files
PHASE_NOOP = "migrate, nothing pending"
PHASE_STATUS = "status"
PHASE_AUDIT_HISTORY = "audit --no-schema"
PHASE_AUDIT = "audit (with schema)"
TOOL_CLI = "orchestrator CLI (subprocess)"
TOOL_INPROC = "orchestrator in-process"
TOOL_FLOOR = "asyncpg floor"
# Context only (ratios stay to the asyncio floor): the same floor on uvloop, the loop the orchestrator's CLI runs on.
TOOL_FLOOR_UVLOOP = "asyncpg floor on uvloop"


def tool_sqlx(concurrency: int) -> str:
    return f"sqlx CLI, xargs -P{concurrency}"


# --- small helpers -------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One timed run of one tool on one phase."""

    phase: str
    tool: str
    seconds: float
    schools: int
    ok: bool = True
    note: str = ""
    runs: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.schools / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Timed:
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def run_timed(cmd: Sequence[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> Timed:
    """Run a command to completion, wall-clock timed. On Ctrl-C its whole process group is killed, so nothing
    (an xargs and its sqlx children, a simulation child) outlives the benchmark."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return Timed(time.perf_counter() - started, proc.returncode, out, err)


def tail(text: str, lines: int = 8) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def orchestrator_exe() -> str:
    exe = BIN / "orchestrator"
    return str(exe) if exe.exists() else shutil.which("orchestrator") or "orchestrator"


def sqlx_exe() -> str | None:
    exe = BIN / "sqlx"
    return str(exe) if exe.exists() else shutil.which("sqlx")


def say(text: str = "") -> None:
    print(text, flush=True)


def mb(kib: float) -> float:
    return kib / 1024


# --- the throwaway server and the school databases ------------------------------------------------------------------


@dataclass
class SchoolSet:
    """N school databases made for one tool's cold run (then reused read-only by the warm phases)."""

    name: str
    databases: list[str]
    registry: Path

    def urls(self, server: DevServer) -> list[str]:
        return [server.url(db) for db in self.databases]


def start_server(workdir: Path, password: str, concurrency: int) -> DevServer:
    # Every tool opens at most `concurrency` sessions; the creation pool and the checks add a few.
    max_connections = max(100, 2 * concurrency + 40)
    datadir = workdir / "pg"
    server = create_server(datadir, password=password, max_connections=max_connections)
    try:
        server.start()
    except DevServerError:
        # The free port can be taken between choosing it and binding it: once more, on another port.
        server = create_server(datadir, port=free_port(), password=password, max_connections=max_connections)
        server.start()
    asyncio.run(_autovacuum_off(server))
    return server


async def _autovacuum_off(server: DevServer) -> None:
    """With 4 x --schools databases, the autovacuum launcher starts a worker every 60 s / databases (15 ms at 1,000
    schools), each a new backend on the bench's two cores: a background load that lands on whichever tool is timed.
    The benchmark's databases never need vacuuming while it runs."""
    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute("ALTER SYSTEM SET autovacuum = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def create_template(server: DevServer) -> None:
    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(f"CREATE DATABASE {quote_ident(TEMPLATE_DB)}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(server.url(TEMPLATE_DB))
    try:
        # What the admin side sets up before a school's first migration: the extension, nothing else.
        await conn.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"')
    finally:
        await conn.close()


async def execute_each(server: DevServer, statements: Sequence[str], parallel: int) -> None:
    """Run each statement on its own pooled session, `parallel` at a time (CREATE/DROP DATABASE cannot share one)."""
    pool = await asyncpg.create_pool(server.url(), min_size=1, max_size=parallel)
    try:

        async def one(statement: str) -> None:
            async with pool.acquire() as conn:
                await conn.execute(statement)

        await asyncio.gather(*(one(sql) for sql in statements))
    finally:
        await pool.close()


async def create_databases(server: DevServer, names: Sequence[str], parallel: int) -> None:
    """CREATE DATABASE ... TEMPLATE, in parallel. FILE_COPY is about twice as fast as WAL_LOG for a tiny template."""
    template = quote_ident(TEMPLATE_DB)
    statements = [f"CREATE DATABASE {quote_ident(n)} TEMPLATE {template} STRATEGY FILE_COPY" for n in names]
    await execute_each(server, statements, parallel)


async def drop_databases(server: DevServer, names: Sequence[str], parallel: int) -> None:
    await execute_each(server, [f"DROP DATABASE IF EXISTS {quote_ident(n)}" for n in names], parallel)


def write_registry(path: Path, server: DevServer, set_name: str, databases: Sequence[str], per_server: int) -> None:
    lines = [
        f"# Written by bench/bench.py for the `{set_name}` set; the password comes from ${{{PASSWORD_VAR}}}.",
        "defaults:",
        "  extensions: [uuid-ossp]",
        f"  per_server: {per_server}",
        "tenants:",
    ]
    for db in databases:
        lines.append(f"  - id: {db.replace('_', '-')}")
        lines.append(f"    url: postgresql://postgres:${{{PASSWORD_VAR}}}@{server.host}:{server.port}/{db}")
    path.write_text("\n".join(lines) + "\n")


async def history_matches(urls: Sequence[str], source: MigrationSource, parallel: int) -> int:
    """How many databases hold exactly the history SQLx would write: version, description, success, checksum."""
    expected = [(m.version, m.description, True, m.checksum) for m in source]
    sem = asyncio.Semaphore(parallel)

    async def one(url: str) -> bool:
        async with sem:
            conn = await asyncpg.connect(url)
            try:
                rows = await conn.fetch(
                    "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version"
                )
            except asyncpg.UndefinedTableError:
                return False
            finally:
                await conn.close()
            return [(r["version"], r["description"], r["success"], bytes(r["checksum"])) for r in rows] == expected

    return sum(await asyncio.gather(*(one(u) for u in urls)))


# --- the tools ------------------------------------------------------------------------------------------------------


def cli_run(command: str, registry: Path, concurrency: int, env: dict[str, str], extra: Sequence[str] = ()) -> Timed:
    # --yes: a script's confirmation of a write over the whole registry (status takes no such flag).
    confirm = ["--yes"] if command == "migrate" else []
    return run_timed(
        [
            orchestrator_exe(), command, "--registry", str(registry), "--migrations", str(MIGRATIONS),
            "--concurrency", str(concurrency), "--per-server", str(concurrency), "--no-progress", *confirm, *extra,
        ],
        env=env,
    )  # fmt: skip


# prepare() times of the in-process runs, by command: registry load and validation, plus the safety gate for migrate.
PREPARE_TIMES: dict[str, list[float]] = {}


def inprocess_run(command: Command, registry: Path, concurrency: int) -> tuple[float, bool, str]:
    """The same work as the CLI, minus interpreter start-up, imports and rendering: prepare() + run()."""
    started = time.perf_counter()
    request = Request(
        command=command,
        migrations=MIGRATIONS,
        registry=registry,
        budgets=Budgets(concurrency=concurrency),
        school=SchoolSettings(per_server=concurrency),
    )
    job = prepare(request)
    PREPARE_TIMES.setdefault(command.value, []).append(time.perf_counter() - started)
    report = eventloop.run(run, job)
    elapsed = time.perf_counter() - started
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts().items()))
    return elapsed, report.ok, counts


def sqlx_run(
    args: Sequence[str], urls: Sequence[str], concurrency: int, env: dict[str, str], source: Path = MIGRATIONS
) -> Timed:
    """`xargs -P C` running one `sqlx migrate ...` per database, the way an operator would script it."""
    exe = sqlx_exe()
    assert exe is not None
    cmd = ["xargs", "-P", str(concurrency), "-I", "{}", exe, "migrate", *args]
    cmd += ["--source", str(source), "--no-dotenv", "-D", "{}"]
    return run_timed(cmd, stdin="\n".join(urls) + "\n", env=env)


async def floor_migrate(url: str, database: str, migrations: Sequence[Migration], *, extension: bool = False) -> None:
    """One school, the least a correct rollout does: (the extension,) the lock, the history table, each file with
    its row in one transaction, the unlock."""
    conn = await asyncpg.connect(url)
    try:
        if extension:
            await conn.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"')
        key = sqlx.advisory_lock_key(database)
        await conn.execute("SELECT pg_advisory_lock($1)", key)
        await conn.execute(sqlx.CREATE_HISTORY_TABLE)
        for m in migrations:
            async with conn.transaction():
                await conn.execute(m.up_sql)
                await conn.execute(sqlx.INSERT_APPLIED, m.version, m.description, m.checksum)
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
    finally:
        await conn.close()


async def floor_cold(urls: Sequence[str], databases: Sequence[str], source: MigrationSource, concurrency: int) -> None:
    """The least work a correct rollout can do, on existing databases."""
    sem = asyncio.Semaphore(concurrency)
    migrations: list[Migration] = list(source)

    async def one(url: str, database: str) -> None:
        async with sem:
            await floor_migrate(url, database, migrations)

    await asyncio.gather(*(one(u, d) for u, d in zip(urls, databases, strict=True)))


async def floor_create(
    server: DevServer, urls: Sequence[str], databases: Sequence[str], source: MigrationSource, concurrency: int
) -> None:
    """The least work that creates a new school and migrates it: CREATE DATABASE through `postgres`, then the
    extension and the rollout over one connection to the school."""
    sem = asyncio.Semaphore(concurrency)
    migrations: list[Migration] = list(source)

    async def one(url: str, database: str) -> None:
        async with sem:
            maintenance = await asyncpg.connect(server.url())
            try:
                await maintenance.execute(f"CREATE DATABASE {quote_ident(database)}")
            finally:
                await maintenance.close()
            await floor_migrate(url, database, migrations, extension=True)

    await asyncio.gather(*(one(u, d) for u, d in zip(urls, databases, strict=True)))


async def floor_read(urls: Sequence[str], concurrency: int) -> None:
    """The least work a status (or a no-op migrate) can do: connect, read the history, close."""
    sem = asyncio.Semaphore(concurrency)

    async def one(url: str) -> None:
        async with sem:
            conn = await asyncpg.connect(url)
            try:
                await conn.fetch("SELECT version, checksum, success FROM _sqlx_migrations")
            finally:
                await conn.close()

    await asyncio.gather(*(one(u) for u in urls))


def timed_async(
    fn: Callable[[], Awaitable[None]], *, run: Callable[[Coroutine[Any, Any, None]], object] = asyncio.run
) -> float:
    """Seconds a floor `fn()` takes on a new event loop (asyncio's, or `run=uvloop.run`), on plain asyncpg."""
    with scram.plain_asyncpg():  # the orchestrator's SCRAM memo out: importing it put it in this process
        started = time.perf_counter()
        run(_call(fn))
        return time.perf_counter() - started


async def _call(fn: Callable[[], Awaitable[None]]) -> None:
    await fn()


# --- the database benchmark -----------------------------------------------------------------------------------------


@dataclass
class DbBench:
    server: DevServer
    workdir: Path
    schools: int
    concurrency: int
    repeat: int
    cold_rounds: int
    with_sqlx: bool
    source: MigrationSource
    env: dict[str, str]
    figures: list[Figure] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def make_set(self, name: str) -> SchoolSet:
        databases = [f"bench_{name}_{i:05d}" for i in range(1, self.schools + 1)]
        registry = self.workdir / f"tenants-{name}.yaml"
        write_registry(registry, self.server, name, databases, self.concurrency)
        return SchoolSet(name, databases, registry)

    def record(self, figure: Figure) -> None:
        self.figures.append(figure)
        flag = "" if figure.ok else "  NOT OK"
        note = f"  ({figure.note})" if figure.note else ""
        say(f"  {figure.phase:<26} {figure.tool:<32} {figure.seconds:8.2f} s{flag}{note}")

    def verify(self, school_set: SchoolSet, tool: str) -> bool:
        good = asyncio.run(history_matches(school_set.urls(self.server), self.source, self.concurrency))
        if good != self.schools:
            say(f"    ! {tool}: only {good}/{self.schools} databases hold the expected SQLx history")
        return good == self.schools

    def run(self) -> None:
        asyncio.run(create_template(self.server))
        self.facts["cli_startup_s"] = round(
            statistics.median(run_timed([orchestrator_exe(), "--version"]).seconds for _ in range(3)), 3
        )
        say(
            f"cold rollout: {self.schools} databases holding only the extension, concurrency {self.concurrency}; "
            f"{self.cold_rounds} round(s), fresh databases each round, tool order rotated"
        )
        cli_set = self.cold()
        say()
        say(f"new schools in one pass: {self.schools} databases that do not exist yet (migrate --create-missing)")
        self.create_missing()
        say()
        say(f"warm phases on the `cli` set (migrated by the orchestrator), median of {self.repeat} runs each")
        self.warm(cli_set)

    def fresh_set(self, name: str) -> SchoolSet:
        """Drop the set if a previous round left it, create it again from the template, flush everything."""
        school_set = self.make_set(name)
        asyncio.run(drop_databases(self.server, school_set.databases, max(self.concurrency, 8)))
        started = time.perf_counter()
        asyncio.run(create_databases(self.server, school_set.databases, max(self.concurrency, 8)))
        self.facts["create_databases_s"] = self.facts.get("create_databases_s", 0.0) + time.perf_counter() - started
        return school_set

    def settle(self) -> None:
        """Before a cold run: PostgreSQL's dirty buffers and the kernel's dirty pages (the copied databases) are
        written out now, so no tool pays for the previous step's writes."""
        asyncio.run(checkpoint(self.server))
        os.sync()

    def cold(self) -> SchoolSet:
        n, c = self.schools, self.concurrency
        tools = [TOOL_FLOOR, TOOL_INPROC, TOOL_CLI] + ([tool_sqlx(c)] if self.with_sqlx else [])
        set_of = {TOOL_FLOOR: "floor", TOOL_INPROC: "inproc", TOOL_CLI: "cli", tool_sqlx(c): "sqlx"}
        runs: dict[str, list[tuple[float, bool, str]]] = {tool: [] for tool in tools}
        cli_set: SchoolSet | None = None
        for round_no in range(self.cold_rounds):
            order = tools[round_no % len(tools) :] + tools[: round_no % len(tools)]
            for tool in order:
                s = self.fresh_set(set_of[tool])
                self.settle()
                note = ""
                if tool == TOOL_FLOOR:
                    seconds = timed_async(
                        functools.partial(floor_cold, s.urls(self.server), s.databases, self.source, c)
                    )
                    ok = True
                elif tool == TOOL_INPROC:
                    seconds, ok, note = inprocess_run(Command.MIGRATE, s.registry, c)
                elif tool == TOOL_CLI:
                    timed = cli_run("migrate", s.registry, c, self.env)
                    seconds, ok = timed.seconds, timed.returncode == 0
                    note = "" if ok else f"exit {timed.returncode}\n{tail(timed.stdout + timed.stderr)}"
                    cli_set = s
                else:
                    timed = sqlx_run(["run"], s.urls(self.server), c, self.env)
                    seconds, ok = timed.seconds, timed.returncode == 0
                    note = "" if ok else f"exit {timed.returncode}\n{tail(timed.stderr)}"
                ok = self.verify(s, tool) and ok
                runs[tool].append((seconds, ok, "" if ok else note))
                say(f"  round {round_no + 1}: {tool:<32} {seconds:8.2f} s{'' if ok else '  NOT OK'}")
                if not ok and note:
                    say(note)
        for tool in tools:
            times = [r[0] for r in runs[tool]]
            ok = all(r[1] for r in runs[tool])
            note = next((r[2].splitlines()[0] for r in runs[tool] if r[2]), "")
            self.figures.append(Figure(PHASE_COLD, tool, statistics.median(times), n, ok, note, times))
        assert cli_set is not None
        return cli_set

    def create_missing(self) -> None:
        """`migrate --create-missing` on schools whose databases do not exist, against the floor's least work."""
        n, c = self.schools, self.concurrency
        runs: dict[str, list[tuple[float, bool]]] = {TOOL_FLOOR: [], TOOL_CLI: []}
        for round_no in range(self.cold_rounds):
            for tool in [TOOL_FLOOR, TOOL_CLI][round_no % 2 :] + [TOOL_FLOOR, TOOL_CLI][: round_no % 2]:
                s = self.make_set("new_floor" if tool == TOOL_FLOOR else "new_cli")
                asyncio.run(drop_databases(self.server, s.databases, max(c, 8)))
                self.settle()
                if tool == TOOL_FLOOR:
                    urls = s.urls(self.server)
                    seconds = timed_async(
                        functools.partial(floor_create, self.server, urls, s.databases, self.source, c)
                    )
                    ok = True
                else:
                    timed = cli_run("migrate", s.registry, c, self.env, ["--create-missing"])
                    seconds, ok = timed.seconds, timed.returncode == 0
                    if not ok:
                        say(tail(timed.stdout + timed.stderr))
                ok = self.verify(s, tool) and ok
                runs[tool].append((seconds, ok))
                say(f"  round {round_no + 1}: {tool:<32} {seconds:8.2f} s{'' if ok else '  NOT OK'}")
                asyncio.run(drop_databases(self.server, s.databases, max(c, 8)))
        for tool, results in runs.items():
            times = [r[0] for r in results]
            self.figures.append(
                Figure(PHASE_CREATE, tool, statistics.median(times), n, all(r[1] for r in results), "", times)
            )

    def warm(self, s: SchoolSet) -> None:
        n, c = self.schools, self.concurrency
        urls = s.urls(self.server)
        runners: list[tuple[str, str, Callable[[], tuple[float, bool, str]]]] = []

        def cli(command: str) -> Callable[[], tuple[float, bool, str]]:
            def go() -> tuple[float, bool, str]:
                t = cli_run(command, s.registry, c, self.env)
                return t.seconds, t.returncode == 0, "" if t.returncode == 0 else tail(t.stdout + t.stderr)

            return go

        def inproc(command: Command) -> Callable[[], tuple[float, bool, str]]:
            return lambda: inprocess_run(command, s.registry, c)

        def sqlx_cmd(args: list[str]) -> Callable[[], tuple[float, bool, str]]:
            def go() -> tuple[float, bool, str]:
                t = sqlx_run(args, urls, c, self.env)
                return t.seconds, t.returncode == 0, "" if t.returncode == 0 else tail(t.stderr)

            return go

        def floor() -> tuple[float, bool, str]:
            return timed_async(lambda: floor_read(urls, c)), True, ""

        def floor_on_uvloop() -> tuple[float, bool, str]:
            return timed_async(lambda: floor_read(urls, c), run=uvloop.run), True, ""

        for phase, command, sqlx_args in (
            (PHASE_NOOP, Command.MIGRATE, ["run"]),
            (PHASE_STATUS, Command.STATUS, ["info"]),
        ):
            runners.append((phase, TOOL_FLOOR, floor))
            runners.append((phase, TOOL_FLOOR_UVLOOP, floor_on_uvloop))
            runners.append((phase, TOOL_INPROC, inproc(command)))
            runners.append((phase, TOOL_CLI, cli(command.value)))
            if self.with_sqlx:
                runners.append((phase, tool_sqlx(c), sqlx_cmd(sqlx_args)))

        # Rounds interleave the tools, so a slow moment of the machine does not land on one tool only.
        results: dict[tuple[str, str], list[tuple[float, bool, str]]] = {(p, t): [] for p, t, _ in runners}
        for _ in range(self.repeat):
            for phase, tool, go in runners:
                results[(phase, tool)].append(go())
        for phase, tool, _ in runners:
            runs = results[(phase, tool)]
            times = [r[0] for r in runs]
            ok = all(r[1] for r in runs)
            note = next((r[2] for r in runs if not r[1]), "")
            self.record(
                Figure(phase, tool, statistics.median(times), n, ok, note.splitlines()[0] if note else "", times)
            )
            if not ok:
                say(note)
        # The read-only tools must not have changed anything, and sqlx must have accepted our history.
        self.verify(s, "warm phases")


# --- the simulated fleet (runs in a child process, so its peak RSS is its own) ------------------------------------


def sim_tenants(schools: int, servers: int) -> list[Tenant]:
    tenants = []
    for i in range(schools):
        host = f"db-{i % servers:03d}.schools.internal"
        url = f"postgresql://app:not-a-real-password@{host}:5432/school_{i:06d}"
        settings = SchoolSettings(extensions=("uuid-ossp",), lock_timeout=5.0, statement_timeout=600.0, lock_wait=30.0)
        tenants.append(Tenant(f"school-{i:06d}", DatabaseTarget.parse(url), ("north",), settings, line=i + 5))
    return tenants


def current_rss_kib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024
    return 0.0


def sim_child(args: argparse.Namespace) -> int:
    """One simulated run; prints a JSON object on stdout."""
    configure_logging("console", "warning")  # as the CLI does: info events are filtered, not rendered
    out: dict[str, Any] = {"mode": args.sim_child}
    if args.sim_child == "registry":
        # What the CLI pays before scheduling anything: parsing and validating a registry of this size.
        path = Path(args.sim_registry)
        started = time.perf_counter()
        registry = load_registry(path, env={"BENCH_SIM_PASSWORD": "x"})
        out["load_s"] = time.perf_counter() - started
        out["tenants"] = len(registry)
        out["peak_rss_mb"] = mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        print(json.dumps(out))
        return 0

    latency: float = args.sim_latency
    started = time.perf_counter()
    tenants = sim_tenants(args.sim_schools, args.sim_servers)
    out["build_s"] = time.perf_counter() - started
    out["rss_before_mb"] = mb(current_rss_kib())
    if args.sim_child == "trace":
        tracemalloc.start()

    async def work(tenant: Tenant) -> DatabaseResult:
        await anyio.sleep(latency)  # sleep(0) is a bare checkpoint: every real session yields at least once
        return DatabaseResult(database=tenant.target.database, server=tenant.server, status=Status.UP_TO_DATE)

    done = 0

    def observer(_: TenantOutcome) -> None:
        nonlocal done
        done += 1

    servers = {t.server for t in tenants}
    options = FleetOptions(
        budgets=Budgets(concurrency=args.sim_concurrency), per_server=dict.fromkeys(servers, args.sim_per_server)
    )
    started = time.perf_counter()
    fleet_run = anyio.run(run_fleet, tenants, work, options, observer)
    out["wall_s"] = time.perf_counter() - started
    out["completed"] = done
    out["all_ok"] = fleet_run.ok and len(fleet_run.outcomes) == len(tenants)
    out["peak_rss_mb"] = mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if args.sim_child == "trace":
        out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    if args.sim_child == "fleet" and latency == 0:
        # The JSON report of such a run (--report): built and serialised after the run, so it adds to the peak.
        started = time.perf_counter()
        report = RunReport("migrate", fleet_run, "migrations", None)
        size = sum(len(chunk) for chunk in report.json_chunks())  # streamed, as --report writes it
        out["report_s"] = time.perf_counter() - started
        out["report_mb"] = size / 2**20
        out["peak_rss_with_report_mb"] = mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(json.dumps(out))
    return 0


@dataclass
class SimResult:
    schools: int
    servers: int
    concurrency: int
    per_server: int
    zero: dict[str, Any]
    latency: dict[str, Any]
    latency_s: float
    trace: dict[str, Any] | None
    registry: dict[str, Any] | None

    @property
    def us_per_school(self) -> float:
        return 1e6 * float(self.zero["wall_s"]) / self.schools

    @property
    def ideal_s(self) -> float:
        return self.schools * self.latency_s / min(self.concurrency, self.servers * self.per_server)

    @property
    def latency_overhead_us(self) -> float:
        return 1e6 * (float(self.latency["wall_s"]) - self.ideal_s) / self.schools

    @property
    def peak_mb(self) -> float:
        return float(self.zero["peak_rss_mb"])


def sim_bench(args: argparse.Namespace, workdir: Path) -> SimResult | None:
    schools, servers = args.sim_schools, args.sim_servers
    say(
        f"simulated fleet: {schools} schools on {servers} servers, concurrency {args.sim_concurrency}, "
        f"{args.sim_per_server} per server, no database (fake work)"
    )
    base = [
        sys.executable, str(Path(__file__).resolve()), "--sim-schools", str(schools), "--sim-servers", str(servers),
        "--sim-concurrency", str(args.sim_concurrency), "--sim-per-server", str(args.sim_per_server),
    ]  # fmt: skip

    def child(mode: str, latency: float = 0.0, extra: Sequence[str] = ()) -> dict[str, Any] | None:
        t = run_timed([*base, "--sim-child", mode, "--sim-latency", str(latency), *extra])
        if t.returncode != 0:
            say(f"  ! simulation ({mode}, latency {latency}) failed, exit {t.returncode}:\n{tail(t.stderr, 15)}")
            return None
        result: dict[str, Any] = json.loads(t.stdout.strip().splitlines()[-1])
        if mode != "registry" and not (result["all_ok"] and result["completed"] == schools):
            say(f"  ! simulation ({mode}): {result['completed']}/{schools} schools reported, not all ok")
        return result

    zero = child("fleet", 0.0)
    if zero is None:
        return None
    say(f"  zero-latency work:  {zero['wall_s']:.2f} s wall, peak RSS {zero['peak_rss_mb']:.0f} MB")
    latency_s = args.sim_latency_ms / 1000
    with_latency = child("fleet", latency_s)
    if with_latency is None:
        return None
    say(f"  {args.sim_latency_ms:g} ms work:        {with_latency['wall_s']:.2f} s wall")
    trace = child("trace", 0.0) if not args.no_tracemalloc else None
    if trace is not None:
        say(f"  tracemalloc run:    peak traced {trace['tracemalloc_peak_mb']:.0f} MB")
    registry_path = workdir / "sim-tenants.yaml"
    if not args.skip_registry_load:
        with registry_path.open("w") as f:
            f.write("defaults:\n  extensions: [uuid-ossp]\n  per_server: 4\ntenants:\n")
            for i in range(schools):
                f.write(
                    f"  - id: school-{i:06d}\n    url: postgresql://app:${{BENCH_SIM_PASSWORD}}@db-{i % servers:03d}"
                    f".schools.internal:5432/school_{i:06d}\n    tags: [north]\n"
                )
    registry = None if args.skip_registry_load else child("registry", 0.0, ["--sim-registry", str(registry_path)])
    if registry is not None:
        say(f"  registry load:      {registry['load_s']:.2f} s for {registry['tenants']} tenants")
    return SimResult(
        schools, servers, args.sim_concurrency, args.sim_per_server, zero, with_latency, latency_s, trace, registry
    )


# --- audit (later) --------------------------------------------------------------------------------------------------


def has_command(name: str) -> bool:
    """Whether `orchestrator --help` lists `name` as a command."""
    t = run_timed([orchestrator_exe(), "--help"], env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})
    return any(re.match(rf"^\W*{re.escape(name)}\s", line) for line in t.stdout.splitlines())


def audit_bench(bench: DbBench, registry: Path) -> None:
    """`orchestrator audit` on the migrated set (history checks, then with the live schema compared); skipped
    while the command does not exist."""
    if not has_command("audit"):
        say("  audit: skipped (`orchestrator audit` is not a command yet)")
        return
    for phase, extra in ((PHASE_AUDIT_HISTORY, ["--no-schema"]), (PHASE_AUDIT, [])):
        times, ok, note = [], True, ""
        for _ in range(bench.repeat):
            t = cli_run("audit", registry, bench.concurrency, bench.env, extra)
            times.append(t.seconds)
            if t.returncode != 0:
                ok, note = False, f"exit {t.returncode}"
                say(tail(t.stdout + t.stderr))
        bench.record(Figure(phase, TOOL_CLI, statistics.median(times), bench.schools, ok, note, times))


# --- lint (no database) ---------------------------------------------------------------------------------------------

LINT_FILE_BYTES = 4 * 1024 * 1024


def lint_bench(workdir: Path, repeat: int) -> dict[str, float]:
    """`lint` of one ~4 MB migration (the project's up files over and over), next to a floor: reading the file and
    its SHA-384, the least any loader does with it. The medians of `repeat` runs."""
    directory = workdir / "lint"
    directory.mkdir()
    ups = "".join(m.up_sql for m in load_migrations(MIGRATIONS))
    path = directory / "20250101000000_big.sql"
    path.write_text(ups * (LINT_FILE_BYTES // len(ups) + 1))

    os.environ["ORCHESTRATOR_CACHE_DIR"] = ""  # the lint itself, every run: no lint cache

    def median_s(work: Callable[[], object]) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return {
        "mb": path.stat().st_size / 1e6,
        "floor_s": median_s(lambda: hashlib.sha384(path.read_bytes()).digest()),
        "lint_s": median_s(lambda: lint_paths([directory], released_file=None)),
        "lint_no_squawk_s": median_s(lambda: lint_paths([directory], released_file=None, use_squawk=False)),
    }


# --- output ---------------------------------------------------------------------------------------------------------


def find(figures: Sequence[Figure], phase: str, tool: str) -> Figure | None:
    return next((f for f in figures if f.phase == phase and f.tool == tool), None)


def print_table(figures: Sequence[Figure]) -> None:
    say()
    say(f"{'phase':<26} {'tool':<32} {'seconds':>8} {'schools/s':>10} {'vs floor':>9}")
    say("-" * 89)
    last_phase = None
    for f in figures:
        if last_phase is not None and f.phase != last_phase:
            say()
        last_phase = f.phase
        floor = find(figures, f.phase, TOOL_FLOOR)
        ratio = f"{f.seconds / floor.seconds:8.2f}x" if floor and floor.seconds > 0 else ""
        flag = "  NOT OK" if not f.ok else ""
        say(f"{f.phase:<26} {f.tool:<32} {f.seconds:8.2f} {f.per_second:10.1f} {ratio:>9}{flag}")


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def print_targets(figures: Sequence[Figure], concurrency: int, sim: SimResult | None, facts: dict[str, Any]) -> None:
    say()
    say("targets")
    for phase, what, target in (
        (PHASE_COLD, "cold rollout", TARGET_COLD_VS_FLOOR),
        (PHASE_CREATE, "new schools in one pass (migrate --create-missing)", TARGET_CREATE_VS_FLOOR),
        (PHASE_STATUS, "status", TARGET_STATUS_VS_FLOOR),
    ):
        floor = find(figures, phase, TOOL_FLOOR)
        for tool in (TOOL_CLI, TOOL_INPROC):
            ours = find(figures, phase, tool)
            if floor and ours:
                ratio = ours.seconds / floor.seconds
                met = verdict(ratio <= target)
                say(f"  {what}, {tool} / asyncpg floor: {ratio:.2f}x (target <= {target:.2f}x): {met}")
    if "cli_startup_s" in facts:
        startup = facts["cli_startup_s"]
        say(
            f"  CLI start-up (`orchestrator --version`): {startup:.2f} s "
            f"(target <= {TARGET_STARTUP_S:.1f} s): {verdict(startup <= TARGET_STARTUP_S)}"
        )
    sqlx_info = find(figures, PHASE_STATUS, tool_sqlx(concurrency))
    for tool in (TOOL_CLI, TOOL_INPROC):
        ours = find(figures, PHASE_STATUS, tool)
        if sqlx_info and ours:
            speedup = sqlx_info.seconds / ours.seconds
            say(
                f"  status, xargs -P{concurrency} sqlx migrate info / {tool}: {speedup:.2f}x "
                f"(target >= {TARGET_STATUS_VS_SQLX:.0f}x): {verdict(speedup >= TARGET_STATUS_VS_SQLX)}"
            )
    status_floor = find(figures, PHASE_STATUS, TOOL_FLOOR)
    if sqlx_info and status_floor:
        # What that target asks of a tool, in the floor's terms: sqlx's loop is mostly connections too.
        needed = sqlx_info.seconds / TARGET_STATUS_VS_SQLX / status_floor.seconds
        say(
            f"    (sqlx's loop is {sqlx_info.seconds / status_floor.seconds:.2f}x the floor here: "
            f"{TARGET_STATUS_VS_SQLX:.0f}x faster than it means {needed:.2f}x the floor's time)"
        )
    if sim is not None:
        say(
            f"  simulated fleet, scheduling overhead: {sim.us_per_school:.1f} us/school at zero latency "
            f"(target < {TARGET_SIM_US_PER_SCHOOL:.0f} us): {verdict(sim.us_per_school < TARGET_SIM_US_PER_SCHOOL)}"
        )
        say(
            f"  simulated fleet, peak RSS: {sim.peak_mb:.0f} MB "
            f"(target < {TARGET_SIM_PEAK_MB:.0f} MB): {verdict(sim.peak_mb < TARGET_SIM_PEAK_MB)}"
        )
    say()
    say("context")
    if "cli_startup_s" in facts:
        say(f"  orchestrator CLI start-up (`orchestrator --version`): {facts['cli_startup_s']:.2f} s")
    for phase in (PHASE_NOOP, PHASE_STATUS):
        on_uvloop, cli = find(figures, phase, TOOL_FLOOR_UVLOOP), find(figures, phase, TOOL_CLI)
        if on_uvloop and cli:
            say(f"  {phase}, {TOOL_CLI} / {TOOL_FLOOR_UVLOOP} (the CLI's loop): {cli.seconds / on_uvloop.seconds:.2f}x")
    if "lint" in facts:
        lint = facts["lint"]
        say(
            f"  lint of one {lint['mb']:.1f} MB migration: {lint['lint_s']:.2f} s with squawk, "
            f"{lint['lint_no_squawk_s']:.2f} s without; floor (read + SHA-384) {lint['floor_s']:.3f} s: "
            f"{lint['lint_s'] / lint['floor_s']:.0f}x / {lint['lint_no_squawk_s'] / lint['floor_s']:.0f}x the floor"
        )
    for command, seconds in sorted(facts.get("prepare_s", {}).items()):
        what = "registry load + safety gate (lint, squawk)" if command == "migrate" else "registry load"
        say(f"  in-process prepare() for {command}, part of its figures above ({what}): {seconds:.2f} s")
    if sim is not None:
        z, lat = sim.zero, sim.latency
        say(
            f"  simulated fleet, {sim.latency_s * 1000:g} ms work: {lat['wall_s']:.2f} s wall vs ideal "
            f"{sim.ideal_s:.2f} s ({sim.schools} x {sim.latency_s * 1000:g} ms / "
            f"{min(sim.concurrency, sim.servers * sim.per_server)} slots): "
            f"{sim.latency_overhead_us:.1f} us/school above ideal"
        )
        say(
            f"  simulated fleet, building {sim.schools} Tenant objects: {z['build_s']:.2f} s, "
            f"RSS before the run {z['rss_before_mb']:.0f} MB"
        )
        if "report_s" in z:
            say(
                f"  simulated fleet, JSON report (--report): {z['report_s']:.2f} s, {z['report_mb']:.0f} MB of JSON, "
                f"peak RSS with it {z['peak_rss_with_report_mb']:.0f} MB"
            )
        if sim.trace is not None:
            say(
                f"  simulated fleet, tracemalloc peak (Python allocations only, traced run): "
                f"{sim.trace['tracemalloc_peak_mb']:.0f} MB"
            )
        if sim.registry is not None:
            say(
                f"  registry of {sim.registry['tenants']} tenants: load_registry {sim.registry['load_s']:.2f} s, "
                f"peak RSS {sim.registry['peak_rss_mb']:.0f} MB (paid by every CLI run before scheduling)"
            )


def warn_if_busy() -> None:
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cpus:
        say(f"  note: the machine is busy (load {load:.1f} on {cpus} CPUs): figures will be noisy and slower")


def environment(server: DevServer | None) -> str:
    parts = [f"{os.cpu_count()} CPUs", f"Python {platform.python_version()}", platform.machine()]
    parts.append("load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    if server is not None:
        with contextlib.suppress(Exception):
            version = asyncio.run(_server_version(server))
            parts.append(f"PostgreSQL {version}")
    exe = sqlx_exe()
    if exe:
        with contextlib.suppress(OSError):
            parts.append(subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip())
    return ", ".join(parts)


async def _server_version(server: DevServer) -> str:
    conn = await asyncpg.connect(server.url())
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


# --- main -----------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/bench.py",
        description="Time the orchestrator against the sqlx CLI and an asyncpg floor; simulate a large fleet.",
    )
    p.add_argument("--schools", type=int, default=200, help="school databases per set (default 200)")
    p.add_argument("--concurrency", type=int, default=8, help="sessions at once, for every tool (default 8)")
    p.add_argument("--repeat", type=int, default=3, help="runs per warm figure; the median is shown (default 3)")
    p.add_argument(
        "--cold-rounds",
        type=int,
        default=3,
        help="cold rollouts per tool, on fresh databases; median shown (default 3)",
    )
    p.add_argument("--sim-schools", type=int, default=100_000, help="schools in the simulated fleet (default 100000)")
    p.add_argument("--sim-servers", type=int, default=200, help="fake servers in the simulation (default 200)")
    p.add_argument("--sim-concurrency", type=int, default=512, help="simulation --concurrency (default 512)")
    p.add_argument("--sim-per-server", type=int, default=4, help="simulation --per-server (default 4)")
    p.add_argument("--sim-latency-ms", type=float, default=1.0, help="fake work latency, ms (default 1)")
    p.add_argument("--no-tracemalloc", action="store_true", help="skip the (slower) tracemalloc simulation run")
    p.add_argument(
        "--skip-registry-load", action="store_true", help="skip timing load_registry on a --sim-schools registry"
    )
    p.add_argument("--skip-sqlx", action="store_true", help="leave out the sqlx CLI comparison")
    p.add_argument("--skip-sim", action="store_true", help="leave out the simulated fleet")
    p.add_argument("--skip-lint", action="store_true", help="leave out the lint of a 4 MB migration")
    p.add_argument("--skip-db", action="store_true", help="leave out everything that needs PostgreSQL")
    p.add_argument(
        "--skip-rollout", action="store_true", help="leave out the fleet phases (cold, warm, audit) on PostgreSQL"
    )
    p.add_argument("--skip-onboarding", action="store_true", help="leave out the onboarding figure")
    p.add_argument(
        "--onboarding-migrations", type=int, default=60, help="migration files of the onboarding figure (default 60)"
    )
    p.add_argument(
        "--onboarding-schools", type=int, default=10, help="schools per onboarding path; median shown (default 10)"
    )
    p.add_argument(
        "--onboarding-long",
        type=int,
        default=300,
        help="files of a longer history, onboarded as context with fsync on (default 300; 0 leaves it out)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures here as JSON")
    # Internal: one simulation run in a child process.
    p.add_argument("--sim-child", choices=["fleet", "trace", "registry"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--sim-latency", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--sim-registry", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if (
        args.schools < 1
        or args.concurrency < 1
        or args.repeat < 1
        or args.cold_rounds < 1
        or args.sim_schools < 1
        or args.sim_servers < 1
        or args.onboarding_migrations < 1
        or args.onboarding_schools < 1
        or args.onboarding_long < 0
    ):
        p.error(
            "--schools, --concurrency, --repeat, --cold-rounds, --sim-schools, --sim-servers, --onboarding-migrations "
            "and --onboarding-schools must be at least 1, --onboarding-long at least 0"
        )
    return args


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sim_child is not None:
        return sim_child(args)
    # Ctrl-C and SIGTERM raise KeyboardInterrupt wherever the benchmark is, also inside an event loop (asyncio's own
    # SIGINT handling only cancels the main task, which a run may absorb); the finally blocks then clean up.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    configure_logging("console", "warning")
    with_sqlx = not args.skip_sqlx and sqlx_exe() is not None
    if not args.skip_sqlx and not with_sqlx:
        say("sqlx CLI not found (pip install -e '.[dev]' installs it): leaving out the sqlx comparison")
    figures: list[Figure] = []
    facts: dict[str, Any] = {}
    sim: SimResult | None = None
    onboarding: list[OnboardingResult] = []
    try:
        with workspace() as workdir:
            if not args.skip_db:
                password = secrets.token_urlsafe(18)
                say(f"starting a throwaway PostgreSQL in {workdir} ...")
                server = start_server(workdir, password, args.concurrency)
                try:
                    say(f"environment: {environment(server)}")
                    warn_if_busy()
                    bench = DbBench(
                        server=server,
                        workdir=workdir,
                        schools=args.schools,
                        concurrency=args.concurrency,
                        repeat=args.repeat,
                        cold_rounds=args.cold_rounds,
                        with_sqlx=with_sqlx,
                        source=load_migrations(MIGRATIONS),
                        env={**os.environ, PASSWORD_VAR: password},
                    )
                    os.environ[PASSWORD_VAR] = password  # the in-process runs read the registry from here
                    if not args.skip_rollout:
                        bench.run()
                        say()
                        audit_bench(bench, workdir / "tenants-cli.yaml")
                        bench.facts["prepare_s"] = {k: statistics.median(v) for k, v in PREPARE_TIMES.items()}
                        figures, facts = bench.figures, bench.facts
                    if not args.skip_onboarding:
                        say(f"onboarding: {args.onboarding_migrations} generated migrations ...")
                        for durable in (True, False):
                            onboarding.append(
                                asyncio.run(
                                    run_onboarding(
                                        server,
                                        workdir,
                                        args.onboarding_migrations,
                                        args.onboarding_schools,
                                        durable=durable,
                                    )
                                )
                            )
                        if args.onboarding_long:
                            say(f"onboarding: {args.onboarding_long} generated migrations (a longer history) ...")
                            onboarding.append(
                                asyncio.run(
                                    run_onboarding(
                                        server,
                                        workdir,
                                        args.onboarding_long,
                                        max(3, args.onboarding_schools // 3),
                                        durable=True,
                                        targeted=False,
                                    )
                                )
                            )
                finally:
                    say("stopping the throwaway server ...")
                    server.stop()
            else:
                say(f"environment: {environment(None)}")
            if not args.skip_lint:
                facts["lint"] = lint_bench(workdir, args.repeat)
            if not args.skip_sim:
                say()
                sim = sim_bench(args, workdir)
    except KeyboardInterrupt:
        say("\ninterrupted: what the benchmark started is stopped, its temporary directory removed")
        return 130
    if figures:
        print_table(figures)
    say()
    say("load average at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    print_targets(figures, args.concurrency, sim, facts)
    for result in onboarding:
        say()
        for line in report_lines(result):
            say(line)
    if args.json:
        data = {
            "schools": args.schools,
            "concurrency": args.concurrency,
            "figures": [asdict(f) | {"schools_per_s": f.per_second} for f in figures],
            "facts": facts,
            "sim": None if sim is None else asdict(sim) | {"us_per_school": sim.us_per_school},
            "onboarding": [asdict(result) for result in onboarding],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        say(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
