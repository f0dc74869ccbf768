"""A mail's subject: `mail.subject` or the template's subject block, one line, never empty."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment as Sandbox
from markupsafe import Markup

from mailer.errors import InputError
from mailer.events import Event, Mail
from mailer.template_faults import Show, join_bounded, report_faults
from mailer.templates import KINDS

# Everything str.splitlines() breaks on: in a header, any of them would split it.
_LINE_BREAK = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
# Mail clients show a subject's first ~100 characters; a longer one is a pasted text, and
# folding it into a header costs ~0.1 ms per non-ASCII character, per recipient.
MAX_SUBJECT_CHARS = 1000


class Subjects:
    """Renders subjects, compiling each `mail.subject` once per language, not per recipient."""

    def __init__(self, *, show: Show) -> None:
        self._show = show
        self._compiled: dict[tuple[Sandbox, str], Template] = {}

    def compiled(self, env: Sandbox, source: str) -> Template:
        """`mail.subject` compiled in `env` (a syntax error raises, for `check`)."""
        if (env, source) not in self._compiled:
            self._compiled[env, source] = env.from_string(source)
        return self._compiled[env, source]

    def render(
        self,
        env: Sandbox,
        found: dict[str, Template],
        context: dict[str, Any],
        *,
        event: Event,
        mail: Mail,
        on_part: Callable[[str], None],
    ) -> str:
        """mail.subject if set, else the template's subject block: one line, never empty."""
        address = context["recipient"]["address"]
        raw: str | None
        if mail.subject is not None:
            with report_faults(event, mail, "subject", address, show=self._show):
                on_part("subject")
                compiled = self.compiled(env, mail.subject)
                raw = join_bounded(compiled.generate(context), None, show=self._show)
        else:
            with report_faults(event, mail, "template", address, show=self._show):
                raw = self._block(found, context, on_part)
        if raw is None:
            raise no_subject(event, mail)
        return checked_subject(raw, event=event, mail=mail, address=address)

    def _block(
        self, found: dict[str, Template], context: dict[str, Any], on_part: Callable[[str], None]
    ) -> str | None:
        """The subject block of the text template, else of the HTML one (unescaped)."""
        for kind in KINDS:
            template = found.get(kind)
            if template is not None and "subject" in template.blocks:
                on_part(kind)
                chunks = template.blocks["subject"](template.new_context(context))
                raw = join_bounded(chunks, template.filename, show=self._show)
                return Markup(raw).unescape() if kind == "html" else raw
        return None


def checked_subject(raw: str, *, event: Event, mail: Mail, address: str) -> str:
    """The rendered subject on one line, or why it cannot be one (too long, empty, broken)."""
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


def no_subject(event: Event, mail: Mail) -> InputError:
    """A mail with neither `subject` nor a subject block."""
    message = 'no subject: set "subject" in the mail or add {% block subject %} to the template'
    return InputError(message, source=event.source, key=f"{mail.key}.template")
