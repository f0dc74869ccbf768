"""Jinja2 templates -> the subject, text and HTML of one mail for one recipient, in their language.

Where templates are found and in which language: templates.py. Context (templates and
organisers rely on these names):
  event      every free key of the event file, plus id, title, starts, ends (aware datetimes
             in the event's zone), timezone (str), language, location, organiser ({name,
             email} or None), description (str or None), program (list of dicts: usually
             `at` and `title`, maybe `speaker`, `description`); the keys of
             `[text.<lang>]` replace these for the language the mail is rendered in
  recipient  every CSV column / inline key, plus address, email (the same), name ("" if
             none), language (theirs, or None), groups (sorted list)
  mail       name, template, due, expires (aware datetimes), attachments (file names),
             calendar (bool), language (the one chosen)
  lang       the language chosen
  subject    the rendered subject, for the body (the HTML <title>)
Filters: date, time, datetime, span(end), shortdate (babel, in the chosen language, each
datetime in its own zone; a language without a DateStyle is formatted in English), and
paragraphs (free text -> its paragraphs, split on blank lines): see sandbox.py.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer.errors import InputError
from mailer.events import Event, Mail, Recipient
from mailer.judging import TemplateJudge
from mailer.mail_macros import MailCache, MailSandbox
from mailer.plaintext import html_to_text
from mailer.subjects import Subjects
from mailer.template_faults import join_bounded, report_faults
from mailer.templates import TemplateFolder, files_in

# Mails whose mail-level macros (mail_macros.py) are kept rendered: a worker renders one
# mail to all its recipients before the next, and holds EVENTS_HELD (16) events.
MAILS_CACHED = 16


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None
    language: str  # the language actually used
    # Text and HTML as their MIME parts, when encoded where they were rendered (a worker:
    # message.with_parts), sparing the service's one event loop that work per message.
    parts: tuple[bytes, bytes | None] | None = field(default=None, compare=False, repr=False)


def build_context(event: Event, mail: Mail, recipient: Recipient, language: str) -> dict[str, Any]:
    """The variables every template sees (see the module docstring)."""
    organiser = event.organiser
    return {
        "event": {
            **event.data,
            "id": event.id,
            "title": event.title,
            "starts": event.starts,
            "ends": event.ends,
            "timezone": event.timezone.key,
            "language": event.language,
            "location": event.location,
            "description": event.description,
            "organiser": {"name": organiser.name, "email": organiser.email} if organiser else None,
            "program": [dict(item) for item in event.program],
        },
        "recipient": {
            **recipient.fields,
            "address": recipient.address,
            "email": recipient.address,
            "name": recipient.name or "",
            "language": recipient.language,
            "groups": sorted(recipient.groups),
        },
        "mail": {
            "name": mail.name,
            "template": mail.template,
            "due": mail.due,
            "expires": mail.expires,
            "attachments": [path.name for path in mail.attach],
            "calendar": mail.calendar,
            "language": language,
        },
        "lang": language,
        "changes": [dict(change) for change in mail.changes],
    }


class Renderer:
    """Renders mails from one templates folder, and judges events by its templates."""

    def __init__(self, templates_dir: Path, *, default_language: str) -> None:
        self._folder = TemplateFolder(templates_dir, default_language=default_language)
        # Told which part is being rendered ("subject", "html", "txt"), so that whoever stops
        # a rendering that overran its time can say which file did.
        self.on_part: Callable[[str], None] = _ignore
        self._subjects = Subjects(show=self._folder.show)
        self._judge = TemplateJudge(self._folder, self._subjects)
        # By (event, mail, language) as the objects given: a worker holds each event version
        # as one object, and a mail of it is one of its `mails` (mail_macros.py).
        self._caches: OrderedDict[tuple[int, int, str], tuple[Event, Mail, MailCache]] = (
            OrderedDict()
        )

    @property
    def templates_dir(self) -> Path:
        return self._folder.templates_dir

    @property
    def default_language(self) -> str:
        return self._folder.default_language

    def language_for(self, event: Event, mail: Mail, recipient: Recipient) -> str:
        """The first language of recipient, mail, event, default that has the template."""
        return self._folder.place(event, mail, recipient.language)[1]

    def template_files(
        self, event: Event, mail: Mail, recipient: Recipient
    ) -> list[tuple[str, str]]:
        """(kind, file as the operator knows it) of the templates the recipient's mail uses."""
        folder, _ = self._folder.place(event, mail, recipient.language)
        show = self._folder.show
        return [(kind, show(folder / name)) for kind, name in files_in(folder, mail.template)]

    def render_mail(self, event: Event, mail: Mail, recipient: Recipient) -> Rendered:
        """Subject, text and HTML for one recipient; any template fault is an InputError."""
        folder, language = self._folder.place(event, mail, recipient.language)
        env = self._folder.env(folder, language)
        with env.caching(self._cache_of(event, mail, language)):
            return self._render(env, folder, language, event, mail, recipient)

    def _render(
        self,
        env: MailSandbox,
        folder: Path,
        language: str,
        event: Event,
        mail: Mail,
        recipient: Recipient,
    ) -> Rendered:
        event = event.in_language(language)  # its [text.<lang>], if it has them
        context = build_context(event, mail, recipient, language)
        show = self._folder.show
        with report_faults(event, mail, "template", recipient.address, show=show):
            found = {kind: env.get_template(name) for kind, name in files_in(folder, mail.template)}
        context["subject"] = self._subjects.render(
            env, found, context, event=event, mail=mail, on_part=self.on_part
        )
        parts: dict[str, str] = {}
        with report_faults(event, mail, "template", recipient.address, show=show):
            for kind, template in found.items():
                self.on_part(kind)
                parts[kind] = join_bounded(template.generate(context), template.filename, show=show)
        html, text = parts.get("html"), parts.get("txt")
        text = _tidy(text) if text is not None else html_to_text(html or "")
        return Rendered(context["subject"], text, html, language)

    def _cache_of(self, event: Event, mail: Mail, language: str) -> MailCache:
        """The renders every recipient of this mail in this language shares; the least
        recently used mail's are dropped beyond MAILS_CACHED (held, so no id is reused)."""
        key = (id(event), id(mail), language)
        held = self._caches.get(key)
        if held is None or held[0] is not event or held[1] is not mail:
            held = self._caches[key] = (event, mail, {})
        self._caches.move_to_end(key)
        while len(self._caches) > MAILS_CACHED:
            self._caches.popitem(last=False)
        return held[2]

    def find_template(self, event: Event, mail: Mail) -> InputError | None:
        """Why the mail's template is in no language it may go out in (judging.py)."""
        return self._judge.find_template(event, mail)

    def judge(self, event: Event) -> tuple[list[InputError], list[str]]:
        """The problems the templates find in an event, and notes worth saying (judging.py)."""
        return self._judge.judge(event)

    def languages(self) -> list[str]:
        """The languages there are templates in."""
        return self._folder.languages()

    def language_error(self, code: str, *, source: Path, key: str) -> InputError | None:
        """Why no template can be in `code`, or None (`preview --language`)."""
        return self._judge.language_error(code, source=source, key=key)

    def check_mail(self, event: Event, mail: Mail) -> list[InputError]:
        """Compiles the mail's templates, and the layouts they use, in every language folder."""
        return self._judge.check_mail(event, mail)


def _tidy(text: str) -> str:
    """At most one blank line in a row and one newline at the end: text templates stay readable."""
    return re.sub(r"\n{3,}", "\n\n", text.strip("\n")) + "\n"


def _ignore(part: str) -> None:
    """The default `on_part`: nobody is watching."""
