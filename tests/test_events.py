"""Event files as organisers write them: what is accepted, each mistake named by file and key."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer.errors import Problems
from mailer.event_parser import parse_event
from mailer.events import EventDefaults
from mailer.toml_text import load_toml

STOCKHOLM = ZoneInfo("Europe/Stockholm")
DEFAULTS = EventDefaults(language="sv", timezone=STOCKHOLM, max_lateness=timedelta(days=1))

BASE = """
title = "Förlabb: Skolnärvaro"
starts = 2027-06-16T09:00:00
ends = 2027-06-16T12:00:00
location = "Västerås"
organiser = { name = "Samhällskontraktet", email = "samhallskontraktet@example.org" }
room = "Aulan"

[[program]]
at = "10:00"
title = "Inledning"

[[recipients.people]]
email = "Anna@Example.org"
name = "Anna Andersson"
groups = ["registered"]

[[recipients.people]]
email = "bjorn@example.org"
name = "Björn Östlund"
language = "en"
groups = ["registered", "attended"]

[[mail]]
name = "invitation"
send_at = "start - 21d at 09:00"
to = ["all"]
calendar = true

[[mail]]
name = "follow-up-lab"
send_at = "end + 2d at 10:00"
to = ["attended"]
"""


def parse(text: str, *, source: Path = Path("schedules/forlabb.toml"), csv_text: str | None = None):
    return parse_event(
        load_toml(textwrap.dedent(text), source=source),
        source=source,
        defaults=DEFAULTS,
        csv_text=csv_text,
    )


def problems_of(text: str, **kwargs) -> list[str]:
    with pytest.raises(Problems) as caught:
        parse(text, **kwargs)
    return [str(p) for p in caught.value.problems]


def test_a_valid_event_has_its_times_recipients_and_free_data():
    event = parse(BASE)
    assert event.id == "forlabb"
    assert event.title == "Förlabb: Skolnärvaro"
    assert event.starts == datetime(2027, 6, 16, 9, tzinfo=STOCKHOLM)
    assert event.data == {"room": "Aulan"}
    assert event.program == ({"at": "10:00", "title": "Inledning"},)
    invitation, follow_up = event.mails
    assert invitation.due == datetime(2027, 5, 26, 9, tzinfo=STOCKHOLM)
    assert invitation.expires == event.starts  # before the event: expires at its start
    assert follow_up.due == datetime(2027, 6, 18, 10, tzinfo=STOCKHOLM)
    assert follow_up.expires == follow_up.due + timedelta(days=1)  # after it: max_lateness
    assert [r.address for r in event.recipients_of(invitation)] == [
        "Anna@example.org",
        "bjorn@example.org",
    ]
    assert [r.name for r in event.recipients_of(follow_up)] == ["Björn Östlund"]
    assert invitation.template == "invitation" and invitation.calendar is True


def test_a_folder_event_takes_its_id_from_the_folder_and_reads_csv_columns():
    csv_text = (
        "\ufeffemail;name;groups;organisation\nanna@example.org;Anna;registered;Västerås stad\n"
    )
    event = parse(
        BASE.replace(
            '[[recipients.people]]\nemail = "Anna@Example.org"',
            '[[recipients.people]]\nemail = "carl@example.org"',
        ).replace(
            "[[recipients.people]]", '[recipients]\nfile = "people.csv"\n\n[[recipients.people]]', 1
        ),
        source=Path("schedules/forlabb-2027/event.toml"),
        csv_text=csv_text,
    )
    assert event.id == "forlabb-2027"
    anna = event.recipients[0]
    assert (anna.address, anna.name, anna.groups) == (
        "anna@example.org",
        "Anna",
        frozenset({"registered"}),
    )
    assert anna.fields == {"organisation": "Västerås stad"}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ('to = ["attended"]', 'to = ["atended"]'),
            'schedules/forlabb.toml: mail[1] "follow-up-lab".to: unknown group "atended" '
            "(known: all, attended, registered; declare a group nobody is in yet in "
            "[recipients] groups)",
        ),
        (
            ('name = "follow-up-lab"', 'name = "invitation"'),
            'schedules/forlabb.toml: mail[1] "invitation".name: another mail is already named '
            '"invitation"',
        ),
        (
            ("calendar = true", "calender = true"),
            'schedules/forlabb.toml: mail[0] "invitation".calender: unknown key',
        ),
        (
            ('send_at = "end + 2d at 10:00"', 'send_at = "end + 2x"'),
            'schedules/forlabb.toml: mail[1] "follow-up-lab".send_at: expected',
        ),
        (
            ('email = "bjorn@example.org"', 'email = "bjorn(at)example.org"'),
            "schedules/forlabb.toml: recipients.people[1].email: invalid address",
        ),
        (
            ('email = "bjorn@example.org"', 'email = "ANNA@example.org"'),
            "schedules/forlabb.toml: recipients.people[1].email: "
            "ANNA@example.org is already listed "
            "at recipients.people[0]",
        ),
        (
            ('title = "Förlabb: Skolnärvaro"', 'title = "Förlabb\\nBcc: x@evil.example"'),
            "schedules/forlabb.toml: title: must be one line",
        ),
        (
            ('name = "Anna Andersson"', 'name = "Anna\\r\\nBcc: x@evil.example"'),
            "schedules/forlabb.toml: recipients.people[0].name: control characters",
        ),
        (
            ("ends = 2027-06-16T12:00:00", "ends = 2027-06-15T12:00:00"),
            "schedules/forlabb.toml: ends: must not be before starts",
        ),
        (
            ('location = "Västerås"', 'timezone = "Europe/Stokholm"'),
            'schedules/forlabb.toml: timezone: expected a time zone like "Europe/Stockholm"',
        ),
        (
            ("calendar = true", 'attach = ["../secret.pdf"]'),
            "schedules/forlabb.toml: mail[0] \"invitation\".attach: '../secret.pdf' leaves the "
            "event's folder",
        ),
        (
            ("calendar = true", 'attach = ["/etc/passwd"]'),
            "schedules/forlabb.toml: mail[0] \"invitation\".attach: '/etc/passwd' leaves",
        ),
        (
            ("calendar = true", 'expires = "start - 30d"'),
            'schedules/forlabb.toml: mail[0] "invitation".expires: must be after send_at',
        ),
        (
            ("calendar = true", 'language = "Swedish"'),
            'schedules/forlabb.toml: mail[0] "invitation".language: expected a language code',
        ),
        (
            (
                'email = "samhallskontraktet@example.org" }',
                'mail = "samhallskontraktet@example.org" }',
            ),
            "schedules/forlabb.toml: organiser.mail: unknown key",
        ),
        (('groups = ["registered"]', 'groups = "registered"\nphone = "1"\ngrupper = ["x"]'), None),
    ],
)
def test_each_mistake_is_named_by_file_and_key(edit: tuple[str, str], expected: str | None):
    old, new = edit
    assert old in BASE
    if expected is None:  # free keys on a person are template data, not mistakes
        assert parse(BASE.replace(old, new, 1)).recipients[0].fields["phone"] == "1"
        return
    found = problems_of(BASE.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_of_a_file_is_reported_at_once():
    broken = (
        BASE.replace('to = ["attended"]', 'to = ["atended"]')
        .replace("calendar = true", "calender = true")
        .replace('email = "bjorn@example.org"', 'email = "bjorn"')
    )
    assert len(problems_of(broken)) == 3


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (Path("schedules/Förlabb.toml"), "event id 'Förlabb'"),
        (Path("schedules/_x/event.toml"), "event id '_x'"),
    ],
)
def test_an_event_id_must_be_a_plain_slug(source: Path, fragment: str):
    assert any(fragment in p for p in problems_of(BASE, source=source))


@pytest.mark.parametrize(
    ("csv_text", "expected"),
    [
        ("name;groups\nAnna;registered\n", 'people.csv: header: expected an "email" column'),
        (
            "email,name\nanna@example.org,Anna\nnot-an-address,Bo\n",
            "people.csv: row 3.email: invalid",
        ),
        (
            "email;name\nanna@example.org;Anna\nANNA@EXAMPLE.ORG;Anna A\n",
            "schedules/forlabb.toml: people.csv row 3.email: ANNA@example.org is already listed at "
            "people.csv row 2",
        ),
        (
            "email;name\nanna@example.org;Anna;extra\n",
            "people.csv: row 2: expected 2 columns, got 3",
        ),
    ],
)
def test_csv_mistakes_name_the_csv_and_the_row(csv_text: str, expected: str):
    text = BASE.replace(
        "[[recipients.people]]", '[recipients]\nfile = "people.csv"\n\n[[recipients.people]]', 1
    )
    text = text.replace('email = "Anna@Example.org"', 'email = "carl@example.org"')
    text = text.replace('to = ["attended"]', 'to = ["all"]')
    found = problems_of(text, csv_text=csv_text)
    assert any(expected in p for p in found), found


def test_comma_separated_csv_with_semicolon_groups_and_blank_cells():
    text = BASE.replace(
        "[[recipients.people]]", '[recipients]\nfile = "people.csv"\n\n[[recipients.people]]', 1
    ).replace("Anna@Example.org", "carl@example.org")
    csv_text = 'email,name,groups,phone\nanna@example.org,Anna,"registered;attended",\n\n'
    event = parse(text, csv_text=csv_text)
    anna = event.recipients[0]
    assert anna.groups == {"registered", "attended"}
    assert anna.fields == {"phone": ""}  # every column exists for every row


def test_bad_toml_names_the_file_and_line():
    from mailer.errors import InputError

    with pytest.raises(InputError, match=r"^schedules/x.toml: not valid TOML: .*line 2"):
        load_toml('title = "x"\nstarts = \n', source=Path("schedules/x.toml"))
