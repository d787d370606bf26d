#!/usr/bin/env bash
# Make sure what the tests and the demo run on is installed: PostgreSQL server binaries with contrib (for
# uuid-ossp), and, with --tests (what `make test` asks for), Debian's Chromium (the audit's HTML page is checked
# in a headless browser) and PgBouncer (tests through a connection pooler).
# Nothing here starts a server: tests and the demo start their own throwaway ones.
set -euo pipefail
need=()
bindir=$(pg_config --bindir 2>/dev/null || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ -z "$(ls /usr/share/postgresql/*/extension/uuid-ossp.control 2>/dev/null)" ]; then
  need+=(postgresql postgresql-contrib)
fi
# PgBouncer, for the tests that go through a connection pooler (transaction and session mode).
if [ "${1:-}" = "--tests" ] && [ ! -x /usr/sbin/pgbouncer ] && ! command -v pgbouncer >/dev/null; then
  need+=(pgbouncer)
fi
if [ "${1:-}" = "--tests" ] && ! command -v chromium >/dev/null; then
  need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root, or: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
