"""The facts SQLx 0.8 fixes and we must match byte for byte (docs/sqlx-compat.md).

Everything here is shared with every `sqlx::migrate!` in the school backends and with the `sqlx` CLI: the history
table, the advisory-lock key, and the wording of the refusals (so an operator who knows SQLx recognises them).
"""

from __future__ import annotations

import zlib

HISTORY_TABLE = "_sqlx_migrations"

CREATE_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);
"""

SELECT_APPLIED = "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version"

INSERT_APPLIED = (
    "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) "
    "VALUES ( $1, $2, TRUE, $3, -1 )"
)
DELETE_APPLIED = "DELETE FROM _sqlx_migrations WHERE version = $1"

# A `-- no-transaction` file is recorded as in progress before it runs: SQLx's own row with success = FALSE, which
# SQLx reads as "partially applied" and refuses to run past (so an interrupted file is never silently run twice).
# When the file completes, the row becomes exactly the one SQLx writes: success, execution time in nanoseconds,
# installed when the file finished (SQLx inserts its row after the file ran).
INSERT_IN_PROGRESS = (
    "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) "
    "VALUES ( $1, $2, FALSE, $3, -1 )"
)
MARK_DONE = (
    "UPDATE _sqlx_migrations SET success = TRUE, execution_time = $2, installed_on = now() "
    "WHERE version = $1 AND NOT success"
)
# An operator's way out of "partially applied" once the file is known to have taken effect: the row SQLx would have
# written (execution_time -1, SQLx's value when its timing UPDATE did not happen).
UPSERT_APPLIED = (
    "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) "
    "VALUES ( $1, $2, TRUE, $3, -1 ) "
    "ON CONFLICT (version) DO UPDATE SET description = EXCLUDED.description, success = TRUE, "
    "checksum = EXCLUDED.checksum"
)


# `resolve --restamp`: the current file's checksum on an applied row (nothing else changes).
RESTAMP = "UPDATE _sqlx_migrations SET checksum = $2 WHERE version = $1 AND success"


def mark_applied_sql(version: int) -> str:
    """What an operator runs when an interrupted file did take effect (the row already holds its checksum)."""
    return f"UPDATE _sqlx_migrations SET success = true WHERE version = {int(version)}"


def forget_sql(version: int) -> str:
    """What an operator runs when an interrupted file did not take effect: it is then pending again."""
    return f"DELETE FROM _sqlx_migrations WHERE version = {int(version)}"


def insert_applied_literal(version: int, description: str, checksum: bytes) -> str:
    """INSERT_APPLIED with its values as literals, so it can travel in the same simple-protocol message as the
    migration file (one round trip instead of three). The values come from migration files, not from the
    registry; they are quoted, never pasted: an int, a string literal with quotes doubled (the session sets
    standard_conforming_strings=on), and hex digits."""
    text = "'" + description.replace("'", "''") + "'"
    return (
        "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) "
        f"VALUES ( {int(version)}, {text}, TRUE, '\\x{checksum.hex()}'::bytea, -1 )"
    )


def update_execution_time_literal(nanoseconds: int, version: int) -> str:
    """SQLx's follow-up UPDATE, after the commit; two ints, so no parameters (and no extra round trip)."""
    return f"UPDATE _sqlx_migrations SET execution_time = {int(nanoseconds)} WHERE version = {int(version)}"


# The table SQLx would use: the first schema of search_path that exists.
HISTORY_TABLE_EXISTS = "SELECT to_regclass('_sqlx_migrations') IS NOT NULL"

_LOCK_MULTIPLIER = 0x3D32AD9E


def advisory_lock_key(database_name: str) -> int:
    """SQLx's PostgreSQL migration lock key: 0x3d32ad9e * crc32(current_database()), a signed 64-bit value."""
    return _LOCK_MULTIPLIER * zlib.crc32(database_name.encode("utf-8"))


def dirty_message(version: int) -> str:
    return f"migration {version} is partially applied; fix and remove row from `_sqlx_migrations` table"


def missing_message(version: int) -> str:
    return f"migration {version} was previously applied but is missing in the resolved migrations"


def modified_message(version: int) -> str:
    return f"migration {version} was previously applied but has been modified"
