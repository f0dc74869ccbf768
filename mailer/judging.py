"""Judging an event by its templates before any mail is rendered: languages with templates,
each mail's template found, compiled, with a subject and what it states it needs."""

from __future__ import annotations

import time
from pathlib import Path

from jinja2 import Template
from jinja2 import meta as jinja_meta
from jinja2.sandbox import ImmutableSandboxedEnvironment as Sandbox

from mailer.dates import is_date
from mailer.errors import InputError
from mailer.events import Event, Mail
from mailer.languages import is_served, no_templates, unserved_notes
from mailer.notices import NOTICES, notice_mail
from mailer.sandbox import loader
from mailer.subjects import Subjects, no_subject
from mailer.template_faults import report_faults
from mailer.template_needs import Facts, TemplateFacts, unmet_needs
from mailer.templates import TemplateFolder, files_in

# A template's facts are looked up again (its files found, resolved and stat-ed) once they
# are this old: a thousand events judged within a second, as at a cold start, share one
# look (it was a fifth of reading an event), and an edited template is seen a second later.
FACTS_FRESH_S = 1.0


class TemplateJudge:
    """What one templates folder tells of events and mails, for `check` and the service."""

    def __init__(self, folder: TemplateFolder, subjects: Subjects) -> None:
        self._folder = folder
        self._subjects = subjects
        self._facts = TemplateFacts(folder)
        # Template variants already found sound, with or without a subject block: checking a
        # thousand events that share four templates parses each file once, not once an event.
        self._sound: dict[tuple[Path, str], bool] = {}
        self._recent: dict[str, tuple[float, Facts]] = {}  # name: (when looked up, facts)

    def judge(self, event: Event) -> tuple[list[InputError], list[str]]:
        """What the templates tell of an event without rendering it, for `judge_event` (so
        for `check` and the service alike): each language it names has templates, each
        mail's template is found and has what it needs, and each free key a template
        formats as a date is one. The problems, and notes worth saying."""
        there = self._folder.languages()
        named = [("language", event.language)]
        named += [(f"{m.key}.language", m.language) for m in event.mails if m.language]
        problems = [
            InputError(no_templates(code, there), source=event.source, key=key)
            for key, code in named
            if not is_served(code, there)
        ]
        facts = {name: self._fresh_facts(name) for name in {m.template for m in event.mails}}
        for mail in event.mails:
            missing = self.find_template(event, mail)
            if missing:
                problems.append(missing)
            else:
                problems += unmet_needs(event, mail, facts[mail.template])
        notes = unserved_notes(event, there) + self._notice_notes(event)
        return problems + _text_dates(event, facts), notes

    def _fresh_facts(self, name: str) -> Facts:
        """The template's facts, looked up again if older than FACTS_FRESH_S."""
        now = time.monotonic()
        recent = self._recent.get(name)
        if recent is None or now - recent[0] > FACTS_FRESH_S:
            recent = self._recent[name] = (now, self._facts.facts(name))
        return recent[1]

    def _notice_notes(self, event: Event) -> list[str]:
        """A note for each notice (SPEC §10) the event may send whose template is nowhere:
        the notice would fail when its change settles, long after `check` said nothing."""
        if not event.notify_changes or not event.mails:
            return []
        kinds = NOTICES if any(m.calendar for m in event.mails) else NOTICES[1:]
        where = self._folder.show(self._folder.templates_dir)
        return [
            f'{event.source}: no "{kind}" template in {where}: if the event changes, its '
            f"{kind} emails cannot be written (mailer ships one in sv and en)"
            for kind in kinds
            if self.find_template(event, notice_mail(event, kind, changes=(), calendar=False))
        ]

    def find_template(self, event: Event, mail: Mail) -> InputError | None:
        """Why the mail's template is in no language it may go out in, or None if it is
        somewhere: an error of the event file (SPEC §4), judged as `check_mail` judges it
        first, and cheap enough for every file the service reads (nothing is compiled)."""
        try:
            self._folder.place(event, mail, None)
        except InputError as exc:
            return exc
        return None

    def language_error(self, code: str, *, source: Path, key: str) -> InputError | None:
        """Why no template can be in `code`, or None (`preview --language`)."""
        there = self._folder.languages()
        if is_served(code, there):
            return None
        return InputError(no_templates(code, there), source=source, key=key)

    def check_mail(self, event: Event, mail: Mail) -> list[InputError]:
        """Compiles the mail's templates, and the layouts they use, in every language folder."""
        try:
            folder, language = self._folder.place(event, mail, None)
            if mail.subject is not None:
                with report_faults(event, mail, "subject", show=self._folder.show):
                    self._subjects.compiled(self._folder.env(folder, language), mail.subject)
        except InputError as exc:
            return [exc]
        problems: list[InputError] = []
        for folder, language in self._folder.variants(mail.template):
            try:
                self._check_variant(self._folder.env(folder, language), folder, event, mail)
            except InputError as exc:
                problems.append(exc)
        return problems

    def _check_variant(self, env: Sandbox, folder: Path, event: Event, mail: Mail) -> None:
        """One folder's files compile, so do the layouts they name, and a subject is found."""
        if (folder, mail.template) not in self._sound:
            found: list[Template] = []
            with report_faults(event, mail, "template", show=self._folder.show):
                for _, name in files_in(folder, mail.template):
                    found.append(env.get_template(name))
                    source = loader(env).get_source(env, name)[0]
                    # A computed name (None here) is checked when a recipient's mail is rendered.
                    parsed = env.parse(source)
                    for used in filter(None, jinja_meta.find_referenced_templates(parsed)):
                        env.get_template(used)
            self._sound[folder, mail.template] = any("subject" in t.blocks for t in found)
        if mail.subject is None and not self._sound[folder, mail.template]:
            raise no_subject(event, mail)


def _text_dates(event: Event, facts: dict[str, Facts]) -> list[InputError]:
    """A free key some mail's template formats as a date, written as text: said once for
    the event, in its words, before any recipient's mail fails on it."""
    keys = dict.fromkeys(k for m in event.mails for k in facts[m.template].dated)
    return [
        InputError(
            f"write a date, 2027-10-14, not {_written(event.data[key])}: "
            "the templates format it as a date",
            source=event.source,
            key=key,
        )
        for key in keys
        if key in event.data and not is_date(event.data[key])
    ]


def _written(value: object) -> str:
    return f'text ("{value}")' if isinstance(value, str) else repr(value)
