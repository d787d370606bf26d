"""Adversary: an output file named through a symlink is written where the link points (what was checked), never by
replacing the link: `--report /dev/stdout` as root once replaced /dev/stdout with a regular file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fleetkit import ROOT, make_migrations


def test_a_report_through_a_symlink_replaces_the_file_it_names_not_the_link(tmp_path: Path) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    real = tmp_path / "reports" / "real.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "report.json"
    link.symlink_to(real)
    stdout_link = tmp_path / "stdout"
    stdout_link.symlink_to("/proc/self/fd/1")  # /dev/stdout's own kind of link
    out = tmp_path / "out.txt"
    with out.open("w") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "migrate", "-D", "postgresql://u:pw@127.0.0.1:1/school_x",
             "--migrations", str(migrations), "--report", str(link), "--junit", str(stdout_link),
             "--connect-timeout", "2s", "--retries", "0"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert link.is_symlink() and stdout_link.is_symlink()
    assert json.loads(real.read_text())["schools"][0]["status"] == "unreachable"
    assert "<testsuite" in out.read_text()  # the JUnit went to the process's stdout, a regular file
