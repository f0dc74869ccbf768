"""Tests for mailer.mail_macros: which macros are judged the same for every recipient of a
mail, and that rendering through their cache still gives each recipient their own text, the
template as it is now and the event as it is now."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from jinja2 import Environment

from mailer.events import Mail, Recipient
from mailer.mail_macros import MAX_ENTRIES, mail_level_macros
from mailer.render import Renderer
from tests.test_render import ANNA, EVENT, mail, write

BO = Recipient("bo@example.org", "Bo Ek")
SUBJECT = ""  # the mail sets its subject: the body is all the template writes


def x_mail() -> Mail:
    """One mail object for every recipient, as a worker holds it."""
    return mail("x", subject="Hej")


def judged(source: str) -> set[str]:
    return {macro.name for macro in mail_level_macros(Environment().parse(source))}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% macro m() %}{{ event.title }} {{ lang }} {{ mail.name }}{% endmacro %}", {"m"}),
        ("{% macro m(x, y=2) %}{{ x }}{{ y }}{% endmacro %}", {"m"}),
        ("{% macro m() %}{% for i in event.program %}{{ loop.index }}{{ i.at }}{% endfor %}"
         "{% endmacro %}", {"m"}),
        ('{% set p = "a" %}{% set q = p ~ "b" %}{% macro m() %}{{ q }}{% endmacro %}', {"m"}),
        ("{% macro m() %}{% set w = event.title|length %}{{ w }}{% endmacro %}", {"m"}),
        # The recipient, the subject (rendered per recipient), or a default that reads them.
        ("{% macro m() %}{{ recipient.name }}{% endmacro %}", set()),
        ("{% macro m() %}{{ subject }}{% endmacro %}", set()),
        ("{% macro m(x=recipient.name) %}{{ x }}{% endmacro %}", set()),
        # Constants only from literals, set once, before the macro.
        ("{% set p = recipient.name %}{% macro m() %}{{ p }}{% endmacro %}", set()),
        ('{% set p = "a" %}{% set p = "b" %}{% macro m() %}{{ p }}{% endmacro %}', set()),
        ('{% macro m() %}{{ p }}{% endmacro %}{% set p = "a" %}', set()),
        ("{% set c = cycler('a', 'b') %}{% macro m() %}{{ c.next() }}{% endmacro %}", set()),
        # Another macro, a caller, an include, randomness: not judged further.
        ("{% macro a() %}{{ recipient.name }}{% endmacro %}{% macro m() %}{{ a() }}{% endmacro %}",
         set()),
        ("{% macro m() %}{{ caller() }}{% endmacro %}", set()),
        ('{% macro m() %}{% include "x.j2" %}{% endmacro %}', set()),
        ("{% macro m() %}{{ event.program|random }}{% endmacro %}", set()),
        ("{% macro m() %}{{ lipsum(1) }}{% endmacro %}", set()),
        # A local that shadows the template's own names.
        ("{% macro m() %}{% for recipient in event.program %}{{ recipient }}{% endfor %}"
         "{% endmacro %}", set()),
    ],
)
def test_a_macro_is_mail_level_only_when_it_reads_nothing_of_the_recipient(
    source: str, expected: set[str]
) -> None:
    assert judged(source) == expected


def test_each_recipient_gets_their_own_text_around_and_through_cached_macros(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"sv/x.txt.j2": (
        SUBJECT + "{% macro when() %}{{ event.starts|date }}{% endmacro %}"
        "{% macro hello(name) %}Hej {{ name }}{% endmacro %}"
        "{{ hello(recipient.name) }}, {{ when() }}, {{ recipient.address }}\n"
    )})
    renderer, invitation = Renderer(tmp_path, default_language="sv"), x_mail()
    anna = renderer.render_mail(EVENT, invitation, ANNA).text
    bo = renderer.render_mail(EVENT, invitation, BO).text
    assert anna == "Hej Anna Andersson, onsdag 16 juni 2027, anna@example.org\n"
    assert bo == "Hej Bo Ek, onsdag 16 juni 2027, bo@example.org\n"


def test_an_edited_template_is_rendered_as_it_is_now(tmp_path: Path) -> None:
    path = tmp_path / "sv" / "x.txt.j2"
    write(tmp_path, {"sv/x.txt.j2": SUBJECT + "{% macro m() %}old{% endmacro %}{{ m() }}\n"})
    renderer, invitation = Renderer(tmp_path, default_language="sv"), x_mail()
    assert renderer.render_mail(EVENT, invitation, ANNA).text == "old\n"
    path.write_text(SUBJECT + "{% macro m() %}new{% endmacro %}{{ m() }}\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert renderer.render_mail(EVENT, invitation, BO).text == "new\n"


def test_a_new_version_of_the_event_is_rendered_as_it_is_now(tmp_path: Path) -> None:
    write(tmp_path, {"sv/x.txt.j2": SUBJECT + "{% macro m() %}{{ event.title }}{% endmacro %}"
                     "{{ m() }}\n"})
    renderer, invitation = Renderer(tmp_path, default_language="sv"), x_mail()
    assert renderer.render_mail(EVENT, invitation, ANNA).text == f"{EVENT.title}\n"
    edited = dataclasses.replace(EVENT, title="Nytt namn")
    assert renderer.render_mail(edited, invitation, ANNA).text == "Nytt namn\n"


def test_arguments_are_told_apart_by_type(tmp_path: Path) -> None:
    write(tmp_path, {"sv/x.html.j2": (
        SUBJECT + "{% macro show(x) %}{{ x }}{% endmacro %}"
        "{% macro title() %}{{ event.title }}{% endmacro %}"
        '{{ show("<b>") }} {{ show("<b>"|safe) }} {{ title() }} '
        "{% autoescape false %}{{ title() }}{% endautoescape %}\n"
    )})
    event = dataclasses.replace(EVENT, title="A & B")
    renderer, invitation = Renderer(tmp_path, default_language="sv"), x_mail()
    for who in (ANNA, BO):
        html = renderer.render_mail(event, invitation, who).html
        # As Jinja renders it uncached: a macro escapes as the template it is defined in.
        assert html == "&lt;b&gt; <b> A &amp; B A &amp; B"


def test_a_macro_called_with_every_recipients_name_keeps_a_bounded_cache(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"sv/x.txt.j2": SUBJECT + "{% macro hello(n) %}Hej {{ n }}{% endmacro %}"
                     "{{ hello(recipient.name) }}\n"})
    renderer, invitation = Renderer(tmp_path, default_language="sv"), x_mail()
    for i in range(MAX_ENTRIES + 20):
        who = Recipient(f"p{i}@example.org", f"P {i}")
        assert renderer.render_mail(EVENT, invitation, who).text == f"Hej P {i}\n"
    (_, _, cache), = renderer._caches.values()
    assert len(cache) == MAX_ENTRIES
