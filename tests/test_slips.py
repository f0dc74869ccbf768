"""An organiser's slips that used to pass `check` and cost a person their mail, or that got a
message in the TOML reader's words: each now said once, naming the file, the key or row, and
what to write instead."""

from __future__ import annotations

import re
import textwrap
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.errors import InputError, Problems
from mailer.event_parser import EVENT_KEYS, parse_event
from mailer.events import EventDefaults
from mailer.slips import edits, is_slip_for
from mailer.sources import load_event
from mailer.toml_text import load_toml
from tests.project import TEMPLATES, make_project, write_event

DEFAULTS = EventDefaults("sv", ZoneInfo("Europe/Stockholm"), timedelta(days=1))
SOURCE = Path("schedules/seminarium/event.toml")

EVENT = """
title = "Seminarium"
starts = 2027-05-12T10:00:00
{extra}
[recipients]
file = "people.csv"

[[mail]]
name = "report"
send_at = "start - 5d at 08:00"
to = ["registered"]
"""


def parse(csv_text: str, *, extra: str = "", event: str = EVENT):
    doc = load_toml(textwrap.dedent(event).format(extra=extra), source=SOURCE)
    return parse_event(doc, source=SOURCE, defaults=DEFAULTS, csv_text=csv_text)


def problems_of(csv_text: str, **kwargs) -> list[str]:
    with pytest.raises(Problems) as caught:
        parse(csv_text, **kwargs)
    return [str(p) for p in caught.value.problems]


# The rule: a case change, or two neighbouring letters swapped, for a name of up to 5 letters;
# up to two letters added, dropped, changed or swapped for a longer one.


@pytest.mark.parametrize(
    ("name", "known", "distance", "is_slip"),
    [
        ("organizer", "organiser", 1, True),
        ("regsitered", "registered", 1, True),
        ("registred", "registered", 1, True),
        ("unregistered", "registered", 2, True),
        ("timezon", "timezone", 1, True),
        ("titel", "title", 1, True),  # Swedish spelling, a swap
        ("Mail", "mail", 1, True),
        ("time", "title", 2, False),  # a word of its own: short names allow only swaps
        ("email", "mail", 1, False),
        ("alla", "all", 1, False),
        ("registration_url", "registered", 10, False),
        ("followup_starts", "starts", 9, False),
        ("location", "location", 0, False),
    ],
)
def test_what_counts_as_a_slip(name: str, known: str, distance: int, is_slip: bool):
    assert edits(name, known) == distance
    assert is_slip_for(name, known) is is_slip


# Item 5: a group in the CSV that is a slip for one a mail goes to.


@pytest.mark.parametrize(
    ("cell", "meant"),
    [("registred", "registered"), ("Registered", "registered"), ("regsitered", "registered")],
)
def test_a_csv_group_a_letter_or_two_from_a_mailed_one_is_an_error(cell: str, meant: str):
    csv_text = f"email;groups\nanna@example.org;registered\nbo@example.org;{cell}\n"
    assert problems_of(csv_text) == [
        f'schedules/seminarium/people.csv: row 3.groups: no mail goes to group "{cell}"; '
        f'did you mean "{meant}"? (a group of its own is declared in [recipients] groups)'
    ]


def test_an_inline_group_a_letter_from_a_declared_one_is_an_error():
    extra = '[[recipients.people]]\nemail = "cy@example.org"\ngroups = ["atended"]\n'
    event = EVENT.replace("[recipients]\n", '[recipients]\ngroups = ["attended"]\n')
    found = problems_of("email;groups\nanna@example.org;registered\n", extra=extra, event=event)
    assert found == [
        "schedules/seminarium/event.toml: recipients.people[0].groups: no mail goes to group "
        '"atended"; did you mean "attended"? (a group of its own is declared in '
        "[recipients] groups)"
    ]


def test_a_group_that_resembles_none_stays_a_tag_for_later():
    event = parse("email;groups\nanna@example.org;registered\nbo@example.org;alumni-2026\n")
    assert {g for r in event.recipients for g in r.groups} == {"registered", "alumni-2026"}


def test_a_group_near_a_mailed_one_is_allowed_once_declared():
    event = EVENT.replace("[recipients]\n", '[recipients]\ngroups = ["unregistered"]\n')
    csv_text = "email;groups\nanna@example.org;registered\nbo@example.org;unregistered\n"
    assert len(parse(csv_text, event=event).recipients) == 2


@pytest.mark.parametrize(
    "csv_text",
    [
        'email;groups\nanna@example.org;"registered, attended"\n',
        'email,groups\nanna@example.org,"registered, attended"\n',
        "email;groups\nanna@example.org;registered,attended\n",
    ],
)
def test_a_comma_in_a_groups_cell_separates_groups_as_a_semicolon_does(csv_text: str):
    event = parse(csv_text)
    (anna,) = event.recipients
    assert anna.groups == {"registered", "attended"}
    assert event.recipients_of(event.mails[0]) == (anna,)


# Item 6: a top-level key a letter or two from one with a meaning.


@pytest.mark.parametrize(
    ("line", "key", "meant"),
    [
        ('organizer = { name = "Anna", email = "anna@example.org" }', "organizer", "organiser"),
        ('locaton = "Västerås"', "locaton", "location"),
        ('timezon = "Europe/Stockholm"', "timezon", "timezone"),
        ('discription = "Om skolnärvaro"', "discription", "description"),
    ],
)
def test_a_key_a_letter_or_two_from_a_contract_key_is_an_error(line: str, key: str, meant: str):
    found = problems_of("email;groups\nanna@example.org;registered\n", extra=line)
    assert found == [
        f'schedules/seminarium/event.toml: {key}: unknown key; did you mean "{meant}"? '
        "(a key of your own for the templates must not look like one with a meaning)"
    ]


