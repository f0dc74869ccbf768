"""`mailer migrate`: the whole state of a SQLite database copied into an empty PostgreSQL
database, for an operator outgrowing one machine (SPEC §9).

All or nothing: the target's schema and every row are written in one PostgreSQL
transaction, and the counts are compared before it commits, so a refusal or a failure
leaves the target as it was. The SQLite file is read under its write lock (nothing changes
it meanwhile), and only if no other process has it open: a running service would go on
sending from the old database while nodes sent from the copy.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg

from mailer.errors import ConfigError, MailerError
from mailer.store.postgres.connection import Db, shown
from mailer.store.postgres.schema import migrate
from mailer.store.sqlite import SqliteStore

# What is copied, parents before children (attempts refer to deliveries, files to blobs).
# Leases come as they are: a node takes back what a stopped process held once they ran out.
# The secret key comes too: with another one, erased addresses would no longer match (an
# event coming back would be planned again) and bounces of mail sent before not be read.
TABLES = (
    "events",
    "deliveries",
    "attempts",
    "blobs",
    "event_files",
    "secrets",
    "bounce_notices",
)
# Rows read from SQLite and sent to COPY at a time: memory stays flat at 200,000 deliveries.
CHUNK_ROWS = 5_000
# SQLite's unix VFS: every connection to a database in WAL mode holds a shared lock on this
# byte of the `-shm` file while it is open (the "DMS" lock, sqlite.org/walformat.html §2.3),
# whatever it is doing; a process that can lock it exclusively is the only one there.
_DMS_BYTE = 128


async def copy_to_postgres(database: Path, url: str) -> dict[str, int]:
    """Copy every row of the SQLite `database` into the empty PostgreSQL database `url`;
    how many rows of each table. Raises MailerError (nothing written) if the service may be
    running, the target is not empty, or the counts differ after copying."""
    if not database.is_file():
        raise ConfigError(f"no database at {database} to copy", key="paths.database")
    refuse_if_open(database)
    source = await SqliteStore.open(database)  # brings an older schema up to date first
    try:
        async with (
            source.transaction() as sqlite,
            await _connect(url) as target,
        ):
            await refuse_if_not_empty(target, url)
            async with target.transaction():
                await migrate(target)
                copied = {table: await _copy(sqlite, target, table) for table in TABLES}
                await _continue_identities(target)
                await _verify(sqlite, target, copied, url)
        return copied
    finally:
        await source.close()


def refuse_if_open(database: Path) -> None:
    """Refuse a database another process has open (a running `mailer run`, a `mailer send`).
    Checked before this process opens it: POSIX locks belong to the process, and closing
    our probe would drop SQLite's own locks on the file."""
    try:
        fd = os.open(f"{database}-shm", os.O_RDWR)
    except FileNotFoundError:  # no connection since the last one closed cleanly
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _DMS_BYTE)
    except OSError as exc:
        raise MailerError(
            f"the database {database} is open in another process (is the service running?): "
            "stop the service and every other mailer command first, then migrate",
            key="paths.database",
        ) from exc
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _DMS_BYTE)
    finally:
        os.close(fd)


async def refuse_if_not_empty(target: Db, url: str) -> None:
    """The target must hold nothing in its schema: migrate neither merges nor overwrites."""
    cursor = await target.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "ORDER BY c.relname"
    )
    names = [name for (name,) in await cursor.fetchall()]
    if names:
        raise MailerError(
            f"the database {shown(url)} is not empty (it holds {_listed(names)}): "
            "migrate copies into an empty database only; create a new one "
            "(createdb -O mailer mailer) or point --to at one",
            key="--to",
        )


async def _connect(url: str) -> Db:
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True)
    except psycopg.Error as exc:
        text = str(exc).strip().replace("\n", " ")
        raise ConfigError(f"cannot open the database {shown(url)}: {text}", key="--to") from exc


async def _copy(sqlite: aiosqlite.Connection, target: Db, table: str) -> int:
    """Every row of one table, through COPY (one stream, not a statement per row)."""
    async with sqlite.execute(f"SELECT * FROM {table} ORDER BY rowid") as rows:
        columns = ", ".join(d[0] for d in rows.description)
        count = 0
        async with (
            target.cursor() as cursor,
            cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            while chunk := list(await rows.fetchmany(CHUNK_ROWS)):
                for row in chunk:
                    await copy.write_row(row)  # 0/1 into BOOLEAN too: COPY's text form
                count += len(chunk)
    return count


async def _continue_identities(target: Db) -> None:
    """Rows came with their ids: new ones continue after the highest, not from 1."""
    for table in ("deliveries", "attempts"):
        await target.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE(MAX(id), 0) + 1, false) FROM {table}"
        )


async def _verify(
    sqlite: aiosqlite.Connection, target: Db, copied: dict[str, int], url: str
) -> None:
    """Both databases hold as many rows of each table as were copied, and as many
    deliveries in each state; else the copy is rolled back."""
    queries: dict[str, list[tuple[str, int]] | None] = {
        f"SELECT '{t}', COUNT(*) FROM {t}": [(t, n)] for t, n in copied.items()
    }
    queries["SELECT state, COUNT(*) FROM deliveries GROUP BY state"] = None
    for sql, read in queries.items():
        async with sqlite.execute(sql) as cursor:
            there = sorted(tuple(row) for row in await cursor.fetchall())
        here = sorted(tuple(row) for row in await (await target.execute(sql)).fetchall())
        if there != here or read not in (None, here):
            raise MailerError(
                f"the copy in {shown(url)} differs from the SQLite database "
                f"({_pairs(there)} there, {_pairs(here)} here): nothing was kept",
                key="--to",
            )


def _listed(names: list[str]) -> str:
    shown_names = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{len(names)} {'table' if len(names) == 1 else 'tables'}: {shown_names}"


def _pairs(rows: Sequence[tuple[Any, ...]]) -> str:
    return ", ".join(f"{name} {count}" for name, count in rows)
