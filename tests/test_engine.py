"""The engine on a steered clock, real SQLite and a real Maildir: once, on time, never twice."""

from __future__ import annotations

import asyncio
import logging
import mailbox
import multiprocessing
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_binary_file, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent

from mailer import reading
from mailer.clock import ManualClock, SystemClock
from mailer.config import load_settings
from mailer.delivery import DeliveryState
from mailer.engine import Engine
from mailer.sending import StepResult
from mailer.sources import find_event_files
from mailer.store import LEASE_S, Store
from mailer.transports.maildir import MaildirTransport
from tests.project import EVENT, make_project, write_event
from tests.test_service import until

STOCKHOLM = ZoneInfo("Europe/Stockholm")
# The project's event starts 2027-06-16 09:00; the invitation is due 21 days before at 09:00,
# the reminder (to the two registered) 2 days before at 09:00.
INVITATION_DUE = datetime(2027, 5, 26, 9, tzinfo=STOCKHOLM)
REMINDER_DUE = datetime(2027, 6, 14, 9, tzinfo=STOCKHOLM)
EVENT_WITH_UNKNOWN_GROUP = EVENT.replace('to = ["registered"]', 'to = ["nobody"]')


@asynccontextmanager
async def engine_at(root: Path, clock: ManualClock) -> AsyncIterator[Engine]:
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database)
    engine = Engine(
        settings, store=store, transport=MaildirTransport(root / "var" / "maildir"), clock=clock
    )
    try:
        await engine.load_all()
        yield engine
    finally:
        await engine.close()
        await store.close()


def maildir(root: Path) -> list[tuple[str, str]]:
    """(recipient, subject) of every message written, sorted."""
    if not (root / "var" / "maildir").exists():
        return []
    box = mailbox.Maildir(
        root / "var" / "maildir",
        create=False,
        factory=lambda f: message_from_binary_file(f, policy=policy.default),
    )
    return sorted((str(m["To"]), str(m["Subject"])) for m in box)


def db_ids(root: Path, sql: str) -> list[int]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return [row[0] for row in db.execute(sql)]


async def states(engine: Engine) -> dict[str, dict[str, int]]:
    return {
        m.mail: {k.value: v for k, v in m.counts.items() if v}
        for m in await engine.store.mail_counts()
    }


async def test_a_mail_goes_out_at_its_time_once_and_a_restart_replays_nothing(tmp_path: Path):
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    clock = ManualClock(INVITATION_DUE - timedelta(minutes=1))
    async with engine_at(tmp_path, clock) as engine:
        assert (await engine.step()).handled == 0
        assert await states(engine) == {
            "invitation": {"scheduled": 2},
            "reminder": {"scheduled": 2},
        }
        clock.advance(timedelta(minutes=1))
        assert (await engine.step()).handled == 2
        assert await states(engine) == {"invitation": {"sent": 2}, "reminder": {"scheduled": 2}}
    async with engine_at(tmp_path, clock) as engine:  # a restart
        assert (await engine.step()).handled == 0
    assert [to for to, _ in maildir(tmp_path)] == [
        "Anna Andersson <anna@example.org>",
        "Björn Östlund <bjorn@example.org>",
    ]


async def test_a_step_returns_how_each_delivery_it_handled_ended(tmp_path: Path):
    """What a step did is its return value (what `mailer send` reports), not engine state."""
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    async with engine_at(tmp_path, ManualClock(INVITATION_DUE)) as engine:
        done = await engine.step()
        sent = db_ids(tmp_path, "SELECT id FROM deliveries WHERE state = 'sent'")
        assert done.handled == 2 and done.paused_because is None
        assert done.outcomes == {id_: DeliveryState.SENT for id_ in sent} and len(sent) == 2
        assert not hasattr(engine, "outcomes")
        assert (await engine.step()) == StepResult({}, 0, None)  # nothing due: nothing done


async def test_what_fell_due_while_down_goes_out_at_once_and_what_expired_never(tmp_path: Path):
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    # Down from before the invitation until after the event started: both mails expired.
    async with engine_at(
        tmp_path, ManualClock(datetime(2027, 6, 16, 9, 30, tzinfo=STOCKHOLM))
    ) as engine:
        assert (await engine.step()).handled == 0
        assert await states(engine) == {"invitation": {"expired": 2}, "reminder": {"expired": 2}}
    assert maildir(tmp_path) == []


