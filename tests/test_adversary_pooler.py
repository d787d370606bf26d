"""Adversary: a session pooler told to accept our startup parameters and drop them (`ignore_startup_parameters`).

PgBouncer then refuses nothing at start-up, so the session is not known to be behind a pooler, and the limits the
README promises on every session (lock_timeout, statement_timeout) never reach the server: a migration's ALTER
TABLE may wait for its lock for ever while every query of the school queues behind it.
"""

from __future__ import annotations

import json
from pathlib import Path

from fleetkit import cli, make_migrations, make_school
from pgbouncer import PgBouncer
from pgfixtures import PG_PASSWORD

from orchestrator.devserver import DevServer

DROPPED = (
    "ignore_startup_parameters = lock_timeout, statement_timeout, standard_conforming_strings, "
    "default_transaction_read_only\n"
)
CHECK = """DO $$ BEGIN
  IF current_setting('lock_timeout') = '0' OR current_setting('statement_timeout') = '0' THEN
    RAISE EXCEPTION 'no limits: lock_timeout=%, statement_timeout=%',
      current_setting('lock_timeout'), current_setting('statement_timeout');
  END IF;
END $$;
"""


def test_adversary_limits_hold_through_a_pooler_that_drops_startup_parameters(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations", {"1_limits.sql": CHECK})
    db = make_school(pg, "adv_dropped_limits")
    with PgBouncer(pg, PG_PASSWORD, "session", pool_size=20, extra=DROPPED) as bouncer:
        url = bouncer.url(PG_PASSWORD, db)
        result = cli("migrate", "--yes", "-D", url, "--migrations", str(migrations), "--json", "--lock-timeout", "3s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["schools"][0]["applied"] == [1]
