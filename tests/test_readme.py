"""The README's examples, as a reader would use them: every Python block runs against a throwaway server (its
placeholder URL and registry swapped for the test's), every `orchestrator ...` command line of a shell block (README
and deploy/README) is accepted by the CLI's own parser, and every full registry in a YAML block loads. An example
that no longer matches the tool fails here, not in a reader's terminal."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
from fleetkit import ROOT, registry_url, write_registry
from pgfixtures import PG_PASSWORD, database_of

from orchestrator.cli import app
from orchestrator.devserver import DevServer
from orchestrator.registry import load_registry

DOCUMENTS = [ROOT / "README.md", ROOT / "deploy" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
# The Python example's placeholders: a school's URL and the registry it reads.
EXAMPLE_URL = "postgresql://app:pw@db1:5432/school_new"
EXAMPLE_REGISTRY = 'Path("tenants.yaml")'


def blocks(language: str) -> list[tuple[str, str]]:
    """(where, code) of each fenced block in `language` ("" for unlabelled ones, which hold shell lines)."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{document.relative_to(ROOT)}:{line}", match.group(2)))
    return found


def command_lines() -> list[tuple[str, list[str]]]:
    """Each `orchestrator ...` line of the shell blocks (continuations joined, comments and VAR=value dropped)."""
    lines = []
    for where, code in [*blocks(""), *blocks("sh"), *blocks("bash"), *blocks("shell")]:
        for line in code.replace("\\\n", " ").splitlines():
            if not re.match(r"\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*orchestrator\s", line):
                continue  # other tools, output shown in a block, diagrams
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words.pop(0)
            if words and words[0] == "orchestrator":
                lines.append((where, words[1:]))
    return lines


def test_the_readme_has_examples_of_each_kind() -> None:
    assert len(blocks("python")) >= 1 and len(blocks("yaml")) >= 2 and len(command_lines()) >= 20


@pytest.mark.parametrize(("where", "args"), command_lines(), ids=[" ".join(a)[:60] for _, a in command_lines()])
def test_each_command_line_is_accepted_by_the_parser(where: str, args: list[str]) -> None:
    # click's own parsing, down to the subcommand, without running it: an unknown flag, a missing value or a
    # misspelt command raises here. (Values such as `-D URL` are only parsed: their checks need a run.)
    group: Any = typer.main.get_command(app)
    with group.make_context("orchestrator", list(args)) as context:
        # The command's name is held apart from its arguments (typer's click: `_protected_args`).
        name, command, rest = group.resolve_command(context, [*context._protected_args, *context.args])
        assert command is not None, f"{where}: no command in {args}"
        command.make_context(name, rest, parent=context)


@pytest.mark.parametrize(("where", "code"), blocks("yaml"), ids=[w for w, _ in blocks("yaml")])
def test_each_full_registry_example_loads(where: str, code: str, tmp_path: Path) -> None:
    if not re.match(r"(defaults|tenants|source):", code):
        pytest.skip("a fragment of an entry, not a registry")
    path = tmp_path / "tenants.yaml"
    path.write_text(code)
    names = set(re.findall(r"\$\{(\w+)", code))
    load_registry(path, env=dict.fromkeys(names, "x"))


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=[w for w, _ in blocks("python")])
def test_each_python_example_runs_on_a_real_server(
    where: str, code: str, fresh_url: str, pg: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = write_registry(tmp_path / "tenants.yaml", [("school-new", registry_url(pg, database_of(fresh_url)), [])])
    for placeholder in (EXAMPLE_URL, EXAMPLE_REGISTRY):
        assert placeholder in code, f"{where}: the example no longer uses {placeholder}; update this test's stand-in"
    code = code.replace(EXAMPLE_URL, fresh_url).replace(EXAMPLE_REGISTRY, f"Path({str(registry)!r})")
    monkeypatch.chdir(ROOT)  # `migrations="migrations"`: the project's own, as in a checkout
    monkeypatch.setenv("PGPW", PG_PASSWORD)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, where, "exec"), namespace)  # the README's own example, run as written
    assert namespace["result"].ok
    assert namespace["report"].ok, "the school it provisioned is up to date"