async def test_a_late_start_still_sends_what_is_within_its_expiry(tmp_path: Path):
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    async with engine_at(tmp_path, ManualClock(REMINDER_DUE + timedelta(hours=3))) as engine:
        assert (await engine.step()).handled == 4
    assert len(maildir(tmp_path)) == 4


async def test_an_edit_moves_what_is_pending_and_keeps_what_was_sent(tmp_path: Path):
    make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    clock = ManualClock(INVITATION_DUE)
    async with engine_at(tmp_path, clock) as engine:
        assert (await engine.step()).handled == 2
        # The event moves a week later and Anna is no longer registered.
        text = source.read_text().replace("2027-06-16", "2027-06-23")
        source.write_text(
            text.replace(
                'groups = ["registered"]\n\n[[recipients.people]]\nemail = "bjorn',
                'groups = []\n\n[[recipients.people]]\nemail = "bjorn',
                1,
            )
        )
        await engine.plan([source])
        assert await states(engine) == {
            "invitation": {"sent": 2},
            "reminder": {"scheduled": 1, "cancelled": 1},
        }
        clock.set(REMINDER_DUE)  # the old reminder time: only the update of the move (§10)
        assert (await engine.step()).handled == 2
        assert await states(engine) == {
            "invitation": {"sent": 2},
            "reminder": {"scheduled": 1, "cancelled": 1},
            "update": {"sent": 2},
        }
        clock.set(REMINDER_DUE + timedelta(days=7))
        assert (await engine.step()).handled == 1
    assert len(maildir(tmp_path)) == 5


async def test_an_invalid_file_keeps_the_last_valid_plan_in_force_across_a_restart(tmp_path: Path):
    make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    clock = ManualClock(INVITATION_DUE - timedelta(days=1))
    async with engine_at(tmp_path, clock):
        pass
    source.write_text(source.read_text().replace('to = ["registered"]', 'to = ["registerd"]'))
    async with engine_at(tmp_path, clock) as engine:  # restarted on the invalid file
        assert "unknown group" in (await engine.store.events())["forlabb"].error
        assert await states(engine) == {
            "invitation": {"scheduled": 2},
            "reminder": {"scheduled": 2},
        }
        clock.set(INVITATION_DUE)
        assert (await engine.step()).handled == 2  # sent under the last valid version
    assert len(maildir(tmp_path)) == 2


async def test_a_deleted_file_cancels_what_has_not_gone_out_and_keeps_history(tmp_path: Path):
    make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    async with engine_at(tmp_path, ManualClock(INVITATION_DUE)) as engine:
        await engine.step()
        source.unlink()
        await engine.plan([source])
        assert await states(engine) == {"invitation": {"sent": 2}, "reminder": {"cancelled": 2}}


async def test_a_crash_mid_send_puts_claimed_deliveries_back_once_their_lease_runs_out(
    tmp_path: Path,
):
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    clock = ManualClock(INVITATION_DUE)
    async with engine_at(tmp_path, clock) as engine:
        claimed, _ = await engine.store.claim_due(clock.now().timestamp(), limit=10)
        assert len(claimed) == 2  # taken for sending, then the process "dies"
    clock.advance(timedelta(seconds=LEASE_S))  # and renews nothing (it is this process: alive)
    async with engine_at(tmp_path, clock) as engine:
        assert (await engine.step()).handled == 2
    assert len(maildir(tmp_path)) == 2


async def test_times_are_stored_as_utc_instants(tmp_path: Path):
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    async with engine_at(tmp_path, ManualClock(INVITATION_DUE)) as engine:
        (first, *_) = await engine.store.mail_counts()
        assert datetime.fromtimestamp(first.due, UTC) == INVITATION_DUE


