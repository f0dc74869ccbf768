"""When an event changes after mail went out (SPEC §10): updates, cancellations, coalescing,
hold; on a steered clock, real SQLite and a real Maildir, every .ics read by two parsers."""

from __future__ import annotations

import mailbox
import shutil
import sqlite3
from datetime import datetime, timedelta
from email import message_from_binary_file, policy
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import vobject
from click.testing import CliRunner

from mailer.cli import main
from mailer.clock import ManualClock
from mailer.engine import Engine
from mailer.status import status_report
from tests.project import EVENT, TEMPLATES, make_project, write_event
from tests.test_engine import INVITATION_DUE, engine_at

STOCKHOLM = ZoneInfo("Europe/Stockholm")
SETTLE = timedelta(minutes=10)  # sending.change_settle's default
MOVED = {"starts": "2027-06-17T13:00:00", "ends": "2027-06-17T15:00:00"}


def messages(root: Path) -> list[EmailMessage]:
    """Every message written to the Maildir, in no particular order."""
    folder = root / "var" / "maildir"
    if not folder.exists():
        return []
    box = mailbox.Maildir(
        folder, create=False, factory=lambda f: message_from_binary_file(f, policy=policy.default)
    )
    return list(box)


def by_subject(root: Path, prefix: str) -> dict[str, EmailMessage]:
    """The messages whose subject starts with `prefix`, by recipient address."""
    found: dict[str, EmailMessage] = {}
    for message in messages(root):
        if str(message["Subject"]).startswith(prefix):
            address = message["To"].addresses[0].addr_spec
            assert address not in found, f"{address} got {prefix!r} twice"
            found[address] = message
    return found


def calendar_of(message: EmailMessage) -> dict[str, object]:
    """The .ics as icalendar and vobject read it, checked to agree on what matters."""
    (part,) = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    data = part.get_content().encode()
    cal = icalendar.Calendar.from_ical(data)
    (ours,) = cal.walk("VEVENT")
    theirs = vobject.readOne(data.decode()).vevent
    assert ours["DTSTART"].dt == theirs.dtstart.value  # the same instant in both readers
    assert str(ours["UID"]) == theirs.uid.value
    assert int(ours["SEQUENCE"]) == int(theirs.sequence.value)
    return {
        "method": str(cal["METHOD"]),
        "part_method": part.get_param("method"),
        "uid": str(ours["UID"]),
        "sequence": int(ours["SEQUENCE"]),
        "status": str(ours["STATUS"]),
        "start": theirs.dtstart.value.isoformat(),
        "attendee": theirs.attendee.value,
    }


def sequence(root: Path, event: str = "forlabb") -> int:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return int(
            db.execute("SELECT sequence FROM calendars WHERE event = ?", (event,)).fetchone()[0]
        )


def pending_due(root: Path, mail: str) -> set[tuple[float, str]]:
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        return set(db.execute("SELECT due, state FROM deliveries WHERE mail = ?", (mail,)))


async def invited(root: Path, clock: ManualClock) -> None:
    """The project's event, its invitation (with .ics) sent to both recipients."""
    make_project(root)
    write_event(root, "forlabb")
    async with engine_at(root, clock) as engine:
        assert (await engine.step()).handled == 2
    assert len(by_subject(root, "")) == 2


async def edit(engine: Engine, root: Path, text: str = EVENT, **times: str) -> None:
    """Save the event file and bring it in, as the watcher would."""
    await engine.plan([write_event(root, "forlabb", text, **times)])


