"""Disk faults: a full disk, a Maildir that cannot be written, a database that cannot be opened.

Nothing is marked sent that was not written, and what could not be written is retried.
"""

from __future__ import annotations

import mailbox
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.clock import ManualClock
from tests.project import make_project, timed_event, tmpfs, write_event
from tests.test_engine import INVITATION_DUE, engine_at
from tests.test_service import states


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KB file system (tmpfs), for a disk that fills up."""
    with tmpfs(tmp_path / "var", size="64k") as mount:
        yield mount


async def test_a_full_disk_marks_sent_only_what_was_written_and_retries_the_rest(
    tmp_path: Path, tiny_disk: Path
):
    make_project(tmp_path)
    # The database lives elsewhere; the Maildir is on the tiny disk.
    config = tmp_path / "config.toml"
    config.write_text(
        config.read_text().replace(
            'database = "var/mailer.sqlite3"', 'database = "state/mailer.sqlite3"'
        )
    )
    write_event(tmp_path, "seminarium", timed_event(INVITATION_DUE.isoformat(), people=60))
    async with engine_at(tmp_path, ManualClock(INVITATION_DUE + timedelta(seconds=1))) as engine:
        await engine.step()
    written = len(mailbox.Maildir(tiny_disk / "maildir", create=False))
    found = db_rows_at(
        tmp_path / "state" / "mailer.sqlite3",
        "SELECT state, COUNT(*) FROM deliveries GROUP BY state",
    )
    assert 0 < written < 60  # the disk filled up part way
    assert dict(found) == {"sent": written, "retrying": 60 - written}
    (reply,) = {
        r
        for (r,) in db_rows_at(
            tmp_path / "state" / "mailer.sqlite3",
            "SELECT last_reply FROM deliveries WHERE state = 'retrying'",
        )
    }
    assert "No space left on device" in reply
    assert not list((tiny_disk / "maildir" / "tmp").iterdir())  # no half-written message


async def test_a_maildir_that_cannot_be_written_is_retried_not_marked_sent(tmp_path: Path):
    make_project(tmp_path)
    write_event(tmp_path, "seminarium", timed_event(INVITATION_DUE.isoformat(), people=2))
    (tmp_path / "var" / "maildir").mkdir(parents=True)
    (tmp_path / "var" / "maildir" / "new").write_text("a file where a folder must be")
    clock = ManualClock(INVITATION_DUE + timedelta(seconds=1))
    async with engine_at(tmp_path, clock) as engine:
        await engine.step()
        assert set(states(tmp_path).values()) == {"retrying"}
        (tmp_path / "var" / "maildir" / "new").unlink()  # the operator fixes it
        (tmp_path / "var" / "maildir" / "new").mkdir()
        clock.advance(timedelta(minutes=5))
        assert (await engine.step()).handled == 2
    assert set(states(tmp_path).values()) == {"sent"}


def test_a_database_that_cannot_be_opened_stops_the_service_with_one_line(tmp_path: Path):
    config = make_project(tmp_path)
    (tmp_path / "var").write_text("a file where the database folder must be")
    result = CliRunner().invoke(main, ["run", "-c", str(config)])
    assert result.exit_code == 2
    assert result.output.startswith("paths.database: cannot open the database")
    assert "Traceback" not in result.output


def db_rows_at(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()