async def test_a_restart_leaves_unchanged_events_unparsed_until_a_mail_is_due(tmp_path: Path):
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    clock = ManualClock(INVITATION_DUE - timedelta(minutes=1))
    async with engine_at(tmp_path, clock) as engine:  # plans it, and keeps nothing parsed
        assert engine.catalog.events == {} and engine.catalog.in_force == 1
    async with engine_at(tmp_path, clock) as engine:  # a restart: the files are unchanged
        assert engine.catalog.events == {} and engine.catalog.in_force == 1
        clock.set(INVITATION_DUE)
        assert (await engine.step()).handled == 2
        assert set(engine.catalog.events) == {"forlabb"}  # parsed when its mail fell due
    assert len(maildir(tmp_path)) == 2


async def test_memory_holds_a_bounded_number_of_parsed_events(tmp_path: Path):
    from mailer.in_force import MAX_PARSED

    make_project(tmp_path)
    for number in range(MAX_PARSED + 4):
        write_event(tmp_path, f"forlabb-{number}")
    async with engine_at(tmp_path, ManualClock(INVITATION_DUE)) as engine:
        assert (await engine.step()).handled == 2 * (MAX_PARSED + 4)  # every one parsed and sent
        assert len(engine.catalog.events) == MAX_PARSED
        assert engine.catalog.in_force == MAX_PARSED + 4


async def test_many_events_are_read_by_worker_processes_and_planned_as_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Past POOL_MIN_EVENTS files to read, worker processes read them at start: the same
    plan and the same kept error as when the service reads them itself."""

    def start(root: Path) -> tuple[list[tuple], list[tuple]]:
        make_project(root)
        for number in range(4):
            write_event(root, f"forlabb-{number}")
        write_event(root, "broken", EVENT_WITH_UNKNOWN_GROUP)

        async def planned() -> None:
            async with engine_at(root, ManualClock(INVITATION_DUE - timedelta(days=1))):
                pass

        asyncio.run(planned())
        with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
            deliveries = db.execute(
                "SELECT event, mail, recipient, due, expires, state, message_id "
                "FROM deliveries ORDER BY event, mail, recipient"
            ).fetchall()
            events = db.execute("SELECT id, digest, error FROM events ORDER BY id").fetchall()
        return deliveries, [(i, d, e and e.replace(str(root), "")) for i, d, e in events]

    monkeypatch.setattr(reading, "POOL_MIN_EVENTS", 3)
    with reading.readers(5) as executor:
        assert isinstance(executor, ProcessPoolExecutor) == (len(os.sched_getaffinity(0)) > 1)
    by_workers = await asyncio.to_thread(start, tmp_path / "workers")
    monkeypatch.setattr(reading, "POOL_MIN_EVENTS", 1000)
    by_itself = await asyncio.to_thread(start, tmp_path / "itself")
    assert len(by_workers[0]) == 4 * 4  # invitation to 2, reminder to 2, in 4 events
    assert [e[2] is not None for e in by_workers[1]] == [True, False, False, False, False]
    assert 'unknown group "nobody"' in by_workers[1][0][2]
    assert by_workers == by_itself


async def test_a_worker_that_dies_is_replaced_by_reading_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """A pool whose workers die (here: at birth) breaks; its files are read in this process."""
    make_project(tmp_path)
    for number in range(3):
        write_event(tmp_path, f"forlabb-{number}")
    settings = load_settings(tmp_path / "config.toml")
    sources = find_event_files(settings.paths.schedules)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=sys.exit) as broken:
        readings = [r async for _, r in reading.read_ahead(sources, settings, broken)]
    assert [r and r.version.event_id for r in readings] == [s.stem for s in sources]
    assert [r and len(r.wanted) for r in readings] == [4, 4, 4]
    assert caplog.text.count("a worker reading event files died") == 1  # said once


async def test_a_stop_while_a_wake_up_job_is_in_flight_says_nothing_alarming(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """The stop lands between a wake-up job's submission and its run (APScheduler's timer and
    the stop in one turn of the loop: about one stop in 40): no error, no traceback."""
    make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    settings = load_settings(tmp_path / "config.toml")
    store = await Store.open(settings.paths.database)
    transport = MaildirTransport(tmp_path / "var" / "maildir")
    engine = Engine(settings, store=store, transport=transport, clock=SystemClock())
    caplog.set_level(logging.DEBUG, logger="apscheduler")
    task = asyncio.create_task(engine.run(watch_folder=False))
    try:
        await until(lambda: engine.alarm.scheduler is not None and engine.alarm.scheduler.running)
        scheduler = engine.alarm.scheduler
        assert scheduler is not None
        await until(lambda: scheduler.get_job("wake") is not None)

        def stop_now(event: JobSubmissionEvent) -> None:
            scheduler._lookup_executor("default").shutdown(wait=False)
            engine.stop()

        scheduler.add_listener(stop_now, EVENT_JOB_SUBMITTED)
        scheduler.modify_job("wake", next_run_time=datetime.now(UTC))
        await asyncio.wait_for(task, timeout=10)
    finally:
        engine.stop()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
    alarming = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert alarming == [], [r.getMessage() for r in alarming]


# Right after start, and mid-idle around the wake-ups APScheduler once polled with (2 s); in
# two batches, quick ones together, so the test takes seconds, not a minute.
STOP_AFTER_S = [0.0, 0.01, 0.02, 0.05, 0.1, 0.3, 1.9, 1.95, 1.98, 2.0, 2.02, 2.05]


@pytest.mark.timeout(60)
async def test_ctrl_c_stops_the_service_cleanly_whenever_it_comes(tmp_path: Path):
    """`mailer run` and SIGINT, 12 times at varied moments: exit 0, never a traceback."""
    configs = []
    for run in range(len(STOP_AFTER_S)):  # a project each: one service per database
        configs.append(make_project(tmp_path / str(run)))
        write_event(tmp_path / str(run), "forlabb")
    results = []
    for first in range(0, len(STOP_AFTER_S), 6):
        runs = zip(configs[first : first + 6], STOP_AFTER_S[first : first + 6], strict=True)
        results += await asyncio.gather(*(interrupted_run(c, after_s=s) for c, s in runs))
    for after_s, (code, stderr) in zip(STOP_AFTER_S, results, strict=True):
        assert code == 0 and "Traceback" not in stderr and "Error" not in stderr, (after_s, stderr)


async def interrupted_run(config: Path, *, after_s: float) -> tuple[int, str]:
    """Start `mailer run`, send SIGINT `after_s` after it says it runs; exit code and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailer",
        "run",
        "-c",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    said = b""
    try:
        async with asyncio.timeout(20):
            while b"running:" not in said:
                line = await process.stderr.readline()
                assert line, said.decode()
                said += line
            await asyncio.sleep(after_s)
            process.send_signal(signal.SIGINT)
            said += await process.stderr.read()
            return await process.wait(), said.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


