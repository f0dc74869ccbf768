"""Hot reload: organisers edit, add and delete event files while the service runs (SPEC §5.2)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailer.engine import Engine
from mailer.status import status_report
from tests.crash_loop import mailer_run
from tests.project import REPO, make_project, smtp_transport, timed_event, write_event
from tests.smtpd import SmtpServer
from tests.test_service import db_rows, running, smtp_password, soon

pytestmark = pytest.mark.timeout(30)
__all__ = ["smtp_password"]  # the fixture, used by every test here
LATER = "2099-01-01T09:00:00Z"  # a due time that never comes during a test


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 3.0) -> None:
    """Bounded wait for an async condition; reloads must land well within a second or two."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def report(engine: Engine) -> dict[str, Any]:
    """What `mailer status --json` prints."""
    return await status_report(engine.store, zone=ZoneInfo("Europe/Stockholm"))


async def counts(engine: Engine, event_id: str = "seminarium") -> dict[str, int]:
    for event in (await report(engine))["events"]:
        if event["id"] == event_id and event["mails"]:
            return {k: v for k, v in event["mails"][0]["counts"].items() if v}
    return {}


def edit(source: Path, old: str, new: str) -> None:
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))


async def test_a_new_file_is_scheduled_and_an_edited_time_followed(
    tmp_path: Path, smtp_server: SmtpServer
):
    async with running(tmp_path, smtp_server) as engine:
        source = write_event(tmp_path, "seminarium", timed_event(LATER, people=2))
        await eventually(lambda: _is(counts(engine), {"scheduled": 2}))
        edit(source, f"send_at = {LATER}", f"send_at = {soon(0.5)}")
        await eventually(lambda: _is(counts(engine), {"sent": 2}))
    assert len(smtp_server.messages) == 2


async def test_a_recipient_added_after_the_time_gets_it_at_once_and_nobody_twice(
    tmp_path: Path, smtp_server: SmtpServer
):
    source = write_event(tmp_path, "seminarium", timed_event(soon(0.3), people=2))
    async with running(tmp_path, smtp_server) as engine:
        await eventually(lambda: _is(counts(engine), {"sent": 2}))
        edit(source, "[[mail]]", '[[recipients.people]]\nemail = "late@example.org"\n\n[[mail]]')
        await eventually(lambda: _is(counts(engine), {"sent": 3}))
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "late@example.org",
        "person00000@example.org",
        "person00001@example.org",
    ]


async def test_a_removed_recipient_is_cancelled_and_a_deleted_file_cancels_the_rest(
    tmp_path: Path, smtp_server: SmtpServer
):
    source = write_event(tmp_path, "seminarium", timed_event(LATER, people=2))
    async with running(tmp_path, smtp_server) as engine:
        await eventually(lambda: _is(counts(engine), {"scheduled": 2}))
        edit(
            source,
            '[[recipients.people]]\nemail = "person00001@example.org"\nname = "Person 1"\n',
            "",
        )
        await eventually(lambda: _is(counts(engine), {"scheduled": 1, "cancelled": 1}))
        source.unlink()
        await eventually(lambda: _is(counts(engine), {"cancelled": 2}))
        assert (await report(engine))["events"][0]["removed"] is True  # history kept


async def test_an_invalid_edit_keeps_the_last_valid_plan_and_shows_until_fixed(
    tmp_path: Path, smtp_server: SmtpServer
):
    source = write_event(tmp_path, "seminarium", timed_event(soon(1.5), people=2))
    async with running(tmp_path, smtp_server) as engine:
        await eventually(lambda: _is(counts(engine), {"scheduled": 2}))
        edit(source, 'to = ["all"]', 'to = ["registerd"]')

        async def shows_error() -> bool:
            error = (await report(engine))["events"][0]["error"]
            return error is not None and 'unknown group "registerd"' in error

        await eventually(shows_error)
        # The last valid version stays in force: its mail still goes out at its time.
        await eventually(lambda: _is(counts(engine), {"sent": 2}), timeout_s=5)
        edit(source, 'to = ["registerd"]', 'to = ["all"]')

        async def error_cleared() -> bool:
            return (await report(engine))["events"][0]["error"] is None

        await eventually(error_cleared)
    assert len(smtp_server.messages) == 2


