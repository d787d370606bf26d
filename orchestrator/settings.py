"""Every option of the tool as a typed value, each built-in default written once, and the one resolver.

The option groups (what the command line shows as panels, and what the Python API takes):
- `Selection`: which schools (--tenant/--tag/--exclude/--exclude-tag/--shard/--resume);
- `Budgets`: how hard to push (--concurrency/--retries), when to stop (--canary/--max-failures) and how long
  running work may go on after Ctrl-C / SIGTERM (--grace);
- `SchoolSettings`: the per-school settings, which the registry may set too (--connect-timeout/--lock-timeout/
  --statement-timeout/--lock-wait/--per-server/--template, --extension/--no-extensions);
- `Outputs`: where results go (--report/--junit/--json/--no-progress/--quiet);
- `Gate`: the safety gate (--allow-unsafe/--rehearse/--reference-url).

Precedence happens in `resolve()` and nowhere else: flag (or API argument) > the tenant's own registry entry >
the registry's `defaults:` > `BUILTIN`. In a `SchoolSettings` layer None means "not set here"; an empty tuple of
extensions is a value ("create none"), not "unset", and so is an empty template name ("no template").

This module imports only the errors: every other module may take its defaults from here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import UsageError, excerpt

DEFAULT_REGISTRY = Path("tenants.yaml")
DEFAULT_MIGRATIONS = Path("migrations")
# `orchestrator template --spares`: ready copies of the template kept on each server, each taken by one onboarding
# (a rename). Each is a full copy of the template (8 MB and more on disk per server); 4 covers a burst of
# onboardings between two runs (nightly, after a release); past them, onboarding copies the template as before.
DEFAULT_SPARES = 4
# `resolve --restamp`: how far back the migrations directory's git history is searched for the applied bytes of an
# edited file (commits that touched it, and seconds in all; the search is local, never a fetch).
GIT_HISTORY_DEPTH = 200
GIT_HISTORY_SECONDS = 10.0
# `--pushgateway`: how long the push of a run's metrics may take; a slow or absent gateway costs no more than this.
PUSH_TIMEOUT_S = 5.0

# `orchestrator serve`: where it listens; how old the fleet survey behind GET /v1/fleet may get (--survey-every);
# the largest request body it reads (a PUT's body is one URL); how many recent onboardings it remembers for the
# dashboard. (How long running onboardings get after SIGTERM is the run's --grace, Budgets.grace.)
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_SURVEY_EVERY = 300.0
SERVE_BODY_LIMIT = 16 * 1024
SERVE_RECENT_ONBOARDINGS = 200
# Cancelled from outside (serve's grace ran out): the drop of an empty database the request created gets this long.
DROP_AGAIN_S = 10.0

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class SchoolSettings:
    """One layer of per-school settings: flags, a tenant's entry, the registry's `defaults:`. None = not set."""

    extensions: tuple[str, ...] | None = None
    connect_timeout: float | None = None  # seconds
    lock_timeout: float | None = None  # seconds; 0 = no limit (PostgreSQL's meaning)
    statement_timeout: float | None = None  # seconds; 0 = no limit
    lock_wait: float | None = None  # seconds to wait for SQLx's migration lock before `locked`
    per_server: int | None = None  # sessions at once on the school's server
    template: str | None = None  # onboarding: create a new school's database from this template ("" = none)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Every per-school setting decided: what one school's sessions run with."""

    extensions: tuple[str, ...]
    connect_timeout: float
    lock_timeout: float
    statement_timeout: float
    lock_wait: float
    per_server: int
    template: str | None  # None or "": new schools are created by applying the migrations

    @property
    def template_name(self) -> str | None:
        """The template to onboard new schools from, if any ("" in a layer turns a registry default off)."""
        return self.template or None


BUILTIN = Resolved(
    # None: a school the tool builds is the one `sqlx migrate run` builds from the same files, unless the operator
    # asks for extensions (registry `extensions`, --extension, the API's `extensions=`), as the example registry does.
    extensions=(),
    connect_timeout=10.0,
    lock_timeout=5.0,
    statement_timeout=600.0,
    lock_wait=30.0,
    per_server=4,
    template=None,
)

SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SchoolSettings))
EMPTY = SchoolSettings()


@lru_cache(maxsize=1024)
def resolve(flags: SchoolSettings, tenant: SchoolSettings = EMPTY, defaults: SchoolSettings = EMPTY) -> Resolved:
    """flag > tenant > registry defaults > built-in, setting by setting. Cached: a fleet has few distinct layers."""
    values = {}
    for name in SETTING_NAMES:
        value = configured(name, flags, tenant, defaults)
        values[name] = getattr(BUILTIN, name) if value is None else value
    return Resolved(**values)


def configured(name: str, *layers: SchoolSettings) -> Any:
    """The first layer's value of setting `name` that is set (None: no layer sets it, the built-in applies)."""
    for layer in layers:
        value = getattr(layer, name)
        if value is not None:
            return value
    return None


