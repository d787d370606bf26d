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
# Echo each command with the password masked: secrets never reach the terminal or a CI log. A step that fails
# stops the demo (set -e); `expect_findings` runs a step whose point is to find something: exit 1 is its success.
show() { local shown="${*:2}"; printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${shown//$SCHOOL_DB_PASSWORD/***}"; }
step() { show "$@"; "${@:2}"; }
expect_findings() {
  show "$@"
  local rc=0
  "${@:2}" || rc=$?
  if [ "$rc" -ne 1 ]; then echo "demo: expected exit 1 (findings), got $rc" >&2; exit 1; fi
}

$BIN/python -m orchestrator.devserver start --dir .demo/pg --port "$DEMO_PG_PORT" --password "$SCHOOL_DB_PASSWORD"
trap '$BIN/python -m orchestrator.devserver stop --dir .demo/pg >/dev/null' EXIT

step "Lint the migrations before they go anywhere" $BIN/orchestrator lint migrations
# Over every school of the registry, a write is confirmed: a script says --yes (a terminal would be asked).
step "Bootstrap: create the missing school databases, extensions and history tables" $BIN/orchestrator bootstrap --yes
step "Plan: where the fleet stands and what would run (read-only)" $BIN/orchestrator plan
step "Roll out: a read-only plan pass, then canary first and the rest; report and JUnit written" \
  $BIN/orchestrator migrate --yes --report .demo/report.json --junit .demo/junit.xml
step "Status of the fleet after the rollout" $BIN/orchestrator status
# The migrations call uuid_generate_v4(): -D asks for the extension the registry's defaults name (none by default).
step "Onboard one new school in one idempotent call (the admin service's hook)" \
  $BIN/orchestrator provision -D "postgresql://postgres:${SCHOOL_DB_PASSWORD}@127.0.0.1:${DEMO_PG_PORT}/school_new_demo" \
  --extension uuid-ossp
SPARE_URL="postgresql://postgres:${SCHOOL_DB_PASSWORD}@127.0.0.1:${DEMO_PG_PORT}/school_new_from_spare"
step "Keep a template and 2 ready copies of it on the server (nightly and after a release)" \
  $BIN/orchestrator template -D "$SPARE_URL" --template school_template --spares 2 --extension uuid-ossp
step "Onboard a school from a ready copy: a rename, not every migration file" \
  $BIN/orchestrator provision -D "$SPARE_URL" --template school_template --extension uuid-ossp
step "Nightly audit of a clean fleet (read-only)" $BIN/orchestrator audit --no-progress

psql_echo() { PGPASSWORD=$SCHOOL_DB_PASSWORD psql -q -h 127.0.0.1 -p "$DEMO_PG_PORT" -U postgres -d school_echo -c "$1"; }
step "Inject a drift by hand into school-echo: an index the migrations never made" \
  psql_echo "CREATE INDEX IF NOT EXISTS idx_students_email ON students (email)"
expect_findings "The audit finds it (exit 1), with metrics and an HTML page" \
  $BIN/orchestrator audit --no-progress --metrics .demo/audit.prom --html .demo/audit.html --report .demo/audit.json
psql_echo "DROP INDEX IF EXISTS idx_students_email"

expect_findings "The safety gate on a directory of unsafe migrations (exit 1: it refuses them)" \
  $BIN/orchestrator lint tests/data/unsafe_migrations --format editor
echo
echo "written: .demo/report.json .demo/junit.xml .demo/audit.json .demo/audit.prom .demo/audit.html"
echo "run 'make demo' again: every school is up to date."
