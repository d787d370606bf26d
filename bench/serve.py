"""Onboarding through `orchestrator serve` (the HTTP API) against the CLI, with spares ready.

    .venv/bin/python bench/serve.py                  # 60 generated files, 30 paced onboardings, a burst of 50
    make bench-serve

It starts its own throwaway server (bench.py's), generates a project of `--files` migrations (onboarding.py's: the
same kind of school as the onboarding figure), adopts them the way a real project is (applied to one school with
--allow-unsafe, then recorded with `lint --baseline`), builds the template with `--spares` ready copies
(`orchestrator template`), and starts `orchestrator serve --spares N` on a free local port. Then:

- `--onboardings` new schools through `PUT /v1/schools/{id}`, one every `--pace-ms`, each timed by the client from
  the request to the end of the answer (HTTP included, one kept-alive connection as an admin service would hold);
- a burst of `--burst` PUTs at once (one connection each), every one must end ok; then `/v1/fleet` and
  `pg_database` are polled until the spares are back to N;
- the floor: as many onboardings in this process (`engine.provision` taking a spare, no HTTP, no service), paced
  alike, on spares made in-process and as warm as the service (maintenance session kept, spares sealed and taken
  unread: spare_seals.py); the API's figures are printed as ratios to it; as context, the same with every spare
  read first (the CLI's and the Python API's way);
- the same onboarding through the CLI, `orchestrator provision -D URL --template T --extension uuid-ossp`, a spare
  ready each time (`--cli-rounds`, median): what calling the CLI per school costs.

Context: `GET /healthz` on the same connection (the HTTP round trip alone, the floor of any API call) and the path
each onboarding took (spare, template copy, files) as the service reports it. It prints figures and the targets
they are measured against; it never fails on a figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from onboarding import generate_migrations

from bench import (
    PASSWORD_VAR,
    ROOT,
    environment,
    orchestrator_exe,
    run_timed,
    say,
    start_server,
    tail,
    verdict,
    warn_if_busy,
)
from orchestrator import engine, eventloop, template
from orchestrator.devserver import DevServer, free_port
from orchestrator.engine import EngineOptions
from orchestrator.scratch import KeptSessions, keeping
from orchestrator.source import load_migrations
from orchestrator.spare_seals import SpareSeals, remembering
from orchestrator.target import DatabaseTarget

TARGET_P50_MS = 20.0
TARGET_P95_MS = 60.0
TARGET_CLI_RATIO = 10.0  # the API at least 10x faster than the CLI, per onboarding
TEMPLATE = "bench_serve_template"
TOKEN_VAR = "ORCHESTRATOR_API_TOKEN"
READY_WAIT_S = 120.0


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    ms: float


class Client:
    """One kept-alive HTTP connection to the service, with the token."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
        payload = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body=payload, headers=self.headers)
            answer = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if method != "GET":
                raise
            # The server closed the kept-alive connection while it sat idle (uvicorn's keep-alive timeout): again.
            self.connection.close()
            started = time.perf_counter()
            self.connection.request(method, path, body=payload, headers=self.headers)
            answer = self.connection.getresponse()
        data = answer.read()
        ms = (time.perf_counter() - started) * 1000
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"text": data.decode(errors="replace")}
        return Answer(answer.status, parsed if isinstance(parsed, dict) else {"value": parsed}, ms)

    def close(self) -> None:
        self.connection.close()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the value below which p% of the runs fall (p95 of 30 runs is the 29th)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the finally blocks stop the service and the server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=60, help="generated migration files (default 60)")
    p.add_argument("--spares", type=int, default=30, help="spares kept ready by `serve --spares` (default 30)")
    p.add_argument("--onboardings", type=int, default=30, help="paced onboardings through the API (default 30)")
    p.add_argument("--pace-ms", type=float, default=100.0, help="between two paced onboardings (default 100)")
    p.add_argument("--cli-rounds", type=int, default=5, help="onboardings through the CLI; median (default 5)")
    p.add_argument("--burst", type=int, default=50, help="onboardings sent at once (default 50)")
    args = p.parse_args(argv)
    if min(args.files, args.spares, args.onboardings, args.cli_rounds, args.burst) < 1 or args.pace_ms < 0:
        p.error("--files, --spares, --onboardings, --cli-rounds and --burst must be at least 1, --pace-ms at least 0")
    signal.signal(signal.SIGTERM, _interrupted)
    password = secrets.token_hex(12)
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-serve-") as tmp:
        workdir = Path(tmp)
        server = start_server(workdir, password, args.burst)
        try:
            return _bench(args, workdir, server, password)
        finally:
            server.stop()


