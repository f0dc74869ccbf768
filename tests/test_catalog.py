"""The catalog: event files judged as `check` judges them; big events re-planned off the loop."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer import reading, saving
from mailer.catalog import Catalog
from mailer.checking import check_events
from mailer.clock import ManualClock
from mailer.config import load_settings
from mailer.outbox import Outbox
from mailer.sources import find_event_files
from mailer.store import Store
from tests.project import EVENT, TEMPLATES, make_project, write_event

NOW = datetime(2027, 1, 1, 9, tzinfo=UTC)
MISSING = EVENT.replace('name = "reminder"', 'name = "reminder"\ntemplate = "nonexistent"')
# A template that exists in English only, named by an event in Swedish (the default): no
# language the mail may be sent in has it.
ONLY_IN_ENGLISH = EVENT.replace('name = "reminder"', 'name = "reminder"\ntemplate = "only-en"')


def project(root: Path) -> Path:
    """A project with its own copy of the templates, plus one in English only."""
    config = make_project(root)
    shutil.copytree(TEMPLATES, root / "templates")
    (root / "templates" / "en" / "only-en.txt.j2").write_text(
        "{% block subject %}Hello{% endblock %}\nHello {{ recipient.name }}\n"
    )
    config.write_text(config.read_text().replace(str(TEMPLATES), "templates"))
    return config


@asynccontextmanager
async def catalog_of(root: Path) -> AsyncIterator[Catalog]:
    settings = load_settings(root / "config.toml")
    store = await Store.open(settings.paths.database)
    outbox = Outbox.from_settings(settings)
    try:
        yield Catalog(settings, store=store, outbox=outbox, clock=ManualClock(NOW))
    finally:
        await store.close()


def stored(root: Path) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """Each event's error, and each event's delivery states, as the database holds them."""
    with sqlite3.connect(root / "var" / "mailer.sqlite3") as db:
        errors = dict(db.execute("SELECT id, error FROM events"))
        states: dict[str, list[str]] = {}
        for event, state in db.execute("SELECT event, state FROM deliveries ORDER BY id"):
            states.setdefault(event, []).append(state)
    return errors, states


def check_says(root: Path, event_id: str) -> list[str]:
    settings = load_settings(root / "config.toml")
    sources = [s for s in find_event_files(settings.paths.schedules) if event_id in str(s)]
    return [str(p) for _, problems in check_events(settings, sources, now=NOW) for p in problems]


@pytest.mark.parametrize("text", [MISSING, ONLY_IN_ENGLISH], ids=["missing", "only-in-english"])
@pytest.mark.parametrize("pool_min", [1000, 3], ids=["read-here", "read-by-workers"])
async def test_a_new_event_check_refuses_is_not_planned_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, pool_min: int
):
    monkeypatch.setattr(reading, "POOL_MIN_EVENTS", pool_min)
    project(tmp_path)
    for number in range(3):
        write_event(tmp_path, f"forlabb-{number}")
    write_event(tmp_path, "broken", text)
    (problem,) = check_says(tmp_path, "broken")
    assert 'mail[1] "reminder".template: no template' in problem
    async with catalog_of(tmp_path) as catalog:
        await catalog.load_all()
    errors, states = stored(tmp_path)
    assert errors["broken"] == problem  # what `status` shows is what `check` says
    assert "broken" not in states and len(states) == 3
    assert not any(errors[f"forlabb-{number}"] for number in range(3))


@pytest.mark.parametrize("reload", [True, False], ids=["hot-reload", "restart"])
async def test_an_event_edited_to_name_a_missing_template_keeps_its_last_valid_version(
    tmp_path: Path, reload: bool
):
    project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    moved = MISSING.format(starts="2027-06-17T09:00:00", ends="2027-06-17T12:00:00")
    async with catalog_of(tmp_path) as catalog:
        await catalog.load_all()
        planned = stored(tmp_path)[1]
        source.write_text(moved)  # a day later, and a template that does not exist
        if reload:
            await catalog.sync([source], settle_s=0.01)
            in_force = await catalog.event("forlabb")
    if not reload:
        async with catalog_of(tmp_path) as catalog:
            await catalog.load_all()
            in_force = await catalog.event("forlabb")
    errors, states = stored(tmp_path)
    assert 'no template "nonexistent"' in (errors["forlabb"] or "")
    assert states == planned  # nothing moved to the 17th, nothing cancelled
    assert in_force is not None and [m.template for m in in_force.mails] == [
        "invitation",
        "reminder",
    ]


BIG = 30_000
BIG_EVENT = """title = "Stort"
starts = 2099-06-16T09:00:00
[recipients]
file = "people.csv"
[[mail]]
name = "invitation"
send_at = 2099-05-0{day}T09:00:00
to = ["all"]
"""


async def test_re_planning_a_big_event_is_done_off_the_loop_and_kept_by_nobody(tmp_path: Path):
    """Issue 11.13: an edit of a big event re-plans it in threads, not on the event loop
    (which then stays free for due mail), and leaves nothing of it parsed in memory.

    Measured in CPU time, not in stalls: the CPU the loop's thread spent while the edit was
    re-planned, against the CPU the whole process spent, holds on a busy machine too."""
    project(tmp_path)
    people = "".join(f"p{i:06d}@example.org;Person {i}\n" for i in range(BIG))
    source = write_event(
        tmp_path, "stort", BIG_EVENT.format(day=1), people__csv="email;name\n" + people
    )
    async with catalog_of(tmp_path) as catalog:
        await catalog.load_all()
        source.write_text(BIG_EVENT.format(day=2))  # every delivery retimed
        loop_cpu, process_cpu = time.thread_time(), time.process_time()
        await catalog.sync([source], settle_s=0.01)
        loop_cpu, process_cpu = time.thread_time() - loop_cpu, time.process_time() - process_cpu
        assert catalog.events == {} and catalog.in_force == 1  # parsed again when mail is due
    errors, states = stored(tmp_path)
    assert errors == {"stort": None} and states == {"stort": ["scheduled"] * BIG}
    assert loop_cpu < 0.2 * process_cpu, f"{loop_cpu:.2f} s of {process_cpu:.2f} s on the loop"


@pytest.mark.parametrize("reload", [True, False], ids=["hot-reload", "restart"])
async def test_a_deleted_file_put_back_as_it_was_is_planned_again(tmp_path: Path, reload: bool):
    """Its version is the one stored, but the deletion cancelled its deliveries: the digest
    alone must not say that the stored deliveries already follow it."""
    project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    text = source.read_text()
    async with catalog_of(tmp_path) as catalog:
        await catalog.load_all()
        planned = stored(tmp_path)[1]["forlabb"]
        source.unlink()
        await catalog.sync([source], settle_s=0.01)
        assert set(stored(tmp_path)[1]["forlabb"]) == {"cancelled"}
        source.write_text(text)
        if reload:
            await catalog.sync([source], settle_s=0.01)
    if not reload:
        async with catalog_of(tmp_path) as catalog:
            await catalog.load_all()
    assert stored(tmp_path)[1]["forlabb"] == planned == ["scheduled"] * len(planned)
    assert catalog.in_force == 1


async def test_a_start_saves_plans_in_batches_while_the_next_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Batches of about BATCH_DELIVERIES, one transaction each: every plan is saved, none
    twice, whichever batch it fell in (here each event's 4 deliveries fill a batch)."""
    monkeypatch.setattr(saving, "BATCH_DELIVERIES", 3)
    project(tmp_path)
    for number in range(5):
        write_event(tmp_path, f"forlabb-{number}")
    async with catalog_of(tmp_path) as catalog:
        await catalog.load_all()
        assert catalog.in_force == 5 and catalog.events == {}
    errors, states = stored(tmp_path)
    assert errors == {f"forlabb-{number}": None for number in range(5)}
    assert states == {f"forlabb-{number}": ["scheduled"] * 4 for number in range(5)}


async def test_an_event_parsed_when_due_is_the_version_planned_not_the_file_now(tmp_path: Path):
    """An edit the catalog has not brought in yet (the watcher settling, or down) is not sent:
    a due event is parsed from its texts in the database, the version that was planned. It
    was read from the folder, so the unplanned edit went out (found in review)."""
    project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    async with catalog_of(tmp_path) as catalog:
        await catalog.load_all()  # planned, and left unparsed until a mail is due
        planned_title = source.read_text().split('title = "', 1)[1].split('"', 1)[0]
        source.write_text(source.read_text().replace(planned_title, "Ändrad men inte inläst"))
        event = await catalog.event("forlabb")
    assert event is not None
    assert event.title == planned_title
