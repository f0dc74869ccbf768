"""The SQLite schema, its migrations (`PRAGMA user_version`) and its pragmas, in one place.

WAL mode lets `status`, `check` and `preview` read while the service writes; in WAL mode
a committed transaction survives `kill -9` whatever `synchronous` says (FULL adds only
power-loss safety at ~5x the cost per commit, see MEASUREMENTS.md), so NORMAL it is.
"""

from __future__ import annotations

import aiosqlite

from mailer.errors import ConfigError

# Each entry migrates the schema from version N to N+1; `PRAGMA user_version` says where we are.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            digest TEXT,             -- content hash of the last valid version
            toml TEXT,               -- the last valid version itself, kept in force while
            csv TEXT,                -- the file on disk is invalid, across restarts too
            error TEXT,              -- why the file on disk is invalid now, or NULL
            removed INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            event TEXT NOT NULL,
            mail TEXT NOT NULL,
            recipient TEXT NOT NULL,  -- the lower-cased address
            due REAL NOT NULL,        -- unix seconds
            expires REAL NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL,
            last_reply TEXT,
            sent_at REAL,
            message_id TEXT NOT NULL,
            UNIQUE (event, mail, recipient)
        )""",
        """CREATE INDEX deliveries_queue ON deliveries (next_attempt)
            WHERE state IN ('scheduled', 'retrying')""",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery INTEGER NOT NULL REFERENCES deliveries (id),
            at REAL NOT NULL,
            verdict TEXT NOT NULL,
            code INTEGER,
            reply TEXT NOT NULL
        )""",
        "CREATE INDEX attempts_delivery ON attempts (delivery)",
    ),
    (
        # The mails of the version in force (JSON: name, due, expires, to), so status shows
        # a mail nobody gets yet, such as the follow-up lab before anyone has attended.
        "ALTER TABLE events ADD COLUMN mails TEXT NOT NULL DEFAULT '[]'",
    ),
    (
        # give_up_after counts from the first attempt: a late registrant's delivery, due
        # days ago, must not fail on its first 451.
        "ALTER TABLE deliveries ADD COLUMN first_attempt REAL",
    ),
    (
        # SPEC §9, leases: which node holds a delivery being sent, and until when (meaningful
        # only while it is `sending`). A row an older mailer left `sending` gets a lease that
        # ran out long ago, so it goes back to the queue as a reset put it back before.
        "ALTER TABLE deliveries ADD COLUMN leased_by TEXT",
        "ALTER TABLE deliveries ADD COLUMN lease_until REAL NOT NULL DEFAULT 0",
        "CREATE INDEX deliveries_leases ON deliveries (lease_until) WHERE state = 'sending'",
    ),
    (
        # The organisers' events page counts each event's deliveries by state (SPEC §12):
        # read from this index alone, at 200,000 deliveries 75-100 ms instead of 210-320 ms
        # (a scan of the table and a sort for the GROUP BY).
        "CREATE INDEX deliveries_by_event ON deliveries (event, state, next_attempt)",
    ),
    (
        # SPEC §9, the version in force stored whole: its attachments as they were checked,
        # each content once (a report PDF attached by ten mails of three events is one row),
        # so a file replaced on disk after planning is not what goes out.
        "CREATE TABLE blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL)",
        """CREATE TABLE event_files (
            event TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL REFERENCES blobs (digest),
            PRIMARY KEY (event, name)
        )""",
        "CREATE INDEX event_files_digest ON event_files (digest)",
    ),
    (
        # SPEC §9, max_per_minute for all processes together: when the next message may
        # leave (mailer.pacing). One row, 'send'.
        "CREATE TABLE pace (name TEXT PRIMARY KEY, next_at REAL NOT NULL)",
    ),
    (
        # SPEC §13: an event's end, from which its personal data is kept `retention.keep`,
        # and when it was last erased (a version saved since has texts to erase again).
        "ALTER TABLE events ADD COLUMN ends REAL",
        "ALTER TABLE events ADD COLUMN purged_at REAL",
        # The secret that signs bounce addresses and hashes erased ones (keyring.py), made
        # once by whichever process needs it first.
        "CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
        # SPEC §11: each bounce notice recorded, so one read twice counts once.
        """CREATE TABLE bounce_notices (
            notice TEXT PRIMARY KEY,
            delivery INTEGER NOT NULL,
            at REAL NOT NULL
        )""",
    ),
    (
        # SPEC §9: the nodes (`mailer run` processes) and which one plans, for `status`
        # (schema 9; PostgreSQL's 6).
        # A row is written at a node's start and each heartbeat; a clean stop deletes it.
        """CREATE TABLE nodes (
            id TEXT PRIMARY KEY,      -- as in deliveries.leased_by: "host pid token"
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started REAL NOT NULL,    -- unix seconds
            last_seen REAL NOT NULL,  -- its last heartbeat
            planner INTEGER NOT NULL DEFAULT 0
        )""",
    ),
    (
        # SPEC §10 (schema 10; PostgreSQL's 7): each event's calendar identity. SEQUENCE
        # only grows (announce adds one); `announced` and `previous` are the facts
        # (notices.Facts, JSON) of this revision and the one before, `pending` a change
        # waiting until `settle_at` to be announced.
        """CREATE TABLE calendars (
            event TEXT PRIMARY KEY,
            sequence INTEGER NOT NULL DEFAULT 0,
            announced TEXT NOT NULL,
            previous TEXT,
            pending TEXT,
            settle_at REAL,
            notify INTEGER NOT NULL DEFAULT 1
        )""",
        # `hold = true`: planned, nothing of it claimed.
        "ALTER TABLE events ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
    ),
    (
        # Schema 11 (PostgreSQL's 8), issue 18: the metadata of the files a version was read
        # from (file_stamps.py), so that a start need not read unchanged files.
        "ALTER TABLE events ADD COLUMN stamp TEXT",
    ),
)
PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)
# Pragmas that write (journal_mode): left out on a read-only connection.
WRITING_PRAGMAS = 1


async def version_of(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cursor:
        (version,) = await cursor.fetchone() or (0,)
    return int(version)


async def migrate(db: aiosqlite.Connection) -> None:
    """Bring the schema up to date inside the caller's transaction, the version read inside
    it: a second process (a `mailer send` started with the service) waits, then finds it
    done, instead of creating the tables a second time."""
    version = await version_of(db)
    if version > len(MIGRATIONS):
        raise newer_schema(version)
    for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in statements:
            await db.execute(statement)
        await db.execute(f"PRAGMA user_version = {number}")


def newer_schema(version: int) -> ConfigError:
    return ConfigError(
        f"the database is from a newer mailer (schema {version}; this "
        f"one knows up to {len(MIGRATIONS)}): upgrade mailer",
        key="paths.database",
    )
