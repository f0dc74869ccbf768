"""Template faults -> InputErrors naming file, line and recipient; output stopped at a size."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jinja2 import TemplateError
from jinja2.exceptions import TemplateNotFound, TemplateSyntaxError

from mailer.errors import InputError
from mailer.events import Event, Mail

# Each part of a mail (subject, HTML, text) may be this long: a generous newsletter is ~100 KB.
# Output beyond it is a template gone wrong (a loop printing for ever), stopped as it streams,
# before it fills memory or a 300 MB message reaches the relay. Counted in characters, which
# never outnumber the bytes they encode to, so "more than 5 MB" is true when it is said.
MAX_PART_CHARS = 5_000_000
# Anything a template raises is the organiser's to fix, not the service's: 1/0, a bad method
# call, a macro calling itself (RecursionError), "x" * 10**12 (MemoryError), a link refused.
_TEMPLATE_FAULTS = (Exception,)

Show = Callable[[Path | str], str]


class TooMuchOutput(TemplateError):
    """A part of the mail grew beyond MAX_PART_CHARS while it was rendered."""


@contextmanager
def report_faults(
    event: Event, mail: Mail, part: str, address: str = "", *, show: Show
) -> Iterator[None]:
    """Turns any template fault into an InputError naming file, line and recipient."""
    try:
        yield
    except _TEMPLATE_FAULTS as exc:
        key = f"{mail.key}.{part}"
        raise InputError(describe(exc, address, show=show), source=event.source, key=key) from exc


def describe(exc: Exception, address: str, *, show: Show) -> str:
    """What went wrong, where: `templates/sv/x.txt.j2 line 3: rendering for …: …`."""
    if isinstance(exc, TemplateSyntaxError):
        where = show(exc.filename) if exc.filename else exc.name or "subject"
        return f"{where} line {exc.lineno}: {exc.message}"
    # Jinja rewrites tracebacks so that a template's frames carry its file and line.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    where = f"{show(frames[-1].filename)} line {frames[-1].lineno}: " if frames else ""
    whom = f"rendering for {address}: " if address else ""
    if isinstance(exc, TemplateNotFound):
        return f"{where}{whom}template {exc.name!r} not found"
    if isinstance(exc, RecursionError):
        return f"{where}{whom}calls itself too deeply (a macro or include that never ends?)"
    if isinstance(exc, MemoryError):
        return f"{where}{whom}needs more memory than a rendering may use"
    message = exc.message if isinstance(exc, TemplateError) else None
    return f"{where}{whom}{message or f'{type(exc).__name__}: {exc}'}"


def join_bounded(chunks: Iterable[str], filename: str | None, *, show: Show) -> str:
    """The output of a rendering, stopped as soon as it exceeds MAX_PART_CHARS."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_PART_CHARS:
            what = show(filename) if filename else "the subject"
            raise TooMuchOutput(
                f"{what} produced more than {MAX_PART_CHARS // 1_000_000} MB (the limit)"
            )
        parts.append(chunk)
    return "".join(parts)
