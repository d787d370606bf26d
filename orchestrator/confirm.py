"""What a write over a registry must have confirmed before it starts, and how to say it.

Two things are confirmed: the work a rollout's plan pass found (migrate, revert, resolve, provision; the schools
`migrate --create-missing` and `provision` would create count as work), and any write over the whole registry,
whatever it would do. The whole registry is judged by what was selected, not by the flags typed: `--shard 0/1`, a
tag every school has or a --resume of a run where none ended ok select every school. The command line asks on a
terminal and, without one, refuses unless --yes (exit 2, nothing written). The Python API asks nothing: a call is
its own confirmation. One database (-D) is never asked about.
"""

from __future__ import annotations

from dataclasses import dataclass

from .command import Command
from .errors import UsageError
from .job import Job
from .outcome import Status
from .report import RunReport

NO_SELECTION = "no --tenant, --tag, --exclude, --exclude-tag, --shard or --resume"
LEAVES_NONE_OUT = "the selection leaves none out"


@dataclass(frozen=True)
class Confirmation:
    what: str  # e.g. "migrate would apply migrations on 3 school(s)"

    @property
    def question(self) -> str:
        return f"{self.what[:1].upper()}{self.what[1:]}. Go ahead?"

    def refusal(self) -> UsageError:
        """Without a terminal to ask on and without --yes."""
        return UsageError(
            f"not confirmed: {self.what}. Nothing was written: there is no terminal to ask on",
            hint="a script or CI job confirms with --yes (after reading the plan above); on a terminal the command "
            "asks",
        )


def to_confirm(job: Job, planned: RunReport | None) -> Confirmation | None:
    """What `job` must have confirmed before it writes, from its plan pass (None when there was none: a rollout
    with --no-preflight counts as work); None: nothing to confirm."""
    request = job.request
    if request.single or not job.writes or (planned is not None and planned.interrupted):
        return None  # interrupted during the plan pass: nothing will be written
    work = _work(job, planned) if job.command.plans_first else None
    whole = job.every_school
    if work is None and not whole:
        return None
    how = LEAVES_NONE_OUT if request.selection.narrows else NO_SELECTION
    scope = f"every school of {request.registry} ({len(job.tenants)}; {how})"
    command = job.command.value
    if work is None:
        nothing = "; its plan pass found nothing to write" if planned is not None and job.command.plans_first else ""
        return Confirmation(f"{command} would act on {scope}{nothing}")
    return Confirmation(f"{command} would {work}" + (f", over {scope}" if whole else ""))


def _work(job: Job, planned: RunReport | None) -> str | None:
    """What a rollout would write, in a few words; None: nothing."""
    command, n = job.command, len(job.tenants)
    if planned is None:
        return f"write on up to {n} school(s) (no plan pass, --no-preflight: which ones is not known)"
    if command is Command.RESOLVE:
        assert job.request.resolve is not None
        how, version = job.request.resolve
        return f"change the ledger of {n} school(s) (resolve --{how.replace('_', '-')} {version})"
    counts = planned.counts()
    to_do = counts.get(Status.PLANNED.value, 0)
    creates = job.request.create_missing or command is Command.PROVISION
    to_create = counts.get(Status.NO_DATABASE.value, 0) if creates else 0
    verb = "revert migrations" if command is Command.REVERT else "apply migrations"
    parts = [f"{verb} on {to_do} school(s)"] if to_do else []
    if to_create:
        parts.append(f"create {to_create} school database(s) and migrate them")
    return " and ".join(parts) or None