def _bench(args: argparse.Namespace, workdir: Path, server: DevServer, password: str) -> int:
    warn_if_busy()
    say(environment(server))
    token = secrets.token_hex(24)
    cache = workdir / "cache"
    env = {**os.environ, PASSWORD_VAR: password, TOKEN_VAR: token, "ORCHESTRATOR_CACHE_DIR": str(cache)}
    # The worktree's package, whatever the virtualenv's editable install points at.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    migrations = generate_migrations(workdir / "migrations", args.files)
    registry = workdir / "tenants.yaml"
    seed = f"postgresql://postgres:${{{PASSWORD_VAR}}}@{server.host}:{server.port}/serve_seed"
    registry.write_text(
        "defaults:\n  extensions: [uuid-ossp]\n  per_server: 8\n"
        f"  template: {TEMPLATE}\ntenants:\n  - id: serve-seed\n    url: {seed}\n"
    )
    orchestrator = orchestrator_exe()
    common = ["--registry", str(registry), "--migrations", str(migrations)]
    setup = [
        # Adopted as a real project is: applied once with --allow-unsafe, then recorded as released.
        [orchestrator, "migrate", *common, "--create-missing", "--allow-unsafe", "--yes", "--no-progress"],
        [orchestrator, "lint", str(migrations), "--baseline", "--registry", str(registry)],
        [orchestrator, "template", *common, "--spares", str(args.spares), "--yes"],
    ]
    for command in setup:
        done = run_timed(command, env=env)
        if done.returncode != 0:
            say(f"setup failed: {' '.join(command[1:3])}\n{tail(done.stdout + done.stderr, 20)}")
            return 1
    port = free_port()
    log = (workdir / "serve.log").open("w")
    service = subprocess.Popen(
        [orchestrator, "serve", *common, "--listen", f"127.0.0.1:{port}", "--spares", str(args.spares)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        return _against(args, server, service, port, token, env, migrations)
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
                service.wait()
        log.close()
        if service.returncode not in (0, None):
            say(f"  note: orchestrator serve exited {service.returncode}; its log:")
            say(tail((Path(log.name)).read_text(), 20))


def _wait_ready(service: subprocess.Popen[bytes], port: int, token: str) -> bool:
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        if service.poll() is not None:
            return False
        try:
            client = Client(port, token)
            try:
                if client.call("GET", "/readyz").status == 200:
                    return True
            finally:
                client.close()
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _spares_ready(client: Client) -> int:
    fleet = client.call("GET", "/v1/fleet").body  # spares_ready is live (not from the survey): no new survey
    return sum(int(s.get("spares_ready") or 0) for s in fleet.get("servers", []))


def _wait_spares(client: Client, wanted: int, timeout: float = READY_WAIT_S) -> float | None:
    """Seconds until the service reports `wanted` spares ready, or None if it did not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _spares_ready(client) >= wanted:
            return time.monotonic() - started
        time.sleep(0.25)
    return None


def _paths(client: Client, tenants: set[str]) -> tuple[Counter[str], list[float]]:
    """The path each of `tenants` took and its time inside the service (ms), as /v1/fleet reports them."""
    onboardings = [o for o in client.call("GET", "/v1/fleet").body.get("onboardings", []) if o.get("tenant") in tenants]
    return Counter(str(o.get("path")) for o in onboardings), [float(o.get("ms") or 0) for o in onboardings]


def _options() -> EngineOptions:
    return EngineOptions(extensions=("uuid-ossp",))  # the registry's: the template's extensions


async def _top_up(server: DevServer, migrations: Path, spares: int, seals: SpareSeals | None = None) -> None:
    """The spares made (or read) as `orchestrator template --spares N` would; with `seals`, sealed in them as the
    service seals its own."""
    with remembering(seals) if seals is not None else nullcontext():
        ready = await template.keep_ready(
            DatabaseTarget.parse(server.url()), TEMPLATE, load_migrations(migrations), _options(), spares
        )
    if ready.error is not None:
        say(f"  note: making spares: {ready.error}")


async def _spares_in_database(server: DevServer) -> int:
    """The ready copies of the template that exist, whoever made or took them."""
    conn = await asyncpg.connect(server.url())
    try:
        comments = await conn.fetch("SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database")
    finally:
        await conn.close()
    return sum(1 for row in comments if (template.parse_spare(row["comment"]) or ("",))[0] == TEMPLATE)


async def _engine_floor(
    urls: list[str], migrations: Path, pace_s: float, seals: SpareSeals | None
) -> tuple[list[float], Counter[str]]:
    """The same onboardings in this process, no HTTP and no service: `engine.provision` with the template's creator
    (a spare taken), paced alike. With `seals` (the spares made under them), as warm as the service (its maintenance
    session kept, the spares it made taken unread): the floor of the API's figure (the service adds HTTP, the job,
    its budgets). Without: what the Python API and the CLI pay for the database work (every spare read first)."""
    source = load_migrations(migrations)
    options = _options()
    create = template.creator(TEMPLATE, source, options)
    times: list[float] = []
    paths: Counter[str] = Counter()
    kept = KeptSessions()
    with ExitStack() as warm:
        if seals is not None:
            warm.enter_context(keeping(kept))
            warm.enter_context(remembering(seals))
            warm.callback(kept.close)
        started = time.perf_counter()
        for i, url in enumerate(urls):
            await anyio.sleep(max(0.0, started + i * pace_s - time.perf_counter()))
            began = time.perf_counter()
            done = await engine.provision(DatabaseTarget.parse(url), source, options, creator=create)
            times.append((time.perf_counter() - began) * 1000)
            spare = done.ok and any("from a ready copy (" in note for note in done.notes)
            paths["spare" if spare else f"{done.status.value}, no spare"] += 1
    return times, paths


def _against(
    args: argparse.Namespace,
    server: DevServer,
    service: subprocess.Popen[bytes],
    port: int,
    token: str,
    env: dict[str, str],
    migrations: Path,
) -> int:
    if not _wait_ready(service, port, token):
        say("orchestrator serve did not become ready")
        return 1
    client = Client(port, token)
    counter = iter(range(1_000_000))

    def new_school(kind: str) -> tuple[str, str]:
        n = next(counter)
        return f"{kind}-{n:04d}", server.url(f"serve_{kind}_{n:04d}")

    def onboard(connection: Client, kind: str) -> tuple[str, Answer]:
        tenant, url = new_school(kind)
        return tenant, connection.call("PUT", f"/v1/schools/{tenant}", {"url": url})

    problems: list[str] = []

    def check(tenant: str, answer: Answer) -> None:
        if answer.status != 200 or answer.body.get("status") not in ("applied", "up_to_date"):
            problems.append(f"{tenant}: HTTP {answer.status} {json.dumps(answer.body)[:300]}")

    # Warm: the first onboarding after start-up, untimed; then the spares back to N.
    check(*onboard(client, "warm"))
    _wait_spares(client, args.spares)
    healthz = [client.call("GET", "/healthz").ms for _ in range(args.onboardings)]

    paced: list[float] = []
    paced_tenants: set[str] = set()
    started = time.perf_counter()
    for i in range(args.onboardings):
        time.sleep(max(0.0, started + i * args.pace_ms / 1000 - time.perf_counter()))
        tenant, answer = onboard(client, "paced")
        check(tenant, answer)
        paced.append(answer.ms)
        paced_tenants.add(tenant)
    paced_paths, inside = _paths(client, paced_tenants)

    # The burst, the spares back to N first (the service's own phases come first: its count of spares is right only
    # while nobody else takes them).
    _wait_spares(client, args.spares)
    before = _spares_ready(client)

    def one(_: int) -> tuple[str, Answer]:
        connection = Client(port, token)
        try:
            return onboard(connection, "burst")
        finally:
            connection.close()

    burst_started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.burst) as pool:
        burst = list(pool.map(one, range(args.burst)))
    burst_s = time.perf_counter() - burst_started
    for tenant, answer in burst:
        check(tenant, answer)
    burst_ok = sum(1 for _, a in burst if a.status == 200 and a.body.get("status") in ("applied", "up_to_date"))
    burst_paths, _ = _paths(client, {t for t, _ in burst})
    said_after, counted_after = _spares_ready(client), eventloop.run(_spares_in_database, server)
    # Refilled: the service says N again, and N exist in pg_database (its count is its own bookkeeping).
    refill_started = time.monotonic()
    refilled: float | None = None
    while time.monotonic() - refill_started < 600:
        if _spares_ready(client) >= args.spares and eventloop.run(_spares_in_database, server) >= args.spares:
            refilled = time.monotonic() - refill_started
            break
        time.sleep(0.25)
    client.close()

    # The floor, in this process; the spares made first as `orchestrator template --spares N` would (untimed).
    seals = SpareSeals()
    eventloop.run(_top_up, server, migrations, args.spares, seals)
    floor, floor_paths = eventloop.run(
        _engine_floor, [new_school("floor")[1] for _ in range(args.onboardings)], migrations, args.pace_ms / 1000, seals
    )
    eventloop.run(_top_up, server, migrations, args.spares)
    cold, cold_paths = eventloop.run(
        _engine_floor, [new_school("cold")[1] for _ in range(args.onboardings)], migrations, args.pace_ms / 1000, None
    )

    cli: list[float] = []
    cli_paths: Counter[str] = Counter()
    for round_ in range(args.cli_rounds):
        eventloop.run(_top_up, server, migrations, args.spares)  # a spare ready, whatever the service does
        _, url = new_school("cli")
        report = migrations.parent / f"cli-{round_}.json"
        done = run_timed(
            # The registry's school settings on the command line (the template's extensions: else no spare fits).
            [orchestrator_exe(), "provision", "-D", url, "--template", TEMPLATE, "--extension", "uuid-ossp",
             "--migrations", str(migrations), "--no-progress", "--report", str(report)],
            env=env,
        )  # fmt: skip
        cli.append(done.seconds * 1000)
        if done.returncode != 0:
            problems.append(f"provision -D: exit {done.returncode}\n{tail(done.stdout + done.stderr)}")
        elif report.exists():
            notes = " ".join(n for school in json.loads(report.read_text())["schools"] for n in school["notes"])
            cli_paths["spare" if "ready copy" in notes else "no spare"] += 1
            if "ready copy" not in notes:
                problems.append(f"provision -D took no spare: {notes[:400]}")

    p50, p95 = statistics.median(paced), percentile(paced, 95)
    cli_ms = statistics.median(cli)
    ratio = cli_ms / p50 if p50 > 0 else float("inf")
    say(f"\nonboarding a new school, {args.files} migration files, serve --spares {args.spares}")
    say(f"  API, {args.onboardings} PUTs {args.pace_ms:g} ms apart (client-side, HTTP included)")
    say(f"    p50 {p50:8.1f} ms   target <= {TARGET_P50_MS:g} ms   {verdict(p50 <= TARGET_P50_MS)}")
    say(f"    p95 {p95:8.1f} ms   target <= {TARGET_P95_MS:g} ms   {verdict(p95 <= TARGET_P95_MS)}")
    say(f"    min {min(paced):8.1f} ms, max {max(paced):.1f} ms; paths: {_counted(paced_paths)}")
    if inside:
        say(f"    inside the service (its own timing, /v1/fleet): p50 {statistics.median(inside):.1f} ms, "
            f"p95 {percentile(inside, 95):.1f} ms")  # fmt: skip
    floor_p50 = statistics.median(floor)
    say(f"  floor: engine.provision in-process (no HTTP, no service), paced alike: p50 {floor_p50:.1f} ms, "
        f"p95 {percentile(floor, 95):.1f} ms; paths: {_counted(floor_paths)}")  # fmt: skip
    say(f"    API p50 / floor p50 {p50 / floor_p50:.2f}x, API p95 / floor p95 {p95 / percentile(floor, 95):.2f}x")
    say(f"  context: the same, every spare read first (the CLI's and the Python API's way: no seals): p50 "
        f"{statistics.median(cold):.1f} ms, p95 {percentile(cold, 95):.1f} ms; "
        f"paths: {_counted(cold_paths)}")  # fmt: skip
    say(f"  CLI, orchestrator provision -D URL --template T, a spare ready (median of {args.cli_rounds})")
    say(f"        {cli_ms:8.1f} ms   (runs: {', '.join(f'{t:.0f}' for t in cli)}); paths: {_counted(cli_paths)}")
    say(f"  CLI / API p50 {ratio:6.1f}x      target >= {TARGET_CLI_RATIO:g}x  {verdict(ratio >= TARGET_CLI_RATIO)}")
    say(f"  burst of {args.burst} PUTs at once: {burst_ok}/{args.burst} ok in {burst_s:.2f} s "
        f"{verdict(burst_ok == args.burst)}; paths: {_counted(burst_paths)}")  # fmt: skip
    say(f"    spares: {before} before it; right after it the service said {said_after}, pg_database held "
        f"{counted_after}")  # fmt: skip
    say(
        f"    back to {args.spares} (the service's figure and pg_database's) "
        + (f"{refilled:.1f} s after it   met" if refilled is not None else "not within 600 s   MISSED")
    )
    say(f"  context: GET /healthz on the same connection (HTTP alone), p50 {statistics.median(healthz):.2f} ms")
    for problem in problems:
        say(f"  problem: {problem}")
    return 0


def _counted(paths: Counter[str]) -> str:
    return ", ".join(f"{n} {path}" for path, n in paths.most_common()) or "(not reported)"


if __name__ == "__main__":
    sys.exit(main())
