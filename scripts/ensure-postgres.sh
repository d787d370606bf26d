#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (with contrib, for uuid-ossp) are installed. Tests and the demo start their
# own throwaway servers from these binaries; nothing here starts a server.
set -euo pipefail
bindir=$(pg_config --bindir 2>/dev/null || true)
if [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -n "$(ls /usr/share/postgresql/*/extension/uuid-ossp.control 2>/dev/null)" ]; then
  exit 0
fi
echo "PostgreSQL server binaries or contrib missing: installing them" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root, or: sudo apt-get install -y postgresql postgresql-contrib" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql postgresql-contrib >/dev/null
