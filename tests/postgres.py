"""A real PostgreSQL server for the test run: Debian's binaries, started as an unprivileged
user in a temporary folder, listening on 127.0.0.1 and a free port only.

`initdb` and `pg_ctl` refuse to run as root (the tests run as root), so as root they run
as the `postgres` user that Debian's package creates (`runuser -u postgres --`). The
cluster trusts every connection: it listens on 127.0.0.1 and a socket in its own folder
only, and lives as long as the test run. conftest.py's `postgresql_url` fixture starts it;
`MAILER_TEST_POSTGRESQL` names a server to use instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from subprocess import DEVNULL, Popen
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

URL_VARIABLE = "MAILER_TEST_POSTGRESQL"
# Where Debian's `postgresql-NN` packages put the server binaries (pg_config from libpq-dev
# may name a folder that has only the client programs, so each candidate needs initdb).
# $MAILER_TEST_POSTGRESQL_BINDIR (a glob) looks elsewhere, e.g. /usr/local/pgsql/bin.
BINDIR_VARIABLE = "MAILER_TEST_POSTGRESQL_BINDIR"
BINDIR_GLOB = "/usr/lib/postgresql/*/bin"
UNPRIVILEGED_USER = "postgres"
START_TIMEOUT_S = 60  # a busy CI machine; pg_ctl returns as soon as the server accepts
# A test cluster that dies with its machine is thrown away: skip the flushes (much faster
# on a busy disk). Killing mailer nodes, not the server, is what the tests do.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "200",  # several `mailer run` processes, each with a pool
}
HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


def is_ci(environ: Mapping[str, str]) -> bool:
    """Whether this run is CI, where the PostgreSQL half must run (CI=true, as CI sets it)."""
    return environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str, *, environ: Mapping[str, str]) -> NoReturn:
    """Skip a PostgreSQL test on a developer's machine; in CI fail it: a skip would hide
    that half of the suite never ran."""
    if is_ci(environ):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests (CI is set)", pytrace=False)
    pytest.skip(f"{reason}; install Debian's postgresql package or set {URL_VARIABLE}")


def bindir_pattern(environ: Mapping[str, str]) -> str:
    """Where to look for the server's binaries: $MAILER_TEST_POSTGRESQL_BINDIR or Debian's."""
    return environ.get(BINDIR_VARIABLE) or BINDIR_GLOB


def find_bindir(pattern: str) -> Path | None:
    """The newest installed server's binaries (the folder holding initdb and pg_ctl)."""
    candidates = [Path(found) for found in glob.glob(pattern)]
    if configured := shutil.which("pg_config"):
        result = subprocess.run([configured, "--bindir"], capture_output=True, text=True)
        candidates.append(Path(result.stdout.strip()))
    usable = [path for path in candidates if (path / "initdb").is_file()]
    return max(usable, key=_version, default=None)


def _version(bindir: Path) -> tuple[int, ...]:
    """15 for /usr/lib/postgresql/15/bin, so 16 sorts above 9.6."""
    digits = bindir.parent.name.split(".")
    return tuple(int(part) for part in digits) if all(p.isdigit() for p in digits) else (0,)


