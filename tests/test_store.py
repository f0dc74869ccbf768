"""The store on a real SQLite file: migrations, the queue, group commit, a lock held elsewhere."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

from mailer.plan import DeliveryState as S
from mailer.plan import Wanted
from mailer.store import MIGRATIONS, Attempt, Store, Version


async def planned(path: Path, *wanted: Wanted) -> Store:
    store = await Store.open(path)
    plan = await store.plan("e", wanted)
    await store.save_valid(
        [Version("e", "schedules/e.toml", "E", "d", "", None, "[]", plan)], now=0
    )
    return store


def want(recipient: str, due: float, expires: float = 1000.0) -> Wanted:
    return Wanted("invitation", recipient, due, expires, f"<{recipient}@example.org>")


async def test_a_version_1_database_is_migrated_forward_with_its_data(tmp_path: Path):
    path = tmp_path / "mailer.sqlite3"
    with sqlite3.connect(path) as db:  # as the first release left it
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO events (id, source, title, updated_at) VALUES ('e', 'e.toml', "
            "'Förlabb', 0)"
        )
        db.execute(
            "INSERT INTO deliveries (event, mail, recipient, due, expires, state, "
            "next_attempt, message_id) VALUES ('e', 'm', 'a', 1, 2, 'sent', 1, '<x>')"
        )
    store = await Store.open(path)
    try:
        assert (await store.events())["e"].mails == "[]"
        assert [c.counts[S.SENT] for c in await store.mail_counts()] == [1]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_claims_take_what_is_due_in_order_and_expire_what_is_past(tmp_path: Path):
    store = await planned(
        tmp_path / "db",
        want("late", 50, expires=60),
        want("b", 20),
        want("a", 10),
        want("later", 500),
    )
    try:
        claimed, expired = await store.claim_due(100, limit=10)
        assert [c.recipient for c in claimed] == ["a", "b"]
        assert expired == 1
        assert await store.claim_due(100, limit=10) == ([], 0)  # claimed once only
        assert await store.next_due() == 500
        assert await store.reset_interrupted() == 2  # a crash puts the claimed ones back
        assert [c.recipient for c in (await store.claim_due(100, limit=1))[0]] == ["a"]
    finally:
        await store.close()


async def test_outcomes_arriving_together_are_committed_together_and_durably(tmp_path: Path):
    store = await planned(tmp_path / "db", *(want(f"r{i}", 1) for i in range(20)))
    claimed, _ = await store.claim_due(100, limit=20)
    await asyncio.gather(
        *(store.record(Attempt(c.id, 5, "sent", 250, "250 ok", S.SENT, 1)) for c in claimed)
    )
    await store.close()
    with sqlite3.connect(tmp_path / "db") as db:  # read by another connection: committed
        assert db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall() == [
            ("sent", 20)
        ]
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone() == (20,)


async def test_a_database_locked_by_another_process_is_waited_for(tmp_path: Path):
    store = await planned(tmp_path / "db", want("a", 1))
    script = (
        "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(1.0);"
        " db.execute('COMMIT')"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "db")], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            started = asyncio.get_running_loop().time()
            claimed, _ = await store.claim_due(100, limit=10)  # waits (busy_timeout), proceeds
            assert [c.recipient for c in claimed] == ["a"]
            assert asyncio.get_running_loop().time() - started >= 0.5
        finally:
            await store.close()
