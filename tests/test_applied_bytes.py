"""applied_bytes: an edited file's applied versions, found again in the migrations directory's git history."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fleetkit import git_commit

from orchestrator.applied_bytes import AppliedBytes, unseen_changes, versions
from orchestrator.source import checksum

SEED = "-- the grading scale\nINSERT INTO grades VALUES (1, 'A'), (2, 'B');\n"


def test_every_committed_version_is_found_by_its_checksum_across_a_rename(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "db" / "migrations").mkdir(parents=True)
    old = repo / "db" / "migrations" / "2_seed.sql"
    old.write_text(SEED)
    first = git_commit(repo)
    old.write_text(SEED.replace("'B'", "'B+'"))
    second = git_commit(repo)
    new = old.with_name("2_grading_scale.sql")
    subprocess.run(["git", "-C", str(repo), "mv", str(old), str(new)], check=True)
    moved = SEED.replace("'B'", "'B+'") + "-- renamed\n"
    new.write_text(moved)
    third = git_commit(repo)
    new.write_text("-- not committed\n")

    found = versions(new)

    assert found[checksum(SEED.encode())] == AppliedBytes(first, SEED)
    assert found[checksum(SEED.replace("'B'", "'B+'").encode())] == AppliedBytes(second, SEED.replace("'B'", "'B+'"))
    assert found[checksum(moved.encode())] == AppliedBytes(third, moved)
    assert found[checksum(moved.replace("\n", "\r\n").encode())].rev == third, "a CRLF checkout (core.autocrlf)"
    assert {a.rev for a in found.values()} == {first, second, third}
    assert checksum(b"-- not committed\n") not in found


def test_no_history_finds_nothing(tmp_path: Path) -> None:
    (tmp_path / "2_seed.sql").write_text(SEED)
    assert versions(tmp_path / "2_seed.sql") == {}
    assert versions(tmp_path / "missing" / "2_seed.sql") == {}


def test_history_is_bounded_in_commits(tmp_path: Path) -> None:
    seed = tmp_path / "2_seed.sql"
    for label in ("A", "B", "C"):
        seed.write_text(SEED.replace("'A'", f"'{label}'"))
        git_commit(tmp_path)
    assert len({a.rev for a in versions(seed, depth=2).values()}) == 2
    assert versions(seed, seconds=0) == {}


def test_unseen_changes_compare_what_the_schema_cannot_see() -> None:
    removed = unseen_changes(SEED, "-- the grading scale (now kept elsewhere)\n")
    assert removed == ("applied file line 2: INSERT (changes rows, which the schema comparison does not see)",)
    assert unseen_changes(SEED, SEED.replace("scale", "scale (A best)")) == ()
    assert unseen_changes(SEED, "CREATE TABLE t (id int);\n" + SEED.replace("INSERT", "INSERT -- x\n")) == ()
    assert unseen_changes(SEED, SEED.replace("'B'", "'B '")), "a literal's spaces are its value"
    changed = unseen_changes(SEED, SEED.replace("'B'", "'B+'"))
    assert [c.split(":")[0] for c in changed] == ["applied file line 2", "current file line 2"]
    two = "DELETE FROM grades;\nINSERT INTO grades VALUES (1, 'A');\n"
    swapped = "INSERT INTO grades VALUES (1, 'A');\nDELETE FROM grades;\n"
    assert unseen_changes(two, swapped) == (
        "current file line 1: INSERT (changes rows, which the schema comparison does not see) (reordered)",
        "current file line 2: DELETE (changes rows, which the schema comparison does not see) (reordered)",
    )
