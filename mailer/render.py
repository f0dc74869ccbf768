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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateError,
    select_autoescape,
)
from jinja2 import meta as jinja_meta
from jinja2.exceptions import TemplateNotFound, TemplateSyntaxError
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment as Sandbox
from markupsafe import Markup

from mailer.dates import STYLES
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


class TooMuchOutput(TemplateError):
    """A part of the mail grew beyond MAX_PART_CHARS while it was rendered."""


class OutsideTemplates(TemplateError):
    """A template file that is a link (or in a linked folder) leading out of templates/."""


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
