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
if [ -d tests/data/unsafe_migrations ]; then
  step "The safety gate on a directory of unsafe migrations (expected to fail)" \
    $BIN/orchestrator lint tests/data/unsafe_migrations --no-squawk
fi
echo
echo "report: .demo/report.json  junit: .demo/junit.xml  (run 'make demo' again: everything is up to date)"