def free_port() -> int:
    """A port free on 127.0.0.1 now (the server is started on it at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """A throwaway cluster in its own folder, run as `user`: started, stopped (as a crash
    stops it, `-m immediate`) and started again by tests of a database that goes away."""

    def __init__(
        self,
        bindir: Path,
        user: pwd.struct_passwd | None,
        folder: Path,
        *,
        durable: bool,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bindir = bindir
        self.user = user
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.durable = durable
        self.settings = dict(settings or {})  # over SERVER_SETTINGS (the benchmarks' own)

    def create(self) -> None:
        _run(
            self.user,
            self.folder,
            self.bindir / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        # A commit a client was told of survives the server's crash only if it waited for
        # its WAL: what a test that crashes the server needs (fsync off still holds: the
        # machine does not crash, only the server).
        extra = {"synchronous_commit": "on"} if self.durable else {}
        extra |= self.settings
        _configure(self.data, port=self.port, socket_dir=self.folder, extra=extra)

    def start(self) -> None:
        log = self.folder / "server.log"
        pg_ctl = self.bindir / "pg_ctl"
        timeout = str(START_TIMEOUT_S)
        _run(
            self.user, self.folder, pg_ctl, "-D", self.data, "-l", log, "-w", "-t", timeout,
            "start", log=log,
        )  # fmt: skip

    def stop(self) -> None:
        """At once, as a crash would: every connection is cut."""
        _run(self.user, self.folder, self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate",
             "-w", "stop")  # fmt: skip


@contextlib.contextmanager
def running_cluster(
    bindir: Path, *, durable: bool = False, settings: Mapping[str, str] | None = None
) -> Iterator[Cluster]:
    """Start a throwaway cluster (superuser `postgres`, database `postgres`); stop it and
    remove its folder afterwards, even if the test run is killed. `settings` go over
    SERVER_SETTINGS (the benchmarks run the server as deployed, flushing)."""
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
    try:
        if user is not None:
            shutil.chown(folder, user=user.pw_uid, group=user.pw_gid)
        cluster = Cluster(bindir, user, folder, durable=durable, settings=settings)
        cluster.create()
        cluster.start()
        watcher = _watch(user, folder, bindir / "pg_ctl", cluster.data)
        try:
            yield cluster
        finally:
            watcher.kill()
            watcher.wait()
            with contextlib.suppress(RuntimeError):  # a test may have left it stopped
                cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_server(bindir: Path) -> Iterator[str]:
    """Start a throwaway cluster; yield its URL (superuser `postgres`, database `postgres`);
    stop it and remove its folder afterwards."""
    with running_cluster(bindir) as cluster:
        yield cluster.url


# A test run killed (SIGKILL, or SIGTERM from `timeout`, which skips pytest's finalizers)
# would leave its server running: a process of its own stops it once the run is gone.
_WATCHER = """
import os, shutil, subprocess, sys, time
pid, folder, *stop = sys.argv[1:]
while os.path.exists(f"/proc/{pid}"):
    time.sleep(1)
subprocess.run(stop, cwd=folder, capture_output=True)
shutil.rmtree(folder, ignore_errors=True)
"""


def _watch(user: pwd.struct_passwd | None, folder: Path, pg_ctl: Path, data: Path) -> Popen[bytes]:
    """Start the process that stops the server if this one dies before it can."""
    stop = [str(pg_ctl), "-D", str(data), "-m", "immediate", "-w", "stop"]
    if user is not None:
        stop = ["runuser", "-u", user.pw_name, "--", *stop]
    argv = [sys.executable, "-c", _WATCHER, str(os.getpid()), str(folder), *stop]
    return Popen(argv, start_new_session=True, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: as root the `postgres` user (pg_ctl refuses root), else us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise RuntimeError(
            f"no user {UNPRIVILEGED_USER!r} to run PostgreSQL as (initdb refuses root); "
            "Debian's postgresql package creates it"
        ) from None


def _configure(
    data: Path, *, port: int, socket_dir: Path, extra: Mapping[str, str] | None = None
) -> None:
    """Listen on 127.0.0.1:port and a socket in our own folder; trust those two only."""
    settings = SERVER_SETTINGS | {"port": str(port), "unix_socket_directories": f"'{socket_dir}'"}
    settings |= extra or {}
    with (data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    (data / "pg_hba.conf").write_text(HBA)


def _run(
    user: pwd.struct_passwd | None, cwd: Path, *command: object, log: Path | None = None
) -> None:
    """Run a server program as `user`; on failure raise with its output (and the log's)."""
    argv = [str(part) for part in command]
    if user is not None:
        argv = ["runuser", "-u", user.pw_name, "--", *argv]
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        logged = log.read_text(errors="replace") if log and log.exists() else ""
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}{logged}"
        )


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead (the path of libpq's URI form)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_database_url(server_url: str) -> Iterator[str]:
    """Create an empty database on the server; yield its URL; drop it (and any session
    still using it) afterwards, so tests never share state."""
    import psycopg  # a project dependency; imported here so conftest stays light

    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
