"""`mailer status`, table and --json, on a database holding every state a delivery can be in."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from mailer.cli import main
from mailer.config import load_settings
from mailer.delivery import DeliveryState as S
from mailer.plan import Wanted, plan_event
from mailer.store import Attempt, Node, Store, Version
from mailer.store.sqlite import SqliteStore
from tests.project import make_project

STATES = [s for s in S]
MAILS = json.dumps(
    [
        {"name": "invitation", "due": 1.9e9, "expires": 2.0e9, "to": ["all"]},
        {"name": "follow-up-lab", "due": 2.1e9, "expires": 2.2e9, "to": ["attended"]},
    ]
)


async def fill(database: Path) -> None:
    """One delivery per state, with the attempts and replies that lead there."""
    store = await Store.open(database)
    wanted = [
        Wanted("invitation", f"{s.value}@example.org", 1.0, 2.0e9, f"<{s.value}>") for s in STATES
    ]
    plan = plan_event("forlabb", wanted, [])  # a new event: nothing stored yet
    version = Version("forlabb", "schedules/forlabb.toml", "Förlabb", "d", "", None, MAILS, plan)
    await store.save_valid([version], now=0)
    claimed, _ = await store.claim_due(10.0, limit=len(STATES))
    by_key = {c.recipient: c for c in claimed}
    for state in STATES:
        delivery = by_key[f"{state.value}@example.org"]
        if state is S.SCHEDULED:
            await store.requeue(
                "forlabb", "invitation", states=[S.SENDING], now=5.0e9, recipient=delivery.recipient
            )
        elif state is not S.SENDING:
            await store.record(
                Attempt(
                    delivery.id, 20.0, "x", 451, f"451 {state.value}", state, 1, next_attempt=1.95e9
                )
            )
    await store.save_error(
        "forlabb",
        source="schedules/forlabb.toml",
        now=30,
        error='schedules/forlabb.toml: mail[0] "invitation".to: unknown group',
    )
    await store.close()


def test_status_shows_every_state_error_and_recipient(tmp_path: Path):
    config = make_project(tmp_path)
    asyncio.run(fill(load_settings(config).paths.database))
    runner = CliRunner()
    as_json = runner.invoke(main, ["status", "-c", str(config), "--json"])
    assert as_json.exit_code == 0, as_json.output
    (event,) = json.loads(as_json.output)["events"]
    assert event["id"] == "forlabb" and event["title"] == "Förlabb"
    assert event["error"].endswith("unknown group")
    invitation, follow_up = event["mails"]
    assert invitation["name"] == "invitation"
    assert invitation["due"] == "2030-03-17T18:46:40+01:00"  # ISO 8601, Stockholm offset
    assert invitation["counts"] == dict.fromkeys((s.value for s in STATES), 1)
    assert follow_up["counts"] == dict.fromkeys((s.value for s in STATES), 0)  # nobody yet

    detail = runner.invoke(main, ["status", "-c", str(config), "forlabb", "invitation", "--json"])
    deliveries = json.loads(detail.output)["events"][0]["mails"][0]["deliveries"]
    by_state = {d["state"]: d for d in deliveries}
    assert set(by_state) == {s.value for s in STATES}
    assert by_state["sent"]["sent_at"] is not None and by_state["sent"]["attempts"] == 1
    assert by_state["failed"]["last_reply"] == "451 failed"

    table = runner.invoke(main, ["status", "-c", str(config)])
    assert table.exit_code == 0
    assert "invalid; the last valid version is in force" in table.output
    assert "1 scheduled, 1 sending, 1 sent, 1 retrying, 1 failed, 1 cancelled, 1 expired" in (
        table.output
    )
    assert "nobody yet" in table.output


def test_an_event_never_valid_shows_its_error_and_no_empty_table(tmp_path: Path):
    config = make_project(tmp_path)
    asyncio.run(fill_invalid(load_settings(config).paths.database))
    table = CliRunner().invoke(main, ["status", "-c", str(config)])
    assert table.exit_code == 0, table.output
    assert "forlabb: schedules/forlabb.toml" in table.output
    assert 'invalid; not in force: schedules/forlabb.toml: mail[0] "invitation".to' in table.output
    assert "nothing is planned until the file is fixed" in table.output
    assert "┏" not in table.output and "+--" not in table.output  # no table with no rows


async def fill_invalid(database: Path) -> None:
    """An event whose file has been invalid since it first appeared: no version in force."""
    store = await Store.open(database)
    await store.save_error(
        "forlabb",
        source="schedules/forlabb.toml",
        now=30,
        error='schedules/forlabb.toml: mail[0] "invitation".to: unknown group',
    )
    await store.close()


async def fill_held(database: Path) -> None:
    """An event saved with `hold = true`: planned, nothing of it sent."""
    store = await Store.open(database)
    wanted = [Wanted("invitation", "anna@example.org", 1.0, 2.0e9, "<anna>")]
    plan = plan_event("forlabb", wanted, [])
    version = Version(
        "forlabb", "schedules/forlabb.toml", "Förlabb", "d", "", None, MAILS, plan, held=True
    )
    await store.save_valid([version], now=0)
    await store.close()


def test_a_held_event_is_shown_as_held_in_the_table_and_the_json(tmp_path: Path):
    config = make_project(tmp_path)
    asyncio.run(fill_held(load_settings(config).paths.database))
    runner = CliRunner()
    (event,) = json.loads(runner.invoke(main, ["status", "-c", str(config), "--json"]).output)[
        "events"
    ]
    assert event["held"] is True
    assert event["mails"][0]["counts"]["scheduled"] == 1
    table = runner.invoke(main, ["status", "-c", str(config)])
    assert "(held: hold = true, nothing is sent)" in table.output


async def beat(database: Path, node: Node, *, at: float, planner: bool) -> None:
    store = await SqliteStore.open(database, node=node)
    await store.beat(at, planner=planner)
    await store.close()


def test_status_lists_the_nodes_the_planner_and_a_node_not_heard_of(tmp_path: Path):
    config = make_project(tmp_path)
    database = load_settings(config).paths.database
    now = time.time()
    asyncio.run(beat(database, Node("gone.example.org", 11, "a"), at=now - 60, planner=True))
    asyncio.run(beat(database, Node("db1.example.org", 22, "b"), at=now - 2, planner=True))
    asyncio.run(beat(database, Node("db2.example.org", 33, "c"), at=now - 1, planner=False))
    runner = CliRunner()
    as_json = runner.invoke(main, ["status", "-c", str(config), "--json"])
    assert as_json.exit_code == 0, as_json.output
    nodes = json.loads(as_json.output)["nodes"]
    assert [(n["host"], n["pid"], n["planner"], n["live"]) for n in nodes] == [
        ("gone.example.org", 11, False, False),
        ("db1.example.org", 22, True, True),
        ("db2.example.org", 33, False, True),
    ]
    assert nodes[1]["id"] == "db1.example.org 22 b" and nodes[1]["last_seen"].startswith("20")
    table = runner.invoke(main, ["status", "-c", str(config)])
    assert table.exit_code == 0, table.output
    lines = {line.split()[1]: line for line in table.output.splitlines() if ".example.org" in line}
    assert "not seen" in lines["gone.example.org"] and "planner" in lines["db1.example.org"]
    assert "sends" in lines["db2.example.org"]


def test_status_loads_neither_templates_nor_holidays(tmp_path: Path):
    """An operator's script polls status: it reads settings and counts, so it must not pay
    for the planner's templates and rendering, nor for the holidays library (its default
    country needs no check)."""
    config = make_project(tmp_path)
    code = (
        "import sys, pathlib, mailer.status, mailer.config; "
        f"mailer.config.load_settings(pathlib.Path({str(config)!r})); "
        "heavy = ('jinja2', 'babel', 'mailer.render', 'mailer.plan', 'holidays'); "
        "loaded = [m for m in heavy if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
