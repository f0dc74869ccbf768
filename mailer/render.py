"""Jinja2 templates -> the subject, text and HTML of one mail for one recipient, in their language.

Templates: `templates/<lang>/<name>.{txt,html}.j2`, or language-neutral in `templates/`
(taken to be in the default language). The language is the recipient's, else the mail's,
the event's, the default: the first that has the template.

Context (templates and organisers rely on these names):
  event      every free key of the event file, plus id, title, starts, ends (aware datetimes
             in the event's zone), timezone (str), language, location, organiser ({name,
             email} or None), description (str or None), program (list of dicts: usually
             `at` and `title`, maybe `speaker`, `description`)
  recipient  every CSV column / inline key, plus address, email (the same), name ("" if
             none), language (theirs, or None), groups (sorted list)
  mail       name, template, due, expires (aware datetimes), attachments (file names),
             calendar (bool), language (the one chosen)
  lang       the language chosen
  subject    the rendered subject, for the body (the HTML <title>)
Filters: date, time, datetime, span(end), shortdate (babel, in the chosen language, each
datetime in its own zone; a language without a DateStyle is formatted in English), and
paragraphs (free text -> its paragraphs, split on blank lines).
"""

from __future__ import annotations

import functools
import os
import re
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateError,
    nodes,
    select_autoescape,
)
from jinja2 import meta as jinja_meta
from jinja2.exceptions import TemplateNotFound, TemplateSyntaxError
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment as Sandbox
from markupsafe import Markup

from mailer.dates import STYLES, is_date
from mailer.errors import InputError
from mailer.events import Event, Mail, Recipient
from mailer.plaintext import html_to_text

# The subject block is taken from the first kind that has one: the text one needs no unescaping.
KINDS = ("txt", "html")
# Language codes name folders: the pattern keeps a CSV value from reaching outside templates/.
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
# Everything str.splitlines() breaks on: in a header, any of them would split it.
_LINE_BREAK = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
# Mail clients show a subject's first ~100 characters; a longer one is a pasted text, and
# folding it into a header costs ~0.1 ms per non-ASCII character, per recipient.
MAX_SUBJECT_CHARS = 1000
# Each part of a mail (subject, HTML, text) may be this long: a generous newsletter is ~100 KB.
# Output beyond it is a template gone wrong (a loop printing for ever), stopped as it streams,
# before it fills memory or a 300 MB message reaches the relay. Counted in characters, which
# never outnumber the bytes they encode to, so "more than 5 MB" is true when it is said.
MAX_PART_CHARS = 5_000_000
# Anything a template raises is the organiser's to fix, not the service's: 1/0, a bad method
# call, a macro calling itself (RecursionError), "x" * 10**12 (MemoryError), a link refused.
_TEMPLATE_FAULTS = (Exception,)


# What a template may say it needs, in a comment of its own: `{# needs: attachment #}`;
# `{# needs: attachment or event.report_url, calendar #}`: each item met one way or another.
# Each word: what to write in the event file, and whether the mail has it.
NEEDS: dict[str, tuple[str, Callable[[Event, Mail], bool]]] = {
    "attachment": ('an attachment (attach = ["rapport.pdf"])', lambda _, mail: bool(mail.attach)),
    "calendar": ("a calendar (calendar = true)", lambda _, mail: mail.calendar),
}
_NEEDS = re.compile(r"\s*needs\s*:(.*)", re.DOTALL)
_EVENT_NEED = re.compile(r"event\.([A-Za-z_][A-Za-z0-9_]*)")
# Keys with a meaning an `event.<key>` need may name (the free ones are in event.data).
_EVENT_FIELDS = ("title", "location", "organiser", "description", "program")
# Filters that take a date or datetime (`time` writes a text as it is).
DATE_FILTERS = frozenset(("date", "datetime", "shortdate", "span"))


class TooMuchOutput(TemplateError):
    """A part of the mail grew beyond MAX_PART_CHARS while it was rendered."""


class OutsideTemplates(TemplateError):
    """A template file that is a link (or in a linked folder) leading out of templates/."""


