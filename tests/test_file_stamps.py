"""A start knows unchanged event files by their metadata (issue 18), and misses no edit:
a file rewritten to the same size with its old modification time is read again."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from mailer import catalog, file_stamps
from mailer.clock import ManualClock
from mailer.file_stamps import stamp, stamped_digest
from tests.project import EVENT, make_project, write_event
from tests.test_engine import INVITATION_DUE, engine_at

PEOPLE = "email,name,groups\nanna@example.org,Anna Andersson,registered\n"
FOLDER_EVENT = (
    EVENT.split("[[recipients.people]]")[0].replace(
        "[recipients]", '[recipients]\nfile = "people.csv"'
    )
    + EVENT[EVENT.index("[[mail]]") :]
)
# Settled after this long in these tests, instead of two seconds.
SETTLED_NS = 100_000_000


def stamps(root: Path) -> dict[str, str | None]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return dict(db.execute("SELECT id, stamp FROM events"))


def recipients(root: Path) -> list[str]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        rows = db.execute("SELECT DISTINCT recipient FROM deliveries WHERE state = 'scheduled'")
        return sorted(r[0] for r in rows)


def settled() -> None:
    """Until every file written so far is SETTLED_NS old (well past the kernel's tick)."""
    time.sleep(2 * SETTLED_NS / 1e9)


def test_a_stamp_names_the_digest_until_any_file_is_written_again(tmp_path: Path) -> None:
    source = write_event(tmp_path, "forlabb", FOLDER_EVENT, people__csv=PEOPLE)
    csv = source.parent / "people.csv"
    later = time.time_ns() + 10 * file_stamps.SETTLED_NS
    sealed = stamp("d1", source, [csv], read_from_ns=later)
    assert stamped_digest(sealed, source) == "d1"
    before = os.stat(csv)
    csv.write_text(PEOPLE.replace("anna", "anja"), encoding="utf-8")  # same size
    os.utime(csv, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime
    assert os.stat(csv).st_size == before.st_size
    assert stamped_digest(sealed, source) is None  # its ctime moved: read it again
    csv.unlink()
    assert stamped_digest(sealed, source) is None
    assert stamped_digest(None, source) is None
    assert stamped_digest("not json", source) is None


def test_files_written_just_before_they_are_read_get_no_stamp(tmp_path: Path) -> None:
    source = write_event(tmp_path, "forlabb", FOLDER_EVENT, people__csv=PEOPLE)
    assert stamp("d1", source, [source.parent / "people.csv"], read_from_ns=time.time_ns()) is None
    gone = source.parent / "gone.pdf"
    assert stamp("d1", source, [gone], read_from_ns=time.time_ns() * 2) is None


async def test_a_restart_reads_no_unchanged_file_and_plans_a_same_size_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_stamps, "SETTLED_NS", SETTLED_NS)
    make_project(tmp_path)
    source = write_event(tmp_path, "forlabb", FOLDER_EVENT, people__csv=PEOPLE)
    clock = ManualClock(INVITATION_DUE - timedelta(days=1))
    settled()
    async with engine_at(tmp_path, clock):
        pass
    kept = stamps(tmp_path)
    assert kept["forlabb"] is not None
    assert recipients(tmp_path) == ["anna@example.org"]

    # Planned before stamps were kept (or as it was written): the next start reads it
    # once and keeps the stamp that read gives.
    with sqlite3.connect(tmp_path / "var" / "mailer.sqlite3") as db:
        db.execute("UPDATE events SET stamp = NULL")
    async with engine_at(tmp_path, clock):
        pass
    assert stamps(tmp_path) == kept

    def read(source: Path) -> None:
        raise AssertionError(f"{source} was read")

    # Unchanged: known by its metadata, not read.
    with monkeypatch.context() as reading:
        reading.setattr(catalog, "peek_digest", read)
        async with engine_at(tmp_path, clock) as engine:
            assert engine.catalog.in_force == 1
    assert stamps(tmp_path) == kept

    # The same size and modification time, other content: planned, not missed.
    csv = source.parent / "people.csv"
    before = os.stat(csv)
    csv.write_text(PEOPLE.replace("anna@", "anja@"), encoding="utf-8")
    os.utime(csv, ns=(before.st_atime_ns, before.st_mtime_ns))
    async with engine_at(tmp_path, clock):
        pass
    assert recipients(tmp_path) == ["anja@example.org"]
