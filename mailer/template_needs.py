"""What template files state without being rendered: `{# needs: … #}` comments, the free
`event` keys they format as dates, and whether a mail meets those needs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from jinja2 import Environment, TemplateError, nodes
from jinja2 import meta as jinja_meta
from jinja2.sandbox import ImmutableSandboxedEnvironment as Sandbox

from mailer.errors import InputError
from mailer.events import Event, Mail
from mailer.sandbox import identity, located
from mailer.templates import TemplateFolder, files_in

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


@dataclass(frozen=True)
class Facts:
    """What the files of one template say without being rendered: the needs they state,
    and the free `event` keys they format as dates (key -> where, for the message)."""

    needs: frozenset[tuple[str, ...]] = frozenset()  # each met by one of its words
    unknown: tuple[str, ...] = ()  # needs nobody knows, each "file: needs: unknown …"
    dated: tuple[str, ...] = ()


class TemplateFacts:
    """The Facts of each template, in every language; each file is parsed once while it
    stays as it is (by name and identity, see sandbox.identity)."""

    def __init__(self, folder: TemplateFolder) -> None:
        self._folder = folder
        self._read: dict[tuple[str, tuple[int, int, int] | None], tuple[Facts, list[str]]] = {}

    def facts(self, name: str) -> Facts:
        """What the template's files, in every language, and the layouts they use state."""
        found: list[Facts] = []
        for folder, language in self._folder.variants(name):
            env, seen = self._folder.env(folder, language), set[str]()
            for _, file in files_in(folder, name):
                found += self._file_facts(env, file, seen)
        return Facts(
            frozenset().union(*(f.needs for f in found)),
            tuple(dict.fromkeys(u for f in found for u in f.unknown)),
            tuple(dict.fromkeys(k for f in found for k in f.dated)),
        )

    def _file_facts(self, env: Sandbox, name: str, seen: set[str]) -> list[Facts]:
        """One file's facts and those of the files it extends, includes or imports."""
        if name in seen:
            return []
        seen.add(name)
        try:  # read only when the file is new or changed: a thousand events share it
            named, real = located(env, name)
            cached = (str(named), identity(real))
            if cached not in self._read:
                text = real.read_text(encoding="utf-8")
                self._read[cached] = read_facts(env, text, self._folder.show(str(named)))
        except (TemplateError, OSError, UnicodeDecodeError):
            return []  # check_mail and the rendering say what is wrong with the file
        facts, used = self._read[cached]
        return [facts, *(f for ref in used for f in self._file_facts(env, ref, seen))]


def unmet_needs(event: Event, mail: Mail, facts: Facts) -> list[InputError]:
    """A `{# needs: … #}` the template states and the mail does not meet, or misspells."""
    key = f"{mail.key}.template"
    problems = [InputError(u, source=event.source, key=key) for u in facts.unknown]
    for need in sorted(facts.needs):
        if not any(is_met(event, mail, word) for word in need):
            what = " or ".join(map(_described, need))
            none = "none" if len(need) == 1 else "none of these"
            message = f'the template "{mail.template}" needs {what}; this mail has {none}'
            problems.append(InputError(message, source=event.source, key=mail.key))
    return problems


def read_facts(env: Environment, text: str, shown: str) -> tuple[Facts, list[str]]:
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


def is_met(event: Event, mail: Mail, word: str) -> bool:
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