@dataclass(frozen=True)
class Facts:
    """What the files of one template say without being rendered: the needs they state,
    and the free `event` keys they format as dates (key -> where, for the message)."""

    needs: frozenset[tuple[str, ...]] = frozenset()  # each met by one of its words
    unknown: tuple[str, ...] = ()  # needs nobody knows, each "file: needs: unknown …"
    dated: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None
    language: str  # the language actually used


def paragraphs(text: str) -> list[str]:
    """Paragraphs of free text split on blank lines, as an organiser writes a description."""
    return [part.strip() for part in re.split(r"\n[ \t]*\n", str(text)) if part.strip()]


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
    }


class Renderer:
    """Renders mails from one templates folder, keeping one sandboxed environment per folder.

    Jinja caches compiled templates and recompiles a file that changed; which files exist
    is looked up for every mail, so an edited or added template works without a restart.
    """

    def __init__(self, templates_dir: Path, *, default_language: str) -> None:
        self._dir = Path(templates_dir)
        self._root = self._dir.resolve()
        # Told which part is being rendered ("subject", "html", "txt"), so that whoever stops
        # a rendering that overran its time can say which file did.
        self.on_part: Callable[[str], None] = _ignore
        self._default = (_chain(default_language) or ["en"])[0]
        self._envs: dict[Path, Sandbox] = {}
        self._subjects: dict[tuple[Sandbox, str], Template] = {}  # compiled mail.subject
        # Template variants already found sound, with or without a subject block: checking a
        # thousand events that share four templates parses each file once, not once an event.
        self._sound: dict[tuple[Path, str], bool] = {}
        # Each template file's Facts and the files it uses, by name and identity (see _unchanged).
        self._read: dict[tuple[str, object], tuple[Facts, list[str]]] = {}

    def language_for(self, event: Event, mail: Mail, recipient: Recipient) -> str:
        """The first language of recipient, mail, event, default that has the template."""
        return self._place(event, mail, recipient.language)[1]

    @property
    def templates_dir(self) -> Path:
        return self._dir

    @property
    def default_language(self) -> str:
        return self._default

    def template_files(
        self, event: Event, mail: Mail, recipient: Recipient
    ) -> list[tuple[str, str]]:
        """(kind, file as the operator knows it) of the templates the recipient's mail uses."""
        folder, _ = self._place(event, mail, recipient.language)
        return [(kind, self._show(folder / name)) for kind, name in _files(folder, mail.template)]

    def render_mail(self, event: Event, mail: Mail, recipient: Recipient) -> Rendered:
        """Subject, text and HTML for one recipient; any template fault is an InputError."""
        folder, language = self._place(event, mail, recipient.language)
        env = self._env(folder, language)
        context = build_context(event, mail, recipient, language)
        with self._faults(event, mail, "template", recipient.address):
            found = {kind: env.get_template(name) for kind, name in _files(folder, mail.template)}
        context["subject"] = self._subject(env, found, context, event, mail)
        parts: dict[str, str] = {}
        with self._faults(event, mail, "template", recipient.address):
            for kind, template in found.items():
                self.on_part(kind)
                parts[kind] = self._bounded(template.generate(context), template.filename)
        html, text = parts.get("html"), parts.get("txt")
        text = _tidy(text) if text is not None else html_to_text(html or "")
        return Rendered(context["subject"], text, html, language)

    def find_template(self, event: Event, mail: Mail) -> InputError | None:
        """Why the mail's template is in no language it may go out in, or None if it is
        somewhere: an error of the event file (SPEC §4), judged as `check_mail` judges it
        first, and cheap enough for every file the service reads (nothing is compiled)."""
        try:
            self._place(event, mail, None)
        except InputError as exc:
            return exc
        return None

    def judge(self, event: Event) -> tuple[list[InputError], list[str]]:
        """What the templates tell of an event without rendering it, for `judge_event` (so
        for `check` and the service alike): each language it names has templates, each
        mail's template is found and has what it needs, and each free key a template
        formats as a date is one. The problems, and notes worth saying."""
        there = self.languages()
        named = [("language", event.language)]
        named += [(f"{m.key}.language", m.language) for m in event.mails if m.language]
        problems = [
            InputError(_no_templates(code, there), source=event.source, key=key)
            for key, code in named
            if not _served(code, there)
        ]
        for mail in event.mails:
            missing = self.find_template(event, mail)
            problems += [missing] if missing else self._unmet_needs(event, mail)
        return problems + self._text_dates(event), _unserved(event, there)

    def languages(self) -> list[str]:
        """The languages there are templates in: the folders of templates/, and the default
        language if templates/ itself holds (language-neutral) templates."""
        try:
            found = {p.name for p in self._dir.iterdir() if _LANGUAGE.fullmatch(p.name)}
            found.update([self._default] if any(self._dir.glob("*.j2")) else [])
        except OSError:
            return []
        return sorted(found)

    def language_error(self, code: str, *, source: Path, key: str) -> InputError | None:
        """Why no template can be in `code`, or None (`preview --language`)."""
        there = self.languages()
        return (
            None
            if _served(code, there)
            else InputError(_no_templates(code, there), source=source, key=key)
        )

    def _unmet_needs(self, event: Event, mail: Mail) -> list[InputError]:
        """A `{# needs: … #}` the template states and the mail does not meet, or misspells."""
        facts = self._facts(mail.template)
        key = f"{mail.key}.template"
        problems = [InputError(u, source=event.source, key=key) for u in facts.unknown]
        for need in sorted(facts.needs):
            if not any(_has(event, mail, word) for word in need):
                what = " or ".join(map(_described, need))
                none = "none" if len(need) == 1 else "none of these"
                message = f'the template "{mail.template}" needs {what}; this mail has {none}'
                problems.append(InputError(message, source=event.source, key=mail.key))
        return problems

    def _text_dates(self, event: Event) -> list[InputError]:
        """A free key some mail's template formats as a date, written as text: said once for
        the event, in its words, before any recipient's mail fails on it."""
        keys = dict.fromkeys(k for m in event.mails for k in self._facts(m.template).dated)
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

    def _facts(self, name: str) -> Facts:
        """What the template's files, in every language, and the layouts they use state."""
        found: list[Facts] = []
        for folder, language in self._variants(name):
            env, seen = self._env(folder, language), set[str]()
            for _, file in _files(folder, name):
                found += self._file_facts(env, file, seen)
        return Facts(
            frozenset().union(*(f.needs for f in found)),
            tuple(dict.fromkeys(u for f in found for u in f.unknown)),
            tuple(dict.fromkeys(k for f in found for k in f.dated)),
        )

    def _file_facts(self, env: Sandbox, name: str, seen: set[str]) -> list[Facts]:
        """One file's facts and those of the files it extends, includes or imports; each
        file is parsed once while it stays as it is."""
        if name in seen:
            return []
        seen.add(name)
        try:
            text, filename, _ = _loader(env).get_source(env, name)
            cached = (filename, _identity(Path(filename)))
            if cached not in self._read:
                self._read[cached] = _read_facts(env, text, self._show(filename))
        except (TemplateError, OSError, UnicodeDecodeError):
            return []  # check_mail and the rendering say what is wrong with the file
        facts, used = self._read[cached]
        return [facts, *(f for ref in used for f in self._file_facts(env, ref, seen))]

    def check_mail(self, event: Event, mail: Mail) -> list[InputError]:
        """Compiles the mail's templates, and the layouts they use, in every language folder."""
        try:
            folder, language = self._place(event, mail, None)
            if mail.subject is not None:
                with self._faults(event, mail, "subject"):
                    self._compiled_subject(self._env(folder, language), mail.subject)
        except InputError as exc:
            return [exc]
        problems: list[InputError] = []
        for folder, language in self._variants(mail.template):
            try:
                self._check_variant(self._env(folder, language), folder, event, mail)
            except InputError as exc:
                problems.append(exc)
        return problems

    def _check_variant(self, env: Sandbox, folder: Path, event: Event, mail: Mail) -> None:
        """One folder's files compile, so do the layouts they name, and a subject is found."""
        if (folder, mail.template) not in self._sound:
            found: list[Template] = []
            with self._faults(event, mail, "template"):
                for _, name in _files(folder, mail.template):
                    found.append(env.get_template(name))
                    source = _loader(env).get_source(env, name)[0]
                    # A computed name (None here) is checked when a recipient's mail is rendered.
                    parsed = env.parse(source)
                    for used in filter(None, jinja_meta.find_referenced_templates(parsed)):
                        env.get_template(used)
            self._sound[folder, mail.template] = any("subject" in t.blocks for t in found)
        if mail.subject is None and not self._sound[folder, mail.template]:
            raise _no_subject(event, mail)

    def _place(self, event: Event, mail: Mail, recipient_language: str | None) -> tuple[Path, str]:
        """(folder, language) of the first place in the language chain holding the template."""
        name, key = mail.template, f"{mail.key}.template"
        if not _TEMPLATE_NAME.fullmatch(name):
            raise InputError(f"invalid template name {name!r}", source=event.source, key=key)
        chain = _chain(recipient_language, mail.language, event.language, self._default)
        places = [(self._dir / language, language) for language in chain]
        places.append((self._dir, self._default))
        for folder, language in places:
            if _files(folder, name):
                return folder, language
        looked = ", ".join(self._show(folder) for folder, _ in places)
        raise InputError(
            f'no template "{name}" (looked for {name}.html.j2 / {name}.txt.j2 in {looked})',
            source=event.source,
            key=key,
        )

    def _variants(self, name: str) -> list[tuple[Path, str]]:
        """Every language folder holding the template, and the root if it does: all may be used."""
        places = [(p, p.name) for p in sorted(self._dir.iterdir()) if _LANGUAGE.fullmatch(p.name)]
        places.append((self._dir, self._default))
        return [(folder, language) for folder, language in places if _files(folder, name)]

    def _env(self, folder: Path, language: str) -> Sandbox:
        """The environment of one folder; the root is searched second, so layouts may be shared."""
        env = self._envs.get(folder)
        if env is None:
            env = Sandbox(
                loader=_InsideLoader(
                    list(dict.fromkeys([folder, self._dir])), root=self._root, show=self._show
                ),
                undefined=StrictUndefined,
                autoescape=select_autoescape(("html.j2", "html"), default_for_string=False),
                keep_trailing_newline=True,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            style = STYLES.get(language.split("-")[0], STYLES["en"])
            env.filters.update(
                date=style.date,
                time=style.time,
                datetime=style.datetime,
                span=style.span,
                shortdate=style.shortdate,
                paragraphs=paragraphs,
            )
            self._envs[folder] = env
        return env

    def _subject(
        self,
        env: Sandbox,
        found: dict[str, Template],
        context: dict[str, Any],
        event: Event,
        mail: Mail,
    ) -> str:
        """mail.subject if set, else the template's subject block: one line, never empty."""
        address = context["recipient"]["address"]
        raw: str | None
        if mail.subject is not None:
            with self._faults(event, mail, "subject", address):
                self.on_part("subject")
                compiled = self._compiled_subject(env, mail.subject)
                raw = self._bounded(compiled.generate(context), None)
        else:
            with self._faults(event, mail, "template", address):
                raw = self._subject_block(found, context)
        if raw is None:
            raise _no_subject(event, mail)
        subject = raw.strip()
        if len(subject) > MAX_SUBJECT_CHARS:
            raise InputError(
                f"rendering for {address}: the subject is {len(subject):,} characters long; "
                f"the limit is {MAX_SUBJECT_CHARS:,}: {subject[:40]!r}…",
                source=event.source,
                key=f"{mail.key}.subject",
            )
        if not subject or _LINE_BREAK.search(subject):
            problem = "contains a line break" if subject else "is empty"
            raise InputError(
                f"rendering for {address}: the subject {problem}: {subject!r}",
                source=event.source,
                key=f"{mail.key}.subject",
                got=subject,
            )
        return " ".join(subject.split())

    def _compiled_subject(self, env: Sandbox, source: str) -> Template:
        """Compiles a mail.subject once per language, not once per recipient."""
        if (env, source) not in self._subjects:
            self._subjects[env, source] = env.from_string(source)
        return self._subjects[env, source]

    def _subject_block(self, found: dict[str, Template], context: dict[str, Any]) -> str | None:
        """The subject block of the text template, else of the HTML one (unescaped)."""
        for kind in KINDS:
            template = found.get(kind)
            if template is not None and "subject" in template.blocks:
                self.on_part(kind)
                chunks = template.blocks["subject"](template.new_context(context))
                raw = self._bounded(chunks, template.filename)
                return Markup(raw).unescape() if kind == "html" else raw
        return None

    def _bounded(self, chunks: Iterable[str], filename: str | None) -> str:
        """The output of a rendering, stopped as soon as it exceeds MAX_PART_CHARS."""
        parts: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_PART_CHARS:
                what = self._show(filename) if filename else "the subject"
                raise TooMuchOutput(
                    f"{what} produced more than {MAX_PART_CHARS // 1_000_000} MB (the limit)"
                )
            parts.append(chunk)
        return "".join(parts)

    @contextmanager
    def _faults(self, event: Event, mail: Mail, part: str, address: str = "") -> Iterator[None]:
        """Turns any template fault into an InputError naming file, line and recipient."""
        try:
            yield
        except _TEMPLATE_FAULTS as exc:
            key = f"{mail.key}.{part}"
            raise InputError(self._describe(exc, address), source=event.source, key=key) from exc

    def _describe(self, exc: Exception, address: str) -> str:
        if isinstance(exc, TemplateSyntaxError):
            where = self._show(exc.filename) if exc.filename else exc.name or "subject"
            return f"{where} line {exc.lineno}: {exc.message}"
        # Jinja rewrites tracebacks so that a template's frames carry its file and line.
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
        where = f"{self._show(frames[-1].filename)} line {frames[-1].lineno}: " if frames else ""
        whom = f"rendering for {address}: " if address else ""
        if isinstance(exc, TemplateNotFound):
            return f"{where}{whom}template {exc.name!r} not found"
        if isinstance(exc, RecursionError):
            return f"{where}{whom}calls itself too deeply (a macro or include that never ends?)"
        if isinstance(exc, MemoryError):
            return f"{where}{whom}needs more memory than a rendering may use"
        message = exc.message if isinstance(exc, TemplateError) else None
        return f"{where}{whom}{message or f'{type(exc).__name__}: {exc}'}"

    def _show(self, path: Path | str) -> str:
        """A path as the operator knows it: templates/sv/invitation.txt.j2."""
        try:
            return Path(path).relative_to(self._dir.parent).as_posix()
        except ValueError:
            return str(path)


def _chain(*languages: str | None) -> list[str]:
    """Valid language codes in order, each followed by its base ("sv-se", then "sv")."""
    chain: list[str] = []
    for language in languages:
        code = (language or "").strip().lower().replace("_", "-")
        for candidate in (code, code.split("-")[0]):
            if _LANGUAGE.fullmatch(candidate) and candidate not in chain:
                chain.append(candidate)
    return chain


def _served(code: str, there: list[str]) -> bool:
    """Whether a language, or its base ("sv" for "sv-FI"), has templates."""
    return bool(set(_chain(code)).intersection(there))


def _no_templates(code: str, there: list[str]) -> str:
    listed = ", ".join(f'"{c}" ({_english(c)})' for c in there) or "none"
    return f'no templates in "{code}" (there are: {listed})'


def _english(code: str) -> str:
    """ "Swedish" for "sv": an organiser who wrote "se" (Sweden) sees which code is meant."""
    try:
        return Locale.parse(code.replace("-", "_")).english_name or code
    except (ValueError, UnknownLocaleError):
        return code


def _unserved(event: Event, there: list[str]) -> list[str]:
    """A note for each recipients' language that has no templates: such people get the
    mail's or the event's language (people cannot all be served; an event can)."""
    counts = Counter(r.language for r in event.recipients if r.language)
    notes = []
    for code, n in sorted(counts.items()):
        if not _served(code, there):
            who = "1 recipient has" if n == 1 else f"{n} recipients have"
            listed = ", ".join(f'"{c}" ({_english(c)})' for c in there)
            notes.append(
                f'{event.source}: {who} language "{code}", which has no templates (there are: '
                f"{listed}); they get the mail's or the event's language"
            )
    return notes


def _read_facts(env: Environment, text: str, shown: str) -> tuple[Facts, list[str]]:
    """The needs a file states in `{# needs: … #}` comments, the free `event` keys it gives a
    date filter, and the templates it uses by a name written out."""
    needs: set[tuple[str, ...]] = set()
    unknown: list[str] = []
    known = ", ".join([*NEEDS, "event.<key>"])
    for _, token, value in env.lex(text):
        found = _NEEDS.match(value) if token == "comment" else None
        for item in filter(None, (i.strip() for i in found[1].split(","))) if found else ():
            words = tuple(w.strip() for w in item.split(" or "))
            bad = [w for w in words if w not in NEEDS and not _EVENT_NEED.fullmatch(w)]
            unknown += [f'{shown}: needs: unknown "{w}" (known: {known})' for w in bad]
            needs.update([] if bad else [words])
    parsed = env.parse(text)
    dated = [
        key
        for node in parsed.find_all(nodes.Filter)
        if node.name in DATE_FILTERS
        for arg in (node.node, *(node.args if node.name == "span" else ()))
        if (key := _event_key(arg))
    ]
    used = [name for name in jinja_meta.find_referenced_templates(parsed) if name]
    return Facts(frozenset(needs), tuple(unknown), tuple(dated)), used


def _has(event: Event, mail: Mail, word: str) -> bool:
    """Whether the mail meets one word of a need: `attachment`, `calendar`, `event.<key>`."""
    if word in NEEDS:
        return NEEDS[word][1](event, mail)
    key = word.removeprefix("event.")
    value = getattr(event, key) if key in _EVENT_FIELDS else event.data.get(key)
    return value not in (None, "", [], ())


def _described(word: str) -> str:
    return NEEDS[word][0] if word in NEEDS else f"{word.removeprefix('event.')} in the event file"


def _event_key(node: nodes.Node | None) -> str | None:
    """`x` of `event.x` or `event["x"]`, else None."""
    if isinstance(node, nodes.Getattr) and _is_event(node.node):
        return node.attr
    if isinstance(node, nodes.Getitem) and _is_event(node.node):
        arg = node.arg
        return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None
    return None


def _is_event(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "event"


def _written(value: object) -> str:
    return f'text ("{value}")' if isinstance(value, str) else repr(value)


def _files(folder: Path, name: str) -> list[tuple[str, str]]:
    """(kind, file name) of the mail's templates present in `folder`."""
    files = [(kind, f"{name}.{kind}.j2") for kind in KINDS]
    return [(kind, file) for kind, file in files if (folder / file).is_file()]


def _no_subject(event: Event, mail: Mail) -> InputError:
    message = 'no subject: set "subject" in the mail or add {% block subject %} to the template'
    return InputError(message, source=event.source, key=f"{mail.key}.template")


def _tidy(text: str) -> str:
    """At most one blank line in a row and one newline at the end: text templates stay readable."""
    return re.sub(r"\n{3,}", "\n\n", text.strip("\n")) + "\n"


def _ignore(part: str) -> None:
    """The default `on_part`: nobody is watching."""


def _loader(env: Environment) -> BaseLoader:
    assert env.loader is not None
    return env.loader


class _InsideLoader(BaseLoader):
    """Loads templates from folders under `root`, never through a link that leaves it: a
    template linked to /proc/self/environ would otherwise mail the service's secrets."""

    def __init__(self, folders: list[Path], *, root: Path, show: Callable[[Path], str]) -> None:
        self.folders = folders
        self.root = root
        self.show = show

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)
        for folder in self.folders:
            path = Path(folder, *pieces)
            if not path.is_file():
                continue
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise OutsideTemplates(f"{self.show(path)} cannot be followed: {exc}") from exc
            if not real.is_relative_to(self.root):
                raise OutsideTemplates(
                    f"{self.show(path)} leads outside the templates folder (a link?): refused"
                )
            seen = _identity(real)
            text = real.read_text(encoding="utf-8")
            return text, str(path), functools.partial(_unchanged, path, seen)
        raise TemplateNotFound(template)


def _unchanged(path: Path, seen: tuple[int, int, int] | None) -> bool:
    """One stat per use: the file as named is still the one read (not edited, not pointed
    elsewhere); else it is loaded, and checked, again."""
    return _identity(path) == seen


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_mtime_ns
