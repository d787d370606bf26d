"""A throwaway PgBouncer (Debian's `pgbouncer`, installed by `make test`) in front of a test server.

As root it runs as the `postgres` OS user (PgBouncer refuses to run as root), like the test servers themselves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from orchestrator.devserver import PG_OS_USER, DevServer, free_port


class PgBouncer:
    """`round_robin`: PgBouncer's `server_round_robin = 1` (hand out server connections in turn; its default is
    LIFO). `pool_size`: `default_pool_size`. `query_wait_timeout`: how long a client waits for a server connection.
    `extra`: more lines for the [pgbouncer] section."""

    def __init__(
        self,
        server: DevServer,
        password: str,
        mode: str,
        *,
        round_robin: bool = False,
        pool_size: int = 4,
        query_wait_timeout: int = 120,
        extra: str = "",
    ) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.dir = Path(tempfile.mkdtemp(prefix=f"orchestrator-pgbouncer-{mode}-"))
        self.port = free_port()
        self.mode = mode
        (self.dir / "userlist.txt").write_text(f'"postgres" "{password}"\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server.port} user=postgres password={password}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            "auth_type = plain\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            f"pool_mode = {mode}\n"
            f"default_pool_size = {pool_size}\n"
            f"server_round_robin = {int(round_robin)}\n"
            f"query_wait_timeout = {query_wait_timeout}\n"
            "max_client_conn = 200\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
            f"{extra}"
        )
        if os.geteuid() == 0:
            shutil.chown(self.dir, PG_OS_USER)
            for child in self.dir.iterdir():
                shutil.chown(child, PG_OS_USER)
        command = [binary, "-d", str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_OS_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        log = (self.dir / "pgbouncer.log").read_text() if (self.dir / "pgbouncer.log").exists() else ""
        raise RuntimeError(f"pgbouncer did not start on {self.port}: {log[-2000:]}")

    def url(self, password: str, database: str) -> str:
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        pidfile = self.dir / "pgbouncer.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().strip()), 15)
            deadline = time.monotonic() + 10
            while pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
