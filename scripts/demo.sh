#!/usr/bin/env bash
# The main job, end to end, against a throwaway local PostgreSQL in .demo/ (kept between runs, so a second
# `make demo` shows an idempotent rollout: everything up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-postgres.sh

BIN=.venv/bin
export SCHOOL_DB_PASSWORD=${SCHOOL_DB_PASSWORD:-demo-only-password}
export DEMO_PG_PORT=${DEMO_PG_PORT:-55432}
mkdir -p .demo
# Echo each command with the password masked: secrets never reach the terminal or a CI log.
step() { local shown="${*:2}"; printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${shown//$SCHOOL_DB_PASSWORD/***}"; "${@:2}" || true; }

$BIN/python -m orchestrator.devserver start --dir .demo/pg --port "$DEMO_PG_PORT" --password "$SCHOOL_DB_PASSWORD"
trap '$BIN/python -m orchestrator.devserver stop --dir .demo/pg >/dev/null' EXIT

step "Lint the migrations before they go anywhere" $BIN/orchestrator lint migrations
step "Bootstrap: create the missing school databases, extensions and history tables" $BIN/orchestrator bootstrap
step "Plan: where the fleet stands and what would run (read-only)" $BIN/orchestrator plan
step "Roll out: canary first, then the rest; report and JUnit written" \
  $BIN/orchestrator migrate --report .demo/report.json --junit .demo/junit.xml
step "Status of the fleet after the rollout" $BIN/orchestrator status
step "Onboard one new school in one idempotent call (the admin service's hook)" \
  $BIN/orchestrator provision -D "postgresql://postgres:${SCHOOL_DB_PASSWORD}@127.0.0.1:${DEMO_PG_PORT}/school_new_demo"
step "Nightly audit of a clean fleet (read-only)" $BIN/orchestrator audit --no-progress

psql_echo() { PGPASSWORD=$SCHOOL_DB_PASSWORD psql -q -h 127.0.0.1 -p "$DEMO_PG_PORT" -U postgres -d school_echo -c "$1"; }
step "Inject a drift by hand into school-echo: an index the migrations never made" \
  psql_echo "CREATE INDEX IF NOT EXISTS idx_students_email ON students (email)"
step "The audit finds it (exit 1), with metrics and an HTML page" \
  $BIN/orchestrator audit --no-progress --metrics .demo/audit.prom --html .demo/audit.html --report .demo/audit.json
psql_echo "DROP INDEX IF EXISTS idx_students_email"

step "The safety gate on a directory of unsafe migrations (expected to fail)" \
  $BIN/orchestrator lint tests/data/unsafe_migrations --format editor
echo
echo "written: .demo/report.json .demo/junit.xml .demo/audit.json .demo/audit.prom .demo/audit.html"
echo "run 'make demo' again: every school is up to date."