def test_free_keys_the_shipped_templates_use_stay_free():
    used = {
        name
        for path in TEMPLATES.rglob("*.j2")
        for name in re.findall(r"\bevent\.(\w+)", path.read_text(encoding="utf-8"))
    }
    free = sorted(used - EVENT_KEYS - {"starts", "ends", "organiser"})
    assert "registration_url" in free and "followup_starts" in free and "report_url" in free
    extra = "\n".join(f'{name} = "x"' for name in free)
    event = parse("email;groups\nanna@example.org;registered\n", extra=extra)
    assert set(event.data) == set(free)


# Item 10: what tomllib refuses, said as what to write.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'title = "x"\nstarts = 2027-10-28T13:00\n',
            "line 2: starts: write the time with seconds: 2027-10-28T13:00:00",
        ),
        (
            'title = "x"\n\n[[mail]]\nname = "a"\nsend_at = 2027-10-28T13:00+02:00\n',
            "line 5: send_at: write the time with seconds: 2027-10-28T13:00:00+02:00",
        ),
        (
            "title = “Förlabb”\n",
            'line 1: title: use straight quotes "…" — the file has curly quotes “…” '
            "(a word processor's)",
        ),
        (
            'organiser = { name = ”Anna”, email = "a@example.org" }\n',
            'line 1: name: use straight quotes "…" — the file has curly quotes ”…” '
            "(a word processor's)",
        ),
        (
            'title = "Förlabb”\n',
            'line 1: title: use straight quotes "…" — the file has a curly quote ” '
            "(a word processor's)",
        ),
        ("[[program]]\nat = 10:00\n", "line 2: at: write the time with seconds: 10:00:00"),
    ],
)
def test_a_toml_slip_is_said_as_what_to_write(text: str, expected: str):
    with pytest.raises(InputError) as caught:
        load_toml(text, source=Path("schedules/forlabb.toml"))
    assert str(caught.value) == f"schedules/forlabb.toml: {expected}"


def test_other_toml_errors_keep_the_readers_words():
    with pytest.raises(InputError) as caught:
        load_toml('title = "x\n', source=Path("schedules/forlabb.toml"))
    assert str(caught.value).startswith("schedules/forlabb.toml: not valid TOML: ")


# Item 9: Excel's "CSV (semikolonavgränsad)" is Windows-1252.

CP1252_EVENT = EVENT.format(extra="")


def write_csv(tmp_path: Path, data: bytes) -> Path:
    folder = tmp_path / "seminarium"
    folder.mkdir()
    (folder / "event.toml").write_text(CP1252_EVENT, encoding="utf-8")
    (folder / "people.csv").write_bytes(data)
    return folder / "event.toml"


def test_an_excel_csv_in_windows_1252_is_read_and_said(tmp_path: Path):
    data = "email;name;groups\r\n"
    data += "asa@example.org;Åsa Öberg;registered\r\nbo@example.org;Bo “Bosse” Ek;registered\r\n"
    source = write_csv(tmp_path, data.encode("cp1252"))
    loaded = load_event(source, defaults=DEFAULTS)
    assert loaded.error is None, loaded.error
    assert [r.name for r in loaded.event.recipients] == ["Åsa Öberg", "Bo “Bosse” Ek"]
    assert loaded.notes == (
        f"{source}: recipients.file: people.csv is not UTF-8; read as Windows-1252 "
        '(Excel\'s "CSV (semikolonavgränsad)"); save it as "CSV UTF-8" to be sure',
    )


def test_a_utf8_csv_with_a_bom_is_read_without_a_note(tmp_path: Path):
    data = "\ufeffemail;name;groups\nasa@example.org;Åsa Öberg;registered\n".encode()
    loaded = load_event(write_csv(tmp_path, data), defaults=DEFAULTS)
    assert loaded.error is None and loaded.notes == ()
    assert loaded.event.recipients[0].name == "Åsa Öberg"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            b"email;name;groups\nasa@example.org;\xc5sa;registered\nbo@example.org;B\x81;registered\n",
            "row 3: byte 0x81 is neither UTF-8 nor Windows-1252 text",
        ),
        (
            "email;name;groups\nasa@example.org;Åsa;registered\n".encode()
            + b"bo@example.org;\xd6berg;registered\n",
            "row 3: byte 0xd6 is not UTF-8, though the rest of the file is",
        ),
    ],
)
def test_a_csv_that_is_neither_is_refused_naming_the_row(tmp_path: Path, data: bytes, problem):
    source = write_csv(tmp_path, data)
    assert str(load_event(source, defaults=DEFAULTS).error) == (
        f"{source}: recipients.file: people.csv {problem}; "
        'save it from Excel as "CSV UTF-8 (kommaavgränsad)"'
    )


def test_check_prints_the_windows_1252_note_and_passes(tmp_path: Path):
    config = make_project(tmp_path)
    csv_bytes = "email;name;groups\nasa@example.org;Åsa Öberg;registered\n".encode("cp1252")
    event = EVENT.format(extra="").replace('"report"', '"reminder"')
    write_event(tmp_path, "seminarium", event, people__csv=csv_bytes)
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "note" in result.output and "read as Windows-1252" in result.output
    assert "1 event files checked, 0 with problems" in result.output
