"""The organisers' pages (SPEC §12) as aiohttp handlers: events, one event, one mail with
its recipients, a preview, the timeline. Each reads the store and the events in force and
renders one template; none changes anything (web.py lets only GET and HEAD through).

Recipients' addresses are personal data: the mail and preview pages answer only behind the
login, or to a browser on this machine (config_web refuses any other address without a
login; this check holds even behind a proxy on loopback that forwards from elsewhere only
if that proxy asks for the password).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import jinja2
from aiohttp import web

from mailer.config_web import WebSettings
from mailer.delivery import DeliveryState
from mailer.engine import Engine
from mailer.errors import MailerError
from mailer.events import Event, Mail
from mailer.rehearsal import timeline_of
from mailer.web_pages import views
from mailer.web_pages.preview import candidates, preview_for
from mailer.web_pages.words import choose_language, words_in

_ENGINE = web.AppKey("engine", Engine)
_WEB = web.AppKey("web", WebSettings)
# Autoescape everywhere: titles, names, subjects and replies come from organisers' files
# and from mail servers. StrictUndefined: a misspelt name fails the tests, not the page.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("mailer.web_pages", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def add_pages(app: web.Application, engine: Engine, settings: WebSettings) -> None:
    """The pages' routes on `app`, reading what `engine` holds."""
    app[_ENGINE] = engine
    app[_WEB] = settings
    app.router.add_get("/", events_page)
    app.router.add_get("/events/{event}", event_page)
    app.router.add_get("/events/{event}/timeline", timeline_page)
    app.router.add_get("/events/{event}/mails/{mail}", mail_page)
    app.router.add_get("/events/{event}/mails/{mail}/preview", preview_page)


def _render(request: web.Request, name: str, *, status: int = 200, **values: Any) -> web.Response:
    engine = request.app[_ENGINE]
    language = _language(request)
    html = _TEMPLATES.get_template(name).render(
        lang=language, t=words_in(language), zone=engine.settings.sender.timezone, **values
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _language(request: web.Request) -> str:
    default = request.app[_ENGINE].settings.sender.language
    return choose_language(request.headers.get("Accept-Language", ""), default=default)


def _not_found(request: web.Request, what: str) -> web.Response:
    return _render(request, "not_found.html", status=404, what=what)


def _may_see_people(request: web.Request) -> bool:
    """Behind the login (checked by web.py's middleware before any page), or on loopback."""
    if request.app[_WEB].username is not None:
        return True
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def events_page(request: web.Request) -> web.Response:
    engine = request.app[_ENGINE]
    language = _language(request)
    lines = await views.event_lines(
        engine.store, zone=engine.settings.sender.zone, language=language
    )
    return _render(request, "events.html", events=lines)


async def event_page(request: web.Request) -> web.Response:
    engine, event_id = request.app[_ENGINE], request.match_info["event"]
    row = (await engine.store.events()).get(event_id)
    if row is None:
        return _not_found(request, event_id)
    event = await engine.catalog.event(event_id) if row.digest is not None else None
    zone = event.timezone if event is not None else engine.settings.sender.zone
    mails = await views.mail_lines(
        engine.store, event_id, row.mails, zone=zone, language=_language(request)
    )
    return _render(request, "event.html", row=row, event=event, mails=mails, event_zone=zone.key)


async def timeline_page(request: web.Request) -> web.Response:
    engine, event_id = request.app[_ENGINE], request.match_info["event"]
    event = await engine.catalog.event(event_id)
    if event is None:
        return _not_found(request, event_id)
    counts = {c.mail: c.counts for c in await engine.store.mail_counts(event_id)}
    timeline = timeline_of(event, engine.outbox.renderer, counts)
    language = _language(request)
    lines = [(views.when(m.due, event.timezone, language), m) for m in timeline]
    return _render(
        request, "timeline.html", event=event, lines=lines, event_zone=event.timezone.key
    )


async def mail_page(request: web.Request) -> web.Response:
    if not _may_see_people(request):
        return _render(request, "hidden.html", status=403)
    engine = request.app[_ENGINE]
    event_id, name = request.match_info["event"], request.match_info["mail"]
    rows = await engine.store.deliveries_of(event_id, name)
    event = await engine.catalog.event(event_id)
    mail = _mail_of(event, name)
    if not rows and mail is None:
        return _not_found(request, f"{event_id} / {name}")
    counts = {str(s): n for s in DeliveryState if (n := sum(r.state == s for r in rows))}
    state = request.query.get("state", "")
    shown = [r for r in rows if r.state == state] if state in counts else rows
    zone = event.timezone if event is not None else engine.settings.sender.zone
    people = views.person_lines(shown, event, zone=zone, language=_language(request))
    return _render(
        request,
        "mail.html",
        event_id=event_id,
        title=event.title if event is not None else event_id,
        mail=name,
        previewable=mail is not None,
        counts=counts,
        state=state if state in counts else "",
        total=len(rows),
        people=people,
        event_zone=zone.key,
    )


async def preview_page(request: web.Request) -> web.Response:
    if not _may_see_people(request):
        return _render(request, "hidden.html", status=403)
    engine = request.app[_ENGINE]
    event_id, name = request.match_info["event"], request.match_info["mail"]
    event = await engine.catalog.event(event_id)
    mail = _mail_of(event, name)
    if event is None or mail is None:
        return _not_found(request, f"{event_id} / {name}")
    people = candidates(event, mail)
    wanted = request.query.get("to", "").strip().lower()
    chosen = next((p for p in people if p.key == wanted), people[0] if people else None)
    if chosen is None or (wanted and chosen.key != wanted):
        return _not_found(request, f"{event_id} / {name} / {wanted}")
    values: dict[str, Any] = {"event": event, "mail": name, "people": people, "chosen": chosen}
    try:
        shown = await preview_for(engine.outbox, event, mail, chosen, now=engine.clock.now())
    except MailerError as exc:  # as sending would fail for this person: said, not a 500
        return _render(request, "preview.html", preview=None, problem=str(exc), **values)
    return _render(request, "preview.html", preview=shown, problem=None, **values)


def _mail_of(event: Event | None, name: str) -> Mail | None:
    return next((m for m in event.mails if m.name == name), None) if event else None
