"""Personal data (SPEC §13): erased `retention.keep` after the event's end, on a steered clock
and by `mailer purge`; an event coming back plans no duplicate; the bytes are gone from the
SQLite file and its WAL."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.clock import ManualClock
from mailer.config import load_settings
from mailer.engine import Engine
from mailer.errors import ConfigError
from mailer.keyring import is_erased
from mailer.retention import purge_daily, purge_due
from mailer.secret import load_keyring
from mailer.store import Store
from mailer.transports.maildir import MaildirTransport
from tests.project import make_project, timed_event, write_event
from tests.test_engine import STOCKHOLM

# An event long over (by the real clock too: `mailer purge` reads it), and one to come.
OLD = """
title = "Gammalt seminarium"
starts = 2026-01-10T09:00:00
ends = 2026-01-10T12:00:00

[[recipients.people]]
email = "olle.gammal@example.org"
name = "Olle Gammalsson"

[[recipients.people]]
email = "greta.gammal@example.org"
name = "Greta Gammalsdotter"

[[mail]]
name = "invitation"
send_at = 2026-01-03T09:00:00
to = ["all"]
"""
OLD_ENDS = datetime(2026, 1, 10, 12, tzinfo=STOCKHOLM)
PERSONAL = (b"olle.gammal@example.org", b"greta.gammal@example.org", b"Gammalsson")


def project(root: Path) -> None:
    make_project(root)
    write_event(root, "old", OLD)
    write_event(root, "new", timed_event("2027-05-26T09:00:00", people=2))


def rows(root: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return sorted(db.execute("SELECT event, recipient, state FROM deliveries"))


async def start(root: Path, clock: ManualClock) -> tuple[Engine, Store]:
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database)
    engine = Engine(
        settings, store=store, transport=MaildirTransport(root / "var" / "maildir"), clock=clock
    )
    await engine.load_all()
    return engine, store


async def stop(engine: Engine, store: Store) -> None:
    await engine.close()
    await store.close()


async def test_events_ended_longer_ago_than_keep_are_erased_and_plan_no_duplicate_on_return(
    tmp_path: Path,
):
    project(tmp_path)
    clock = ManualClock(datetime(2026, 1, 3, 9, 1, tzinfo=STOCKHOLM))
    engine, store = await start(tmp_path, clock)
    try:
        await engine.step()  # the old event's invitation goes out
        clock.set(OLD_ENDS + timedelta(days=179))
        assert (await purge_due(engine.settings, store, clock=clock)).events == ()
        clock.set(OLD_ENDS + timedelta(days=181))
        purged = await purge_due(engine.settings, store, clock=clock)
        assert purged.events == ("old",) and purged.deliveries == 2 and purged.bytes > 100
        counts = {m.event: m.counts for m in await store.mail_counts()}
        assert counts["old"]["sent"] == 2  # the counts stay
        # While the service's connection is open (no checkpoint at close to help).
        assert not [word for word in PERSONAL if word in database_bytes(tmp_path)]
    finally:
        await stop(engine, store)
    before = rows(tmp_path)
    assert [(e, is_erased(r), s) for e, r, s in before] == [
        ("new", False, "scheduled"),
        ("new", False, "scheduled"),
        ("old", True, "sent"),
        ("old", True, "sent"),
    ]
    # The same file at the next start, and again after being deleted and put back.
    clock.advance(timedelta(hours=1))
    engine, store = await start(tmp_path, clock)
    await stop(engine, store)
    assert rows(tmp_path) == before
    old = tmp_path / "schedules" / "old.toml"
    old.unlink()
    engine, store = await start(tmp_path, clock)
    await stop(engine, store)
    write_event(tmp_path, "old", OLD)
    engine, store = await start(tmp_path, clock)
    try:
        assert rows(tmp_path) == before  # no one planned again, nothing to send
        assert (await engine.step()).handled == 0
        clock.advance(timedelta(days=1))
        again = await purge_due(engine.settings, store, clock=clock)
        assert again.events == ("old",)  # its texts were saved again with the file: erased
    finally:
        await stop(engine, store)


def sent_old_event(root: Path) -> None:
    async def send() -> None:
        engine, store = await start(root, ManualClock(datetime(2026, 1, 3, 9, 1, tzinfo=STOCKHOLM)))
        try:
            await engine.step()
        finally:
            await stop(engine, store)

    asyncio.run(send())


def database_bytes(root: Path) -> bytes:
    found = b""
    for path in sorted((root / "var").glob("mailer.sqlite3*")):
        found += path.read_bytes()
    return found


def test_purge_dry_run_changes_nothing_and_purge_leaves_no_byte_of_an_address(tmp_path: Path):
    project(tmp_path)
    sent_old_event(tmp_path)
    config = str(tmp_path / "config.toml")
    before = rows(tmp_path)
    assert all(word in database_bytes(tmp_path) for word in PERSONAL)

    dry = CliRunner().invoke(main, ["-c", config, "purge", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("would erase the personal data of 1 event (2 deliveries, ")
    assert "  old" in dry.output
    assert rows(tmp_path) == before

    done = CliRunner().invoke(main, ["-c", config, "purge"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("erased the personal data of 1 event (2 deliveries, ")
    assert "that ended more than 180d ago" in done.output
    wal = tmp_path / "var" / "mailer.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed (or removed at close)
    held = database_bytes(tmp_path)
    assert not [word for word in PERSONAL if word in held]
    assert b"person00000@example.org" in held  # the event to come keeps its people
    again = CliRunner().invoke(main, ["-c", config, "purge"])
    assert again.output.startswith("erased the personal data of 0 events")


async def test_a_key_file_replaces_the_database_key_and_a_short_one_is_refused(tmp_path: Path):
    project(tmp_path)
    config = tmp_path / "config.toml"
    key = tmp_path / "mailer.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    settings = load_settings(config)
    store = await Store.open(settings.paths.database)
    try:
        in_database = await load_keyring(settings, store)
        config.write_text(config.read_text() + f'\n[retention]\nkey_file = "{key}"\n')
        from_file = await load_keyring(load_settings(config), store)
        assert from_file.secret == b"0123456789abcdef0123456789abcdef"
        assert from_file.erased("a@example.org") != in_database.erased("a@example.org")
        key.write_bytes(b"short")
        with pytest.raises(ConfigError, match=r"retention.key_file.*holds 5 bytes"):
            await load_keyring(load_settings(config), store)
    finally:
        await store.close()


async def test_the_service_purges_by_itself_and_says_what_it_erased(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """The loop `mailer run` starts, with its minute and day shortened: a purge soon after
    the start, logged; a stop ends the loop at once."""
    caplog.set_level(logging.INFO, logger="mailer")
    project(tmp_path)
    clock = ManualClock(datetime(2026, 1, 3, 9, 1, tzinfo=STOCKHOLM))
    engine, store = await start(tmp_path, clock)
    try:
        await engine.step()
        clock.set(OLD_ENDS + timedelta(days=181))
        stopping = asyncio.Event()
        loop = asyncio.create_task(
            purge_daily(
                engine.settings,
                store,
                clock=clock,
                stopping=stopping,
                first_after_s=0.05,
                every_s=0.05,
            )
        )
        for _ in range(200):  # at most 10 s
            await asyncio.sleep(0.05)
            if any("personal data erased" in r.message for r in caplog.records):
                break
        stopping.set()
        await asyncio.wait_for(loop, timeout=5)
    finally:
        await stop(engine, store)
    (line,) = [r.message for r in caplog.records if "personal data erased" in r.message]
    assert "2 deliveries" in line and line.endswith(": old")
    assert all(is_erased(r) for e, r, _ in rows(tmp_path) if e == "old")
