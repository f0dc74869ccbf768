"""The organisers' pages (SPEC §12) over real HTTP: the running service's server on
127.0.0.1 and a free port, a real SQLite file, the real templates. Every page in both
languages, escaping of hostile names and subjects, no request changing anything, recipients
only behind the login or on loopback."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from mailer.clock import ManualClock
from mailer.config_web import WebSettings
from mailer.engine import Engine
from mailer.metrics import Metrics
from mailer.store import Bounce
from mailer.web import SECURITY_HEADERS, make_app
from mailer.web_pages import add_pages
from mailer.web_pages.words import WORDS, choose_language
from tests.project import EVENT, make_project, write_event
from tests.test_engine import INVITATION_DUE, engine_at
from tests.test_web import BROKEN, basic, free_port, get, page, table_dump

SV = {"Accept-Language": "sv-SE,sv;q=0.9,en;q=0.5"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}
HOSTILE = "<script>alert('x')</script>"
EVERY_PAGE = (
    "/",
    "/events/forlabb",
    "/events/forlabb/timeline",
    "/events/forlabb/mails/invitation",
    "/events/forlabb/mails/invitation?state=sent",
    "/events/forlabb/mails/reminder",
    "/events/forlabb/mails/invitation/preview",
    "/events/forlabb/mails/invitation/preview?to=BJORN@example.org",
    "/events/trasig",
)


def project(tmp_path: Path, event: str = EVENT) -> Path:
    make_project(tmp_path)
    write_event(tmp_path, "forlabb", event)
    write_event(tmp_path, "trasig", BROKEN)
    return tmp_path


@pytest.mark.parametrize(
    ("header", "default", "chosen"),
    [
        ("sv-SE,sv;q=0.9,en;q=0.8", "en", "sv"),
        ("en-US,en;q=0.9", "sv", "en"),
        ("de-DE,de;q=0.9,en;q=0.5,sv;q=0.4", "sv", "en"),  # the first of ours it accepts
        ("sv;q=0.2,en;q=0.8", "sv", "en"),  # by quality, not by order
        ("en;q=0,sv", "en", "sv"),  # q=0: not acceptable
        ("de, fr", "en", "en"),  # none of ours: the sender's language
        ("", "de", "sv"),  # nor that: Swedish
        ("en;q=nonsense,sv", "en", "sv"),
    ],
)
def test_the_language_is_the_browsers_first_of_ours(header: str, default: str, chosen: str):
    assert choose_language(header, default=default) == chosen


def test_every_phrase_has_both_languages():
    assert all(len(pair) == 2 and all(pair) for pair in WORDS.values())


async def test_every_page_answers_in_swedish_and_english(tmp_path: Path):
    async with engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine:
        await engine.step()  # the invitation goes to both
        async with page(engine) as base:
            swedish = {path: await get(base + path, headers=SV) for path in EVERY_PAGE}
            english = {path: await get(base + path, headers=EN) for path in EVERY_PAGE}
    for path in EVERY_PAGE:
        assert swedish[path][0] == english[path][0] == 200, path
        assert swedish[path][1]["Content-Type"] == "text/html; charset=utf-8"
        assert '<html lang="sv">' in swedish[path][2] and '<html lang="en">' in english[path][2]
    events = swedish["/"][2]
    assert "Förlabb: Skolnärvaro" in events and "skickat 2" in events and "planerat 2" in events
    assert "Nästa utskick" in events and "mån 14 juni 2027 09:00" in events  # the reminder
    assert "trasig.toml: mail[0].name: required" in events  # the broken file, with its key
    assert "Filen har aldrig varit giltig" in events
    assert "Next mail due" in english["/"][2] and "Mon 14 Jun 2027 09:00" in english["/"][2]
    event = text_of(english["/events/forlabb"][2])
    assert "invitation" in event and "Wed 26 May 2027 09:00" in event and "sent 2" in event
    assert "registered" in event and "Times in Europe/Stockholm" in event
    mail = english["/events/forlabb/mails/invitation"][2]
    assert "anna@example.org" in mail and "Anna Andersson" in mail and "Björn Östlund" in mail
    reminder = english["/events/forlabb/mails/reminder"][2]
    assert "scheduled 2" in reminder and 'class="state sent"' not in reminder
    preview = english["/events/forlabb/mails/invitation/preview?to=BJORN@example.org"][2]
    assert "Björn Östlund &lt;bjorn@example.org&gt;" in preview
    assert re.search(r"<iframe sandbox srcdoc=\"[^\"]*Björn", preview)
    assert "forlabb.ics" in preview and "text/calendar" in preview  # attachments with sizes
    assert re.search(r"forlabb\.ics <span class=\"muted\">\(text/calendar, \d+ Bytes\)", preview)
    assert "Subject" in preview and "Förlabb" in preview
    timeline = english["/events/forlabb/timeline"][2]
    assert "invitation" in timeline and "reminder" in timeline and "sv 1, en 1" in timeline


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_the_state_filter_shows_only_that_state(tmp_path: Path):
    async with engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine:
        await engine.step()
        async with page(engine) as base:
            sent = (await get(base + "/events/forlabb/mails/invitation?state=sent", headers=EN))[2]
            failed = await get(base + "/events/forlabb/mails/invitation?state=failed", headers=EN)
    assert sent.count('<span class="state sent">') == 2
    assert failed[0] == 200 and failed[2].count('<span class="state sent">') == 2  # no such: all


async def test_a_bounced_delivery_shows_its_state_and_diagnostic(tmp_path: Path):
    async with engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine:
        await engine.step()
        with sqlite3.connect(tmp_path / "var" / "mailer.sqlite3") as db:
            (delivery,) = db.execute(
                "SELECT id FROM deliveries WHERE recipient = 'anna@example.org' "
                "AND mail = 'invitation'"
            ).fetchone()
        diagnostic = "5.1.1 host mx.example.org said: 550 5.1.1 User unknown"
        await engine.store.record_bounce(Bounce("<n@relay>", delivery, 1.0, "5.1.1", diagnostic))
        async with page(engine) as base:
            swedish = (await get(base + "/events/forlabb/mails/invitation", headers=SV))[2]
            events = (await get(base + "/", headers=EN))[2]
    assert 'class="state bounced"' in swedish and "studsat" in swedish
    assert "User unknown" in swedish
    assert "bounced 1" in text_of(events)


async def test_what_does_not_exist_is_404(tmp_path: Path):
    async with (
        engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine,
        page(engine) as base,
    ):
        for path in (
            "/events/nosuch",
            "/events/nosuch/timeline",
            "/events/forlabb/mails/nosuch",
            "/events/forlabb/mails/nosuch/preview",
            "/events/forlabb/mails/reminder/preview?to=nobody@example.org",
        ):
            status, headers, text = await get(base + path, headers=SV)
            assert status == 404 and "<h1>Finns inte</h1>" in text, path
            assert headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]


HOSTILE_EVENT = (
    EVENT.replace('title = "Förlabb: Skolnärvaro"', f'title = "{HOSTILE} & co"')
    .replace('name = "Anna Andersson"', 'name = "<img src=x onerror=alert(1)>"')
    .replace(
        'name = "invitation"',
        'name = "invitation"\nsubject = "Hej <b>{{{{ recipient.name }}}}</b>"',
    )
)


async def test_hostile_names_and_subjects_are_escaped(tmp_path: Path):
    clock = ManualClock(INVITATION_DUE)
    async with engine_at(project(tmp_path, HOSTILE_EVENT), clock) as engine:
        await engine.step()
        async with page(engine) as base:
            pages = [(await get(base + path, headers=EN))[2] for path in EVERY_PAGE[:-1]]
            anna = "/events/forlabb/mails/invitation/preview?to=anna@example.org"
            pages.append((await get(base + anna, headers=EN))[2])
    for html in pages:
        assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in pages[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[3]
    assert "Hej &lt;b&gt;&lt;img src=x onerror=alert(1)&gt;&lt;/b&gt;" in pages[-1]  # subject


async def test_no_request_changes_anything(tmp_path: Path):
    database = tmp_path / "var" / "mailer.sqlite3"
    async with engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine:
        await engine.step()
        before = table_dump(database), attempts(database), files_under(tmp_path)
        async with page(engine) as base:
            for path in EVERY_PAGE:
                for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
                    status, headers, _ = await get(base + path, method)
                    assert status == (200 if method in ("GET", "HEAD") else 405), (path, method)
                    assert headers["X-Frame-Options"] == "DENY"
        assert (table_dump(database), attempts(database), files_under(tmp_path)) == before


def attempts(database: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT * FROM attempts ORDER BY id").fetchall()


def files_under(root: Path) -> list[str]:
    """Every file but the database's own (SQLite's WAL and shm change on a read)."""
    return sorted(str(p) for p in root.rglob("*") if "mailer.sqlite3" not in p.name)


@asynccontextmanager
async def seen_from(engine: Engine, web_settings: WebSettings) -> AsyncIterator[str]:
    """The real app, each request seen as coming from the address in X-Test-Remote: a
    browser elsewhere, which a test on 127.0.0.1 cannot be."""

    @web.middleware
    async def elsewhere(request: web.Request, handler):  # type: ignore[no-untyped-def]
        return await handler(request.clone(remote=request.headers["X-Test-Remote"]))

    metrics = Metrics(engine.store, now=engine.now, attempts=engine.sender.attempts_made)
    app = make_app(web_settings, store=engine.store, metrics=metrics)
    app.middlewares.append(elsewhere)
    add_pages(app, engine, web_settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, web_settings.host, web_settings.port).start()
        yield f"http://{web_settings.listen}"
    finally:
        await runner.cleanup()


async def test_recipients_are_shown_only_on_loopback_or_behind_the_login(tmp_path: Path):
    open_web = WebSettings(listen=f"127.0.0.1:{free_port()}")
    login = WebSettings(
        listen=f"127.0.0.1:{free_port()}",
        username="arr",
        password_env="MAILER_WEB_PASSWORD",
        password=SecretStr("hemligt"),
    )
    people = ("/events/forlabb/mails/invitation", "/events/forlabb/mails/invitation/preview")
    async with engine_at(project(tmp_path), ManualClock(INVITATION_DUE)) as engine:
        async with seen_from(engine, open_web) as base:
            far = {"X-Test-Remote": "192.0.2.7", **EN}
            near = {"X-Test-Remote": "::1", **EN}
            for path in people:
                status, _, text = await get(base + path, headers=far)
                assert status == 403 and "anna@example.org" not in text
                assert "shown only behind the password or on this machine" in text
                assert (await get(base + path, headers=near))[0] == 200
            assert (await get(base + "/events/forlabb", headers=far))[0] == 200  # counts only
        async with seen_from(engine, login) as base:
            far_in = {"X-Test-Remote": "192.0.2.7", **basic("arr", "hemligt")}
            for path in people:
                status, _, text = await get(base + path, headers=far_in)
                assert status == 200 and "anna@example.org" in text
