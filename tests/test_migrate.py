"""`mailer migrate --to URL`: a SQLite database copied whole into an empty PostgreSQL one, and
a node on the copy sends only what had not gone out (SPEC §9)."""

from __future__ import annotations

import asyncio
import email
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
from click.testing import CliRunner, Result

from mailer.cli import main
from mailer.clock import SystemClock
from mailer.commands import send_now
from mailer.config import load_settings
from mailer.delivery import DeliveryState as S
from mailer.store import Attempt, Store
from tests.project import make_project, timed_event, write_event
from tests.test_commands import plan
from tests.test_service import soon

PDF = b"%PDF-1.7\x00\xff\\x binary, with a backslash"


async def migrate(config: Path, url: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, main, ["migrate", "-c", str(config), "--to", url]
    )


def pg_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as db:
        return list(db.execute(sql).fetchall())


async def sent_failed_and_pending(config: Path) -> dict[str, str]:
    """Six people: two sent, one failed after three attempts, three never tried; and a
    second mail, months ahead. Returns each person's state."""
    settings = load_settings(config)
    root = config.parent
    write_event(root, "seminarium", timed_event(soon(-5), people=6))
    later = timed_event(soon(90 * 86400), people=2) + 'attach = ["program.pdf"]\n'
    write_event(root, "later", later, program__pdf=PDF)
    await plan(settings)
    store = await Store.open(settings.paths.database)
    now = SystemClock().now().timestamp()
    claimed, _ = await store.claim_due(now, limit=3)
    outcomes = [("sent", S.SENT, 250), ("sent", S.SENT, 250), ("failed", S.FAILED, 550)]
    for claim, (verdict, state, code) in zip(claimed, outcomes, strict=True):
        for attempt in range(1, 4 if state is S.FAILED else 2):
            await store.record_now(
                [Attempt(claim.id, now, verdict, code, f"{code} reply", state, attempt)]
            )
    states = {d.recipient: d.state for d in await store.deliveries_of("seminarium", "invitation")}
    await store.secret()  # made, as the first start of a service makes it
    await store.close()
    return states


async def test_migrate_copies_everything_and_a_node_on_it_sends_only_what_was_pending(
    tmp_path: Path, fresh_database: str
):
    config = make_project(tmp_path)
    before = await sent_failed_and_pending(config)
    assert Counter(before.values()) == {"sent": 2, "failed": 1, "scheduled": 3}

    result = await migrate(config, fresh_database)

    assert result.exit_code == 0, result.output
    assert "copied 2 events, 8 deliveries, 5 attempts" in result.output
    assert pg_rows(
        fresh_database, "SELECT state, COUNT(*) FROM deliveries GROUP BY 1 ORDER BY 1"
    ) == [
        ("failed", 1),
        ("scheduled", 5),
        ("sent", 2),
    ]
    assert pg_rows(fresh_database, "SELECT COUNT(*) FROM attempts") == [(5,)]
    assert pg_rows(fresh_database, "SELECT data FROM blobs") == [(PDF,)]
    # The secret key too: erased addresses and bounce addresses stay valid on the copy.
    store = await Store.open(tmp_path / "var" / "mailer.sqlite3")
    secret = await store.secret()
    await store.close()
    assert pg_rows(fresh_database, "SELECT value FROM secrets") == [(secret,)]
    # The copy continues the ids: a new delivery does not collide with a copied one.
    config.write_text(
        config.read_text().replace('"var/mailer.sqlite3"', f'"{fresh_database}"'),
        encoding="utf-8",
    )
    settings = load_settings(config)
    report = await send_now(
        settings, "seminarium", "invitation", recipient=None, clock=SystemClock()
    )

    assert report.all_sent
    maildir = tmp_path / "var" / "maildir" / "new"
    got = [email.message_from_bytes(p.read_bytes())["To"] for p in maildir.iterdir()]
    not_sent_before = {r for r, state in before.items() if state != "sent"}
    assert sorted(addr.split("<")[-1].rstrip(">") for addr in got) == sorted(not_sent_before)
    assert pg_rows(fresh_database, "SELECT COUNT(*) FROM deliveries WHERE state = 'sent'") == [(6,)]


async def test_a_database_that_is_not_empty_is_refused_and_left_as_it_was(
    tmp_path: Path, fresh_database: str
):
    config = make_project(tmp_path)
    await sent_failed_and_pending(config)
    with psycopg.connect(fresh_database, autocommit=True) as db:
        db.execute("CREATE TABLE mine (x INTEGER)")
        db.execute("INSERT INTO mine VALUES (1)")

    result = await migrate(config, fresh_database)

    assert result.exit_code == 1
    assert "is not empty (it holds 1 table: mine)" in result.output
    assert pg_rows(
        fresh_database,
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind = 'r'",
    ) == [("mine",)]


async def test_migrating_twice_is_refused_the_second_time(tmp_path: Path, fresh_database: str):
    config = make_project(tmp_path)
    await sent_failed_and_pending(config)
    assert (await migrate(config, fresh_database)).exit_code == 0

    again = await migrate(config, fresh_database)

    assert again.exit_code == 1
    assert "is not empty" in again.output
    assert pg_rows(fresh_database, "SELECT COUNT(*) FROM deliveries") == [(8,)]


async def test_the_database_of_a_running_service_is_refused(tmp_path: Path, fresh_database: str):
    config = make_project(tmp_path)
    await sent_failed_and_pending(config)
    service = subprocess.Popen(
        [sys.executable, "-m", "mailer", "run", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert service.stderr is not None
        for line in service.stderr:  # bounded by the test's timeout
            if "running:" in line:
                break
        result = await migrate(config, fresh_database)
    finally:
        service.terminate()
        service.communicate(timeout=20)

    assert result.exit_code == 1
    assert "is open in another process (is the service running?)" in result.output
    assert pg_rows(
        fresh_database, "SELECT COUNT(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    ) == [(0,)]
    # Stopped, it goes.
    assert (await migrate(config, fresh_database)).exit_code == 0


def test_a_password_in_the_target_url_is_refused_with_exit_2(tmp_path: Path):
    config = make_project(tmp_path)
    result = CliRunner().invoke(
        main, ["migrate", "-c", str(config), "--to", "postgresql://mailer:secret@127.0.0.1/x"]
    )
    assert result.exit_code == 2
    assert "PGPASSWORD" in result.output and "secret" not in result.output