WITH_REPORT = (
    EVENT
    + """
[[mail]]
name = "report"
send_at = "end + 2d at 10:00"
to = ["all"]
template = "report"
attach = ["rapport.pdf"]
"""
)
REPORT_DUE = datetime(2027, 6, 18, 10, tzinfo=STOCKHOLM)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_an_attachment_replaced_after_planning_goes_out_as_it_was_checked(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
):
    """SPEC §9, the version in force stored whole: while the event file is invalid, the last
    valid version is sent, its PDF too, not the one put in the folder since (which nobody
    checked, and another node may not even have)."""
    config = make_project(tmp_path)
    if database == "postgresql":
        url = request.getfixturevalue("fresh_database")
        config.write_text(config.read_text().replace('"var/mailer.sqlite3"', f'"{url}"'))
    source = write_event(tmp_path, "forlabb", WITH_REPORT, rapport__pdf=b"%PDF-1.7 as checked")
    async with engine_at(tmp_path, ManualClock(INVITATION_DUE - timedelta(days=1))):
        pass  # planned
    source.write_text(source.read_text() + "\nthis is not = = TOML\n")
    (source.parent / "rapport.pdf").write_bytes(b"%PDF-1.7 replaced, never checked")

    async with engine_at(tmp_path, ManualClock(REPORT_DUE + timedelta(minutes=1))) as engine:
        assert (await engine.store.events())["forlabb"].error is not None
        await engine.step()

    box = mailbox.Maildir(tmp_path / "var" / "maildir", create=False, factory=None)
    pdfs = [
        part.get_payload(decode=True)
        for message in box
        for part in message.walk()
        if part.get_filename() == "rapport.pdf"
    ]
    assert len(pdfs) == 2 and set(pdfs) == {b"%PDF-1.7 as checked"}
