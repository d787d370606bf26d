"""One surface, checked by walking the click app itself (not the help text): every command that works over schools
takes every flag of the shared option groups, and a flag of one name is one flag wherever it appears (the same
help, type, default and arity), so a script written for one command runs on all of them."""

from __future__ import annotations

from typing import Any

import typer.main

from orchestrator.cli import app, options

# Commands that do not work over schools: `lint` reads files (and, with --baseline, the ledgers: LEDGERS), `new`
# writes one. Every other command is a fleet command, so a command added later is checked without naming it here.
NOT_FLEET = {"lint", "new", "serve"}
# `serve` selects no schools and writes no report (it onboards the school each request names, and answers over
# HTTP): it takes the groups that describe where and how it works.
SERVICE_GROUPS = ("DATABASES", "BUDGETS", "SESSION", "LOGGING")
SHARED = ("DATABASES", "SELECTION", "BUDGETS", "SESSION", "OUTPUTS", "LOGGING")
# Own options that share a name but not a meaning, on purpose: --target is "up to" on migrate/plan, "down to" (and
# required) on revert; `new --migrations` is the one directory it writes into, not a source of several.
SAME_NAME_OTHER_MEANING = {("--target", "revert"), ("--migrations", "new")}


def commands() -> dict[str, Any]:
    """name -> click command (typer 0.28 carries its own click: its classes are typer's, hence no isinstance)."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def shared_flags() -> set[str]:
    return {decl for name in SHARED for flag in getattr(options, name).flags for decl in flag.decls}


def declarations(command: Any) -> set[str]:
    return {decl for p in command.params for decl in (*p.opts, *p.secondary_opts)}


def test_every_fleet_command_takes_every_flag_of_the_shared_groups() -> None:
    fleet = {name: c for name, c in commands().items() if name not in NOT_FLEET}
    assert {"migrate", "plan", "status", "bootstrap", "provision", "revert", "resolve", "audit", "template"} <= set(
        fleet
    )
    missing = {name: sorted(shared_flags() - declarations(c)) for name, c in fleet.items()}
    assert not {name: flags for name, flags in missing.items() if flags}, "fleet commands lacking shared flags"


def test_the_service_takes_the_groups_that_apply_to_it() -> None:
    wanted = {decl for name in SERVICE_GROUPS for flag in getattr(options, name).flags for decl in flag.decls}
    assert not sorted(wanted - declarations(commands()["serve"]))


def describe(param: Any) -> tuple[Any, ...]:
    help_text, is_flag = getattr(param, "help", None), getattr(param, "is_flag", False)
    kind = (type(param.type).__name__, sorted(vars(param.type).items(), key=str))  # typer's types print an address
    return (help_text, repr(kind), repr(param.default), param.multiple, is_flag, param.required,
            tuple(sorted((*param.opts, *param.secondary_opts))))  # fmt: skip


def test_a_flag_of_one_name_is_the_same_flag_on_every_command() -> None:
    seen: dict[str, dict[tuple[Any, ...], list[str]]] = {}
    for name, command in commands().items():
        for param in command.params:
            for decl in param.opts:
                if decl.startswith("--") and (decl, name) not in SAME_NAME_OTHER_MEANING:
                    seen.setdefault(decl, {}).setdefault(describe(param), []).append(name)
    differing = {decl: list(variants.values()) for decl, variants in seen.items() if len(variants) > 1}
    assert not differing, f"one name, several flags (commands grouped by variant): {differing}"
    assert len(seen["--concurrency"][next(iter(seen["--concurrency"]))]) >= 9, "the walk saw the commands"
