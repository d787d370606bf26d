"""The bytes a school ran, found again: `resolve --restamp` knows the applied file by its checksum only, and an edit
can have REMOVED what the schema comparison cannot see (an INSERT taken out leaves a current file with nothing
unseen, while the school holds its rows). The migrations directory's git history, read locally (never fetched), is
searched for a version of the file whose SHA-384 is the recorded checksum.

Two versions are compared by their unseen statements (audit/coverage.py), comments removed, in order. Equal unseen
statements in both are accepted: what differs is then only what the schema comparison sees, and the school's
schema matched the current files. Not caught: a seen statement that changes what an unchanged unseen one did and
is undone later in the same file (a default or trigger changed before an INSERT and restored after it).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .audit.coverage import unseen_statements
from .settings import GIT_HISTORY_DEPTH, GIT_HISTORY_SECONDS
from .source import checksum

# The repository is the one holding the file, whatever the caller's environment points git at; nothing is fetched
# (a partial clone's missing blob stays missing), and nothing prompts.
_CLEARED = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")
_QUIET = {"GIT_NO_LAZY_FETCH": "1", "GIT_TERMINAL_PROMPT": "0"}


@dataclass(frozen=True)
class AppliedBytes:
    """One committed version of a file."""

    rev: str  # the newest commit holding these bytes
    text: str


def versions(
    path: Path, *, depth: int = GIT_HISTORY_DEPTH, seconds: float = GIT_HISTORY_SECONDS
) -> dict[bytes, AppliedBytes]:
    """The committed versions of `path` by checksum (newest commit first wins), across renames, at most `depth`
    commits and `seconds` in all. Empty when there is no history: not a git checkout, no git, history rewritten."""
    deadline = time.monotonic() + seconds
    follow = ("log", "--format=%x00%H", "--name-only", "--follow", f"-n{depth}", "--", path.name)
    log = _git(path.parent, deadline, *follow)
    found: dict[bytes, AppliedBytes] = {}
    for entry in (log or b"").decode("utf-8", "replace").split("\0")[1:]:
        rev, _, name = entry.strip().partition("\n")
        # `git log` names files from the repository's top, as `REV:path` reads them.
        blob = _git(path.parent, deadline, "show", f"{rev}:{name.strip()}") if name.strip() else None
        if blob is None:
            continue
        for variant in {blob, blob.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")}:  # core.autocrlf checkouts
            try:
                found.setdefault(checksum(variant), AppliedBytes(rev, variant.decode("utf-8")))
            except UnicodeDecodeError:
                continue
    return found


def _git(cwd: Path, deadline: float, *args: str) -> bytes | None:
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), "-c", "core.quotePath=false", *args],
            capture_output=True,
            timeout=left,
            env={k: v for k, v in os.environ.items() if k not in _CLEARED} | _QUIET,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def unseen_changes(applied: str, current: str) -> tuple[str, ...]:
    """What the schema comparison cannot see and that differs between the two versions: the unseen statements of
    either that the other does not hold (comments aside), or all of them when they are the same but reordered."""
    before, after = unseen_statements(applied), unseen_statements(current)
    if [code for _, code in before] == [code for _, code in after]:
        return ()
    kept, now = {code for _, code in after}, {code for _, code in before}
    gone = [f"applied file {u}" for u, code in before if code not in kept]
    new = [f"current file {u}" for u, code in after if code not in now]
    return tuple(gone + new) or tuple(f"current file {u} (reordered)" for u, _ in after)
