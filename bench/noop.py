"""The fixed cost of a command: a `migrate` with nothing pending over a few schools, next to `xargs -P C sqlx migrate
run` doing the same. At 20 schools the work on the databases is small, so the figure is mostly what every run pays
before and after it: interpreter start-up and imports, the registry, the safety gate (the lint of every file up to
the target, squawk included, unless the lint cache already holds the result for these exact files), rendering.

    .venv/bin/python bench/noop.py                       # 20 schools, concurrency 8, 9 interleaved rounds
    .venv/bin/python bench/noop.py --files 60 --rounds 15  # a longer history (generated), adopted with --baseline

It starts its own throwaway server (bench.py's), creates the schools from a template holding uuid-ossp, migrates
them once (`--files N`: N generated files, as onboarding.py writes them, adopted the way a real project is: applied
with --allow-unsafe, then recorded with `lint --baseline`), then times, round after round (interleaved, so a slow
moment of the machine does not land on one tool): the CLI with a warm lint cache, the CLI with no lint cache
(`ORCHESTRATOR_CACHE_DIR` pointing at a fresh empty directory each run), and the sqlx loop. Medians are printed; it
never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

from onboarding import generate_migrations

from bench import (
    MIGRATIONS,
    PASSWORD_VAR,
    ROOT,
    create_databases,
    create_template,
    environment,
    orchestrator_exe,
    run_timed,
    sqlx_exe,
    sqlx_run,
    start_server,
    warn_if_busy,
    write_registry,
)
from orchestrator.devserver import DevServer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schools", type=int, default=20, help="school databases (default 20)")
    p.add_argument("--concurrency", type=int, default=8, help="sessions at once, for both tools (default 8)")
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds; the median is shown (default 9)")
    p.add_argument("--files", type=int, default=0, help="generated migration files instead of migrations/ (default 0)")
    p.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="DIR",
        help="also time the CLI of another checkout in the same rounds (e.g. `git archive REV | tar -x -C DIR`)",
    )
    args = p.parse_args(argv)
    if sqlx_exe() is None:
        print("the sqlx CLI is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    password = secrets.token_hex(12)
    with tempfile.TemporaryDirectory(prefix="orchestrator-noop-") as tmp:
        workdir = Path(tmp)
        server = start_server(workdir, password, args.concurrency)
        try:
            return _bench(args, workdir, server, password)
        finally:
            server.stop()


def _bench(args: argparse.Namespace, workdir: Path, server: DevServer, password: str) -> int:
    warn_if_busy()
    print(environment(server))
    asyncio.run(create_template(server))
    databases = [f"noop_{i:04d}" for i in range(args.schools)]
    asyncio.run(create_databases(server, databases, args.concurrency))
    registry = workdir / "tenants.yaml"
    write_registry(registry, server, "noop", databases, args.concurrency)
    cache = workdir / "cache"
    # The worktree's package, whatever the virtualenv's editable install points at.
    env = {**os.environ, PASSWORD_VAR: password, "ORCHESTRATOR_CACHE_DIR": str(cache)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    migrations = MIGRATIONS
    if args.files:
        migrations = generate_migrations(workdir / "migrations", args.files)
    flags = ["--migrations", str(migrations), "--concurrency", str(args.concurrency), "--no-progress"]
    orchestrator = [orchestrator_exe()]
    adopt = [
        [*orchestrator, "migrate", "--registry", str(registry), *flags, "--allow-unsafe"],
        [*orchestrator, "lint", str(migrations), "--baseline", "--registry", str(registry)],
    ]
    for command in adopt[: 2 if args.files else 1]:
        done = run_timed(command, env=env)
        if done.returncode != 0:
            print(done.stdout + done.stderr, file=sys.stderr)
            return 1
    urls = [server.url(db) for db in databases]
    migrate = [*orchestrator, "migrate", "--registry", str(registry), *flags]
    exe = [sys.executable, "-m", "orchestrator", "--version"]
    times: dict[str, list[float]] = {"cached": [], "uncached": [], "sqlx": [], "version": []}
    other_env = None
    if args.compare_with is not None:
        other_env = {**env, "PYTHONPATH": str(args.compare_with.resolve())}
        times["other"] = []
    for round_ in range(args.rounds):
        warm = run_timed(migrate, env=env)
        cold = run_timed(migrate, env={**env, "ORCHESTRATOR_CACHE_DIR": str(workdir / f"empty-{round_}")})
        loop = sqlx_run(["run"], urls, args.concurrency, env, source=migrations)
        version = run_timed(exe, env=env)
        runs = [("cached", warm), ("uncached", cold), ("sqlx", loop), ("version", version)]
        if other_env is not None:
            runs.append(("other", run_timed(migrate, env={**other_env, "ORCHESTRATOR_CACHE_DIR": str(cache)})))
        for name, timed in runs:
            if timed.returncode != 0:
                print(f"{name} failed:\n{timed.stdout}{timed.stderr}", file=sys.stderr)
                return 1
            times[name].append(timed.seconds)
    n, c = args.schools, args.concurrency
    print(f"\nmigrate with nothing pending, {n} schools, concurrency {c}, median of {args.rounds} interleaved rounds")
    label = {
        "cached": "orchestrator migrate, lint cache warm",
        "uncached": "orchestrator migrate, no lint cache",
        "sqlx": f"xargs -P{c} sqlx migrate run",
        "version": "orchestrator --version (start-up alone)",
        "other": f"orchestrator migrate of {args.compare_with}",
    }
    for name, runs in times.items():
        print(f"  {label[name]:<44} {statistics.median(runs):6.3f} s   (runs: {', '.join(f'{t:.3f}' for t in runs)})")
    print(f"  ({migrations}: {len(list(migrations.glob('*.sql')))} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
