"""`mailer check PATH` on an event in force says what saving the file would do (SPEC §10):
mails re-timed (old -> new due), deliveries added and cancelled; `--json` the same as data.
The database is only read."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
from pathlib import Path

from click.testing import CliRunner

from mailer.cli import main
from mailer.clock import SystemClock
from mailer.config import load_settings
from mailer.engine import Engine
from mailer.store.contract import open_store
from mailer.transports.maildir import MaildirTransport
from tests.project import EVENT, make_project, write_event
from tests.test_commands import plan

CARL = """
[[recipients.people]]
email = "carl@example.org"
groups = ["registered"]
"""


def edited() -> str:
    """The event a day later, Björn gone, Carl in."""
    text = textwrap.dedent(EVENT)
    björn = text[text.index('[[recipients.people]]\nemail = "bjorn') : text.index("[[mail]]")]
    return text.replace(björn, CARL.lstrip() + "\n")


def rows(database: Path) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT * FROM deliveries ORDER BY id").fetchall()


async def test_check_says_what_saving_an_edit_would_do_and_writes_nothing(tmp_path: Path):
    config = make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    await plan(load_settings(config))
    before = rows(tmp_path / "var" / "mailer.sqlite3")
    write_event(
        tmp_path, "forlabb", edited(), starts="2027-06-17T09:00:00", ends="2027-06-17T12:00:00"
    )

    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["check", "-c", str(config), str(source)]
    )
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    moved = "(1 waiting delivery moves)"
    assert (
        f"saving it re-times invitation: ons 2027-05-26 09:00 → tors 2027-05-27 09:00 {moved}"
        in lines
    )
    assert (
        f"saving it re-times reminder: mån 2027-06-14 09:00 → tis 2027-06-15 09:00 {moved}" in lines
    )
    assert "saving it adds invitation to carl@example.org" in lines
    assert "saving it adds reminder to carl@example.org" in lines
    assert "saving it cancels invitation to bjorn@example.org" in lines
    assert "saving it cancels reminder to bjorn@example.org" in lines

    shown = await asyncio.to_thread(
        CliRunner().invoke, main, ["check", "-c", str(config), "--json", str(source)]
    )
    assert shown.exit_code == 0, shown.output
    (event,) = json.loads(shown.stdout)["events"]
    assert event["valid"] and event["id"] == "forlabb"
    assert event["changes"]["retimed"][0] == {
        "mail": "invitation",
        "from": "2027-05-26T09:00:00+02:00",
        "to": "2027-05-27T09:00:00+02:00",
        "deliveries": 1,
    }
    assert event["changes"]["added"] == [
        {"mail": "invitation", "recipient": "carl@example.org"},
        {"mail": "reminder", "recipient": "carl@example.org"},
    ]
    assert {c["recipient"] for c in event["changes"]["cancelled"]} == {"bjorn@example.org"}
    assert event["changes"]["notices"] == []
    assert [m["due"] for m in event["mails"]] == [
        "2027-05-27T09:00:00+02:00",
        "2027-06-15T09:00:00+02:00",
    ]
    assert rows(tmp_path / "var" / "mailer.sqlite3") == before  # only read


async def test_check_of_the_version_in_force_changes_nothing(tmp_path: Path):
    config = make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    await plan(load_settings(config))
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["check", "-c", str(config), str(source)]
    )
    assert "saving it changes nothing that is planned" in result.output, result.output


def test_without_a_database_there_is_nothing_to_compare_with(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    result = CliRunner().invoke(main, ["check", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    (event,) = json.loads(result.stdout)["events"]
    assert event["changes"] is None and event["valid"]
    assert not (tmp_path / "var" / "mailer.sqlite3").exists()
    broken = CliRunner().invoke(
        main,
        ["check", "-c", str(config), "--json", str(write_event(tmp_path, "trasig", "title = 1\n"))],
    )
    assert broken.exit_code == 1
    (event,) = json.loads(broken.stdout)["events"]
    assert not event["valid"] and event["problems"] and event["changes"] is None


async def test_check_compares_with_the_version_in_force_on_postgresql(
    tmp_path: Path, fresh_database: str
):
    """Several nodes share one PostgreSQL database (SPEC §9): check reads it the same way."""
    config = make_project(tmp_path)
    config.write_text(
        config.read_text().replace('"var/mailer.sqlite3"', f'"{fresh_database}"'), encoding="utf-8"
    )
    source = write_event(tmp_path, "forlabb")
    settings = load_settings(config)
    store = await open_store(settings.paths.database)
    engine = Engine(
        settings, store=store, transport=MaildirTransport(tmp_path), clock=SystemClock()
    )
    try:
        await engine.plan()
    finally:
        await engine.close()
        await store.close()
    write_event(
        tmp_path, "forlabb", edited(), starts="2027-06-17T09:00:00", ends="2027-06-17T12:00:00"
    )
    shown = await asyncio.to_thread(
        CliRunner().invoke, main, ["check", "-c", str(config), "--json", str(source)]
    )
    assert shown.exit_code == 0, shown.output
    (event,) = json.loads(shown.stdout)["events"]
    assert [r["mail"] for r in event["changes"]["retimed"]] == ["invitation", "reminder"]
    assert {c["recipient"] for c in event["changes"]["added"]} == {"carl@example.org"}
    assert {c["recipient"] for c in event["changes"]["cancelled"]} == {"bjorn@example.org"}


def test_a_database_that_cannot_be_read_is_said_and_check_goes_on(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "mailer.sqlite3").write_bytes(b"not a database, just bytes" * 100)
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "note not compared with the plans in force: " in result.output
    assert "ok  " in result.output and "saving it" not in result.output
    shown = CliRunner().invoke(main, ["check", "-c", str(config), "--json"])
    assert json.loads(shown.stdout)["not_compared"]