@dataclass(frozen=True, slots=True)
class FailureBudget:
    """Halt once this many schools have failed: a count, or a fraction of the selection."""

    count: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> FailureBudget | None:
        if text is None or text == "":
            return None
        try:
            if text.endswith("%"):
                pct = float(text[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                return cls(fraction=pct / 100)
            count = int(text)
            if count < 1:
                raise ValueError
            return cls(count=count)
        except ValueError:
            raise UsageError(
                f"--max-failures {text!r} is not a whole number >= 1 or a percentage",
                hint="e.g. --max-failures 3 or --max-failures 5%",
            ) from None

    def limit(self, total: int) -> int:
        if self.count is not None:
            return self.count
        return max(1, math.ceil((self.fraction or 0) * total))

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{(self.fraction or 0) * 100:g}%"


@dataclass(frozen=True, slots=True)
class Budgets:
    """How many schools at once, how often to retry, and when a rollout stops starting schools."""

    concurrency: int = 8  # schools at once, in total
    retries: int = 2  # extra attempts for a school whose failure is transient
    retry_backoff: float = 0.5  # seconds before the first retry; doubles, with jitter (no flag: tests shorten it)
    canary: int = 0  # when no school is tagged `canary`: the first N selected schools go first, alone
    max_failures: FailureBudget | None = None  # None: never halt
    server_down_after: int = 3  # attempts in a row with no answer from one server before its other schools skip it
    # After the first Ctrl-C / SIGTERM, seconds running work may go on before it is aborted (stopping.py). 20 s fits
    # Kubernetes' default 30 s between SIGTERM and SIGKILL, with room for the abort (connection.ABORT_CANCEL_S, twice)
    # and the report; a pod that should let long migrations finish raises both (deploy/k8s: --grace=600s, 660 s).
    grace: float = 20.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if not 0 <= self.grace < math.inf:
            raise UsageError(f"--grace {self.grace:g}: must be a finite number of seconds >= 0", hint="e.g. 600s")
        if self.retries < 0 or self.canary < 0 or self.server_down_after < 0:
            raise UsageError("--retries, --canary and --server-down-after must not be negative")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which tenants of the registry a command works on."""

    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()  # leave out every school with any of these tags (wins over tags and ids)
    shard: tuple[int, int] | None = None  # (index, count), index 0-based
    resume: Path | None = None  # an earlier --report: only its schools that did not end ok
    only: frozenset[str] | None = None  # ids chosen by the caller (the runner fills it from `resume`)

    @property
    def narrows(self) -> bool:
        return self != Selection()


@dataclass(frozen=True, slots=True)
class Outputs:
    report: Path | None = None  # the JSON report
    junit: Path | None = None
    json: bool = False  # the JSON report on stdout, human output on stderr
    progress: bool = True  # a live bar on a terminal, one line per school elsewhere
    quiet: bool = False  # only what is not ok, the summary and errors (no plan, no progress, no ok schools)
    metrics: Path | None = None  # Prometheus text file (node_exporter's textfile collector)
    pushgateway: str | None = None  # the same metrics pushed to this Prometheus Pushgateway


@dataclass(frozen=True, slots=True)
class Gate:
    allow_unsafe: bool = False  # let the safety gate's lint errors through (recorded in the report)
    rehearse: bool = False  # apply, revert and re-apply on a scratch database before any school
    # A rollout over a registry first makes a read-only plan pass, which refuses a split fleet (--no-preflight: off).
    preflight: bool = True
    # Servers for scratch databases (rehearsal, audit), at most one per PostgreSQL major version; need CREATEDB.
    reference_url: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.reference_url, str):  # one URL given as a string through the Python API
            object.__setattr__(self, "reference_url", (self.reference_url,))


def parse_duration(value: object, what: str) -> float:
    """Seconds from 30, 2.5, '500ms', '5s', '10m', '1h'. Raises UsageError naming `what`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        shown = excerpt(value) if isinstance(value, str) else repr(value)
        raise UsageError(f"{what}: {shown} is not a duration", hint="write e.g. 5s, 500ms or 10m")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 600.0 -> '10m', 5.0 -> '5s', 0.5 -> '500ms'."""
    for unit in ("h", "m", "s"):
        scale = _UNITS[unit]
        if seconds >= scale and (seconds / scale).is_integer():
            return f"{int(seconds / scale)}{unit}"
    return f"{seconds * 1000:g}ms" if seconds else "0s"


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise UsageError(
            f"--shard {text!r} is not I/N with 0 <= I < N",
            hint="e.g. --shard 0/4 ... --shard 3/4 (Kubernetes: --shard $JOB_COMPLETION_INDEX/N)",
        )
    return int(m.group(1)), int(m.group(2))


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) for --listen. Raises UsageError."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {excerpt(text)} is not HOST:PORT", hint="e.g. --listen 0.0.0.0:8080")
    return host, int(port)
