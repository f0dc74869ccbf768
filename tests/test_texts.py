"""`[text.<lang>]` and `from_name` (SPEC §14): texts per language in the templates and the
.ics (read back with icalendar and vobject), their mistakes named by key, and check's warning
for readers of a language the event has no texts for."""

from __future__ import annotations

import textwrap
from email import message_from_bytes, policy
from pathlib import Path

import icalendar
import pytest
import vobject
from click.testing import CliRunner

from mailer.cli import main
from mailer.errors import Problems
from mailer.event_parser import parse_event
from mailer.events import load_toml
from tests.project import EVENT, make_project, write_event
from tests.test_events import DEFAULTS

FROM_NAME = 'from_name = "Skolnärvaro i Mälardalen"\n'
TEXTS = """
[text.en]
title = "Pre-lab: School attendance"
location = "Mälardalen University, Västerås"
description = "An exploratory workshop."
room = "The Aula"
"""


def event_text(top: str = FROM_NAME, tables: str = TEXTS) -> str:
    """The test project's event with top-level keys before it and tables after it."""
    return top + textwrap.dedent(EVENT) + tables


def parse(top: str = FROM_NAME, tables: str = TEXTS):
    source = Path("schedules/forlabb.toml")
    text = event_text(top, tables).format(starts="2027-06-16T09:00:00", ends="2027-06-16T12:00:00")
    doc = load_toml(text, source=source)
    return parse_event(doc, source=source, defaults=DEFAULTS)


def test_texts_replace_the_event_s_own_for_their_language_only():
    event = parse('room = "Aulan"\n' + FROM_NAME)
    english, swedish = event.in_language("en-GB"), event.in_language("sv")
    assert (english.title, english.location) == (
        "Pre-lab: School attendance",
        "Mälardalen University, Västerås",
    )
    assert english.description == "An exploratory workshop." and english.data["room"] == "The Aula"
    assert swedish is event and swedish.title == "Förlabb: Skolnärvaro"
    assert english.starts == event.starts and english.recipients == event.recipients
    assert event.from_name == "Skolnärvaro i Mälardalen"


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            '[text.english]\ntitle = "x"\n',
            "text.english: expected a language code like \"en\", got 'english'",
        ),
        (
            "[text.en]\nstarts = 2027-06-17T09:00:00\n",
            "text.en.starts: only texts may differ per language",
        ),
        ('[text.en]\ntitle = "two\\nlines"\n', "text.en.title: expected one line of text"),
        ('text = "en"\n', "text: expected tables per language"),
        ('from_name = "a\\nBcc: x@example.org"\n', "from_name: must be one line"),
    ],
)
def test_mistakes_in_texts_are_named_by_key(text: str, expected: str):
    with pytest.raises(Problems) as caught:
        parse(*((text, "") if text.startswith(("text =", "from_name")) else ("", text)))
    assert any(expected in str(p) for p in caught.value.problems), caught.value.problems


def test_each_reader_gets_the_texts_of_their_language_in_mail_and_calendar(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb", event_text())
    out = tmp_path / "preview"
    result = CliRunner().invoke(
        main, ["preview", "-c", str(config), "forlabb", "invitation", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    read = {}
    for eml in (out / "forlabb" / "invitation").glob("*.eml"):
        message = message_from_bytes(eml.read_bytes(), policy=policy.SMTP)
        (ics,) = [
            p.get_content() for p in message.iter_attachments() if p.get_filename() == "forlabb.ics"
        ]
        ics = ics if isinstance(ics, str) else ics.decode()
        (vevent,) = icalendar.Calendar.from_ical(ics).walk("VEVENT")
        other = vobject.readOne(ics).vevent
        assert str(vevent["SUMMARY"]) == other.summary.value
        assert str(vevent["LOCATION"]) == other.location.value
        assert vevent["DTSTART"].dt == other.dtstart.value  # the same instant for both readers
        read[eml.stem] = (
            message["Subject"],
            message["From"],
            str(vevent["SUMMARY"]),
            str(vevent["LOCATION"]),
        )
    assert read["bjorn@example.org"][0].startswith("Invitation: Pre-lab: School attendance")
    assert read["bjorn@example.org"][2:] == (
        "Pre-lab: School attendance",
        "Mälardalen University, Västerås",
    )
    assert read["anna@example.org"][0].startswith("Inbjudan: Förlabb: Skolnärvaro")
    assert read["anna@example.org"][2:] == (
        "Förlabb: Skolnärvaro",
        "Mälardalens universitet, Västerås",
    )
    for _, sender, *_ in read.values():
        assert sender == "Skolnärvaro i Mälardalen <samhallskontraktet@example.org>"


def test_check_warns_of_readers_of_a_language_without_texts(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")  # Björn reads English; the event is Swedish only
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert '1 recipient reads "en" and the event has no [text.en]' in result.output
    write_event(tmp_path, "forlabb", event_text())
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0 and "[text.en]" not in result.output, result.output