async def test_a_moved_event_sends_one_update_each_with_the_same_uid_and_a_higher_sequence(
    tmp_path: Path,
):
    clock = ManualClock(INVITATION_DUE)
    await invited(tmp_path, clock)
    first = {a: calendar_of(m) for a, m in by_subject(tmp_path, "").items()}
    async with engine_at(tmp_path, clock) as engine:
        await edit(engine, tmp_path, **MOVED)
        # The reminder follows the new start at once; the update waits for the edits to settle.
        assert pending_due(tmp_path, "reminder") == {
            (datetime(2027, 6, 15, 9, tzinfo=STOCKHOLM).timestamp(), "scheduled")
        }
        clock.advance(SETTLE - timedelta(seconds=1))
        assert (await engine.step()).handled == 0
        clock.advance(timedelta(seconds=1))
        assert (await engine.step()).handled == 2
    updates = by_subject(tmp_path, "Ändrat") | by_subject(tmp_path, "Changed")
    assert sorted(updates) == ["anna@example.org", "bjorn@example.org"]
    for address, message in updates.items():
        before, after = first[address], calendar_of(message)
        assert after["uid"] == before["uid"] == "forlabb@example.org"
        assert (before["sequence"], after["sequence"]) == (0, 1)
        assert after["method"] == before["method"] == after["part_method"] == "REQUEST"
        assert (before["start"], after["start"]) == (
            "2027-06-16T09:00:00+02:00",
            "2027-06-17T13:00:00+02:00",
        )
        assert after["attendee"] == f"mailto:{address}"
    # Old -> new in the reader's language and date format.
    anna = updates["anna@example.org"].get_body(("plain",)).get_content()
    assert "Börjar: onsdag 16 juni 2027 kl. 09:00 → torsdag 17 juni 2027 kl. 13:00" in anna
    bjorn = updates["bjorn@example.org"].get_body(("plain",)).get_content()
    assert "Starts: Wednesday 16 June 2027 at 09:00 → Thursday 17 June 2027 at 13:00" in bjorn
    async with engine_at(tmp_path, clock) as engine:  # a restart: nothing again, nothing less
        clock.advance(SETTLE)
        assert (await engine.step()).handled == 0
    assert sequence(tmp_path) == 1
    assert len(messages(tmp_path)) == 4


async def test_two_quick_edits_that_cancel_each_other_and_a_description_edit_send_nothing(
    tmp_path: Path,
):
    clock = ManualClock(INVITATION_DUE)
    await invited(tmp_path, clock)
    async with engine_at(tmp_path, clock) as engine:
        await edit(engine, tmp_path, **MOVED)
        clock.advance(SETTLE / 2)
        await edit(engine, tmp_path)  # back as it was, within the window
        clock.advance(SETTLE)
        assert (await engine.step()).handled == 0
        await edit(engine, tmp_path, 'description = "Ta med dator."\n' + EVENT)
        clock.advance(SETTLE * 2)
        assert (await engine.step()).handled == 0
    assert sequence(tmp_path) == 0
    assert len(messages(tmp_path)) == 2


async def test_edits_within_the_window_make_one_update_with_the_net_change(tmp_path: Path):
    clock = ManualClock(INVITATION_DUE)
    await invited(tmp_path, clock)
    async with engine_at(tmp_path, clock) as engine:
        await edit(engine, tmp_path, **MOVED)
        clock.advance(SETTLE / 2)
        await edit(engine, tmp_path, EVENT.replace("Västerås", "Eskilstuna"), **MOVED)
        clock.advance(SETTLE / 2)  # ten minutes after the first edit, five after the second
        assert (await engine.step()).handled == 0
        clock.advance(SETTLE / 2)
        assert (await engine.step()).handled == 2
    anna = by_subject(tmp_path, "Ändrat")["anna@example.org"]
    text = anna.get_body(("plain",)).get_content()
    assert "Plats: Mälardalens universitet, Västerås → Mälardalens universitet, Eskilstuna" in text
    assert calendar_of(anna)["sequence"] == 1