async def test_a_slow_non_atomic_write_and_editor_leftovers_cancel_nothing(
    tmp_path: Path, smtp_server: SmtpServer
):
    text = timed_event(LATER, people=3)
    source = write_event(tmp_path, "seminarium", text)
    async with running(tmp_path, smtp_server) as engine:
        await eventually(lambda: _is(counts(engine), {"scheduled": 3}))
        seen: list[dict[str, int]] = []
        with source.open("w") as file:  # truncate, write half, pause, write the rest
            file.write(text[: len(text) // 2])
            file.flush()
            for _ in range(5):
                await asyncio.sleep(0.04)
                seen.append(await counts(engine))
            file.write(text[len(text) // 2 :])
        (tmp_path / "schedules" / ".seminarium.toml.swp").write_text("garbage")
        (tmp_path / "schedules" / "seminarium.toml~").write_text("garbage")
        # An editor's save: write a temporary file, then rename it over the original.
        temporary = tmp_path / "schedules" / ".seminarium.toml.tmp"
        temporary.write_text(text)
        temporary.replace(source)
        await asyncio.sleep(1.0)
        assert await counts(engine) == {"scheduled": 3}
        assert all(c == {"scheduled": 3} for c in seen), seen
        assert (await report(engine))["events"][0]["error"] is None
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM deliveries WHERE state = 'cancelled'") == [(0,)]


async def test_a_file_cut_off_mid_write_that_still_parses_cancels_nothing(
    tmp_path: Path, smtp_server: SmtpServer
):
    text = timed_event(LATER, people=3)
    source = write_event(tmp_path, "seminarium", text)
    async with running(tmp_path, smtp_server) as engine:
        await eventually(lambda: _is(counts(engine), {"scheduled": 3}))
        cut = text.index('[[recipients.people]]\nemail = "person00001')
        mail = text[text.index("[[mail]]") :]
        with source.open("w") as file:  # a copy that has written one recipient of three...
            file.write(text[:cut] + mail)
            file.flush()
            await asyncio.sleep(0.1)
            file.seek(0)
            file.write(text)  # ...and then the rest
        seen = []
        for _ in range(40):
            seen.append(await counts(engine))
            await asyncio.sleep(0.025)
        assert all(c == {"scheduled": 3} for c in seen), seen


async def test_a_folder_event_reloads_when_its_csv_changes(tmp_path: Path, smtp_server: SmtpServer):
    event = (
        'title = "Förlabb"\nstarts = 2099-06-16T09:00:00\n[recipients]\nfile = "people.csv"\n'
        '[[mail]]\nname = "invitation"\nsend_at = "start - 21d at 09:00"\nto = ["all"]\n'
    )
    csv = "email;name\nanna@example.org;Anna\n"
    source = write_event(tmp_path, "forlabb", event, people__csv=csv)
    async with running(tmp_path, smtp_server) as engine:
        await eventually(lambda: _is(counts(engine, "forlabb"), {"scheduled": 1}))
        (source.parent / "people.csv").write_text(csv + "bo@example.org;Bo\n")
        await eventually(lambda: _is(counts(engine, "forlabb"), {"scheduled": 2}))


async def mailer_status(root: Path) -> dict[str, dict[str, Any]]:
    """What a real `mailer status --json` prints, by event id."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mailer", "status", "--json", "-c", str(root / "config.toml")),
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=20)
    return {event["id"]: event for event in json.loads(out)["events"]}


def delivery_states(root: Path, event_id: str) -> list[str]:
    """Read-only: the test must not create the database the service is about to create."""
    query = "SELECT state FROM deliveries WHERE event = ? ORDER BY recipient"
    try:
        with sqlite3.connect(f"file:{root / 'var' / 'mailer.sqlite3'}?mode=ro", uri=True) as db:
            return [state for (state,) in db.execute(query, (event_id,))]
    except sqlite3.OperationalError:  # not there yet, or its schema not yet made
        return []


async def until_states(root: Path, event_id: str, expected: list[str], timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while delivery_states(root, event_id) != expected:
        assert asyncio.get_running_loop().time() < deadline, delivery_states(root, event_id)
        await asyncio.sleep(0.05)


EVENTS = ("nytt", "seminarium")


@pytest.mark.timeout(60)  # a real service and real `mailer status` runs, on a busy machine
async def test_a_missing_template_is_an_error_of_the_event_file_as_check_says(
    tmp_path: Path, smtp_server: SmtpServer
):
    """SPEC §4, §5.2 in a real `mailer run`: a new event naming a template that does not
    exist plans nothing; a valid event edited to name one keeps its last valid version in
    force (its mail goes out, with the old template); `status --json` shows both errors."""
    make_project(tmp_path, transport=smtp_transport(smtp_server.port))
    kept = write_event(tmp_path, "seminarium", timed_event(soon(8), people=2))
    async with mailer_run(tmp_path, smtp_server):
        await until_states(tmp_path, "seminarium", ["scheduled"] * 2, timeout_s=20)
        # The watcher is up once a new file is planned (it starts after the first plan).
        write_event(tmp_path, "watched", timed_event(LATER, people=1))
        await until_states(tmp_path, "watched", ["scheduled"], timeout_s=15)

        missing = '[[mail]]\nname = "invitation"\ntemplate = "nonexistent"'
        write_event(
            tmp_path,
            "nytt",
            timed_event(soon(1), people=1).replace('[[mail]]\nname = "invitation"', missing),
        )
        edit(kept, '[[mail]]\nname = "invitation"', missing)
        deadline = asyncio.get_running_loop().time() + 15
        while None in [(await mailer_status(tmp_path)).get(e, {}).get("error") for e in EVENTS]:
            assert asyncio.get_running_loop().time() < deadline, await mailer_status(tmp_path)
            await asyncio.sleep(0.2)
        shown = await mailer_status(tmp_path)
        assert 'no template "nonexistent"' in shown["nytt"]["error"]
        assert 'no template "nonexistent"' in shown["seminarium"]["error"]
        await until_states(tmp_path, "seminarium", ["sent"] * 2, timeout_s=15)
        assert delivery_states(tmp_path, "nytt") == []
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "person00000@example.org",
        "person00001@example.org",
    ]


async def _is(value: Awaitable[dict[str, int]], expected: dict[str, int]) -> bool:
    return await value == expected
