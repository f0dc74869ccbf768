"""A throwaway PostgreSQL server for the node scenarios (8, 9), started as the tests start
theirs (tests/postgres.py: Debian's binaries as the `postgres` user, 127.0.0.1, a free
port, a temporary folder, stopped at the end), but flushing as a deployed server does.

The tests' server skips fsync (a test cluster dies with its machine); figures for an
operator need the disk's cost in them, so here fsync, full-page writes and synchronous
commit are on, PostgreSQL's defaults. mailer's own turns still commit without waiting
(store: `SET LOCAL synchronous_commit = off`), as in production.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.postgres import (
    BINDIR_VARIABLE,
    bindir_pattern,
    find_bindir,
    fresh_database_url,
    running_cluster,
)

AS_DEPLOYED = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}

__all__ = ["Server", "fresh_database_url", "postgres_server", "rows"]


@dataclass(frozen=True)
class Server:
    url: str  # the superuser's, database `postgres`
    postmaster: int  # the pid whose process tree is the server's CPU


@contextlib.contextmanager
def postgres_server() -> Iterator[Server]:
    """Start the server, yield it, stop it and remove its folder (even if the bench dies)."""
    bindir = find_bindir(bindir_pattern(os.environ))
    if bindir is None:
        raise RuntimeError(
            "scenarios 8 and 9 need PostgreSQL's server binaries: install Debian's "
            f"postgresql package, or set {BINDIR_VARIABLE} to the folder holding initdb"
        )
    with running_cluster(bindir, settings=AS_DEPLOYED) as cluster:
        pid = (cluster.data / "postmaster.pid").read_text().split()[0]
        yield Server(cluster.url, int(pid))


def rows(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """One query on a connection of its own (the bench's loop waits a few ms: fine)."""
    with psycopg.connect(url, connect_timeout=5) as db:
        return db.execute(sql, params).fetchall()