async def test_a_cancelled_event_cancels_what_is_pending_and_tells_everyone_once(
    tmp_path: Path,
):
    clock = ManualClock(INVITATION_DUE)
    await invited(tmp_path, clock)
    async with engine_at(tmp_path, clock) as engine:
        await edit(engine, tmp_path, "cancelled = true\n" + EVENT)
        assert {state for _, state in pending_due(tmp_path, "reminder")} == {"cancelled"}
        clock.advance(SETTLE)
        assert (await engine.step()).handled == 2
        assert (await engine.step()).handled == 0
        cancellations = by_subject(tmp_path, "Inställt") | by_subject(tmp_path, "Cancelled")
        assert sorted(cancellations) == ["anna@example.org", "bjorn@example.org"]
        for message in cancellations.values():
            ics = calendar_of(message)
            assert (ics["method"], ics["part_method"]) == ("CANCEL", "CANCEL")
            assert (ics["status"], ics["sequence"]) == ("CANCELLED", 1)
        # Removing the key brings it back: the reminder is planned again, everyone told.
        await edit(engine, tmp_path)
        assert {state for _, state in pending_due(tmp_path, "reminder")} == {"scheduled"}
        clock.advance(SETTLE)
        assert (await engine.step()).handled == 2
        (event,) = (await status_report(engine.store, zone=STOCKHOLM))["events"]
        counts = {m["name"]: {k: v for k, v in m["counts"].items() if v} for m in event["mails"]}
        assert counts == {  # notices are status rows like any mail
            "invitation": {"sent": 2},
            "reminder": {"scheduled": 2},
            "cancellation": {"sent": 2},
            "update": {"sent": 2},
        }
    updates = by_subject(tmp_path, "Ändrat") | by_subject(tmp_path, "Changed")
    assert sorted(updates) == ["anna@example.org", "bjorn@example.org"]
    assert "Förlabb: Skolnärvaro blir av som planerat." in (
        updates["anna@example.org"].get_body(("plain",)).get_content()
    )
    assert {calendar_of(m)["sequence"] for m in updates.values()} == {2}
    assert {calendar_of(m)["method"] for m in updates.values()} == {"REQUEST"}


async def test_a_restart_between_changes_keeps_the_sequence_and_sends_each_round_once(
    tmp_path: Path,
):
    clock = ManualClock(INVITATION_DUE)
    await invited(tmp_path, clock)
    async with engine_at(tmp_path, clock) as engine:
        await edit(engine, tmp_path, **MOVED)
    async with engine_at(tmp_path, clock) as engine:  # restarted before the change settled
        clock.advance(SETTLE)
        assert (await engine.step()).handled == 2
        await edit(engine, tmp_path)  # moved back: a second round
    async with engine_at(tmp_path, clock) as engine:
        clock.advance(SETTLE)
        assert (await engine.step()).handled == 2
    async with engine_at(tmp_path, clock) as engine:
        clock.advance(SETTLE)
        assert (await engine.step()).handled == 0
    assert sequence(tmp_path) == 2
    anna = [m for m in messages(tmp_path) if m["To"].addresses[0].addr_spec == "anna@example.org"]
    assert sorted(calendar_of(m)["sequence"] for m in anna) == [0, 1, 2]
    assert len({m["Message-ID"] for m in anna}) == 3  # each round a message of its own


async def test_notify_changes_false_moves_the_calendar_identity_and_sends_nothing(
    tmp_path: Path,
):
    clock = ManualClock(INVITATION_DUE)
    await invited(tmp_path, clock)
    async with engine_at(tmp_path, clock) as engine:
        await edit(engine, tmp_path, "notify_changes = false\n" + EVENT, **MOVED)
        clock.advance(SETTLE)
        assert (await engine.step()).handled == 0
    assert sequence(tmp_path) == 1
    assert len(messages(tmp_path)) == 2


async def test_a_held_event_sends_nothing_shows_held_and_sends_what_fell_due_on_release(
    tmp_path: Path,
):
    make_project(tmp_path)
    write_event(tmp_path, "forlabb", "hold = true\n" + EVENT)
    clock = ManualClock(INVITATION_DUE + timedelta(hours=1))
    async with engine_at(tmp_path, clock) as engine:
        assert (await engine.step()).handled == 0
        assert await engine.store.next_due() is None  # no wake-up for what is held
        (event,) = (await status_report(engine.store, zone=STOCKHOLM))["events"]
        assert event["held"] is True
        assert event["mails"][0]["counts"]["scheduled"] == 2
        await edit(engine, tmp_path)  # the key removed
        assert (await engine.step()).handled == 2  # fell due an hour ago: goes out at once
        (event,) = (await status_report(engine.store, zone=STOCKHOLM))["events"]
        assert event["held"] is False
    assert len(messages(tmp_path)) == 2


def test_check_notes_a_templates_folder_without_the_notices(tmp_path: Path):
    """An operator's own templates folder from before SPEC §10: the first update would fail
    months later; `check` says so now (a note: the event is fine, exit 0)."""
    config = make_project(tmp_path)
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    for old in templates.glob("*/update.*"):
        old.unlink()
    config.write_text(config.read_text().replace(str(TEMPLATES), str(templates)))
    write_event(tmp_path, "forlabb")
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert 'no "update" template in' in result.output
    assert 'no "cancellation" template' not in result.output
