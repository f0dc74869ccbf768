"""Hostile and broken input (issue #7.3): whatever an event file, CSV or field holds, the answer
is an Event or a MailerError naming file and key; never a crash, a hang or an injected header.

The properties run the pure path (`load_toml` + `parse_event`, `parse_csv`, `Outbox.compose`
with the real templates); the specific cases run on real files in `tmp_path`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import HeaderParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.cli import main
from mailer.clock import ManualClock
from mailer.errors import Collector, MailerError, Problems
from mailer.event_files import MAX_ATTACHMENT_BYTES, MAX_CSV_BYTES
from mailer.event_parser import parse_event
from mailer.events import Event, EventDefaults, Recipient
from mailer.message import Sender, parse_message
from mailer.outbox import Outbox
from mailer.recipients import parse_csv
from mailer.render import Renderer
from mailer.sources import load_event
from mailer.subjects import MAX_SUBJECT_CHARS
from mailer.toml_text import load_toml
from tests.project import TEMPLATES, make_project, write_event
from tests.test_engine import INVITATION_DUE, engine_at, maildir, states

pytestmark = pytest.mark.timeout(60)

DEFAULTS = EventDefaults("sv", ZoneInfo("Europe/Stockholm"), timedelta(days=1))
# A folder that does not exist: the pure path never opens a file, and `attach` finds nothing.
SOURCE = Path("no-such-schedules/hostile.toml")
CSV_SOURCE = SOURCE.parent / "people.csv"
NOW = datetime(2027, 5, 1, 12, tzinfo=UTC)
OUTBOX = Outbox(
    Renderer(TEMPLATES, default_language="sv"),
    Sender(address="info@example.org", name="Info", message_id_domain="example.org"),
)
# What build_message sets, each once; anything else in a parsed message was injected.
OUR_HEADERS = {
    "subject", "from", "to", "reply-to", "date", "message-id", "auto-submitted",
    "x-auto-response-suppress",
    "mime-version", "content-type", "content-transfer-encoding", "content-language",
}  # fmt: skip
# A problem of the whole file (syntax, encoding, size) has no key; its message says where.
WHOLE_FILE = re.compile(
    r"not valid TOML: .*(\(at (line \d+, column \d+|end of document)\)|nested too deeply)"
    r"|\S+ is not UTF-8 text \(.* at byte \d+\)|\S+ is [\d,]+ bytes; the limit is [\d,]+"
)
# Sizes: each property runs in 1-3 s; a hang fails the deadline of its example. Those that
# compose messages (~10 ms each, most of it Python's email package) run fewer examples.
FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_COMPOSING = settings(FUZZ, max_examples=100)

# -- strategies ---------------------------------------------------------------------------

SPECIAL = [
    "\r\n", "\n", "\r", "\x00", "\t", "\x0b", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029",
    "\u202e", "\u200f", "\u200b", "\ufeff", "\U0010ffff", "🎉", "👩‍👩‍👧", "Ä", "ß", "İ",
    "<script>alert(1)</script>", "{{ 7*7 }}", "{% if true %}x{% endif %}", "{#", "=?utf-8?q?x?=",
    "Bcc: evil@example.org", "\r\nBcc: evil@example.org", '"', "\\", ",", ";", "<", ">", "@",
    ":", "..", "/", "start - 1d", "%s", "{0}",
]  # fmt: skip
hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(SPECIAL) | st.text(max_size=4), max_size=8).map("".join),
    st.builds(
        lambda piece, n: piece * n,
        st.sampled_from(["a", "ä", "🎉", "a b ", "\u202eab", "=?"]),
        st.integers(100, 3000),
    ),
)
# Strings that get further into validation than random text does.
PLAUSIBLE = [
    "start - 21d at 09:00", "end + 2d at 10:00", "start - 2h", "start + 99999999999d",
    "all", "registered", "attended", "invitation", "reminder", "report", "follow-up-lab",
    "anna@example.org", "ANNA@EXAMPLE.ORG", "ännä@exämple.org", "sv", "en", "sv-SE", "xx",
    "Europe/Stockholm", "Europe", "../secret.pdf", "/etc/passwd", "people.csv", "a" * 300,
    "2027-06-16", "{{ recipient.name }}", "{{ event.title }} {{ recipient.address }}",
    "{{ recipient.phone }}", "{{ nope }}", "{% block %}",
]  # fmt: skip
addresses = st.one_of(
    st.sampled_from(["anna@example.org", "Anna@Example.ORG", "bo@exämple.org", "ännä@example.org"]),
    st.builds(lambda local, domain: f"{local}@{domain}", hostile_text, hostile_text),
    st.builds(lambda local: f"{local}@example.org", hostile_text),
    st.emails(),
)
zones = st.sampled_from([None, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])
scalars = st.one_of(
    hostile_text,
    st.sampled_from(PLAUSIBLE),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=zones),
    st.dates(),
    st.times(),
)
keys = st.one_of(hostile_text, st.sampled_from(["name", "email", "at", "title", "x"]))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=10,
)
EVENT_KEYS = [
    "title", "starts", "ends", "timezone", "language", "location", "organiser", "description",
    "program", "recipients", "mail", "registration_url", "registration_deadline", "x",
]  # fmt: skip
MAIL_KEYS = [
    "name", "send_at", "to", "template", "subject", "attach", "calendar", "expires", "language",
    "x",
]  # fmt: skip
PERSON_KEYS = ["email", "name", "language", "groups", "phone", "x"]


def base_event() -> dict[str, Any]:
    """A valid event as a table: every hostile change below starts from it."""
    return {
        "title": "Förlabb: Skolnärvaro",
        "starts": datetime(2027, 6, 16, 9),
        "ends": datetime(2027, 6, 16, 12),
        "location": "Västerås",
        "organiser": {"name": "Samhällskontraktet", "email": "info@example.org"},
        "description": "Första stycket.\n\nAndra stycket.",
        "program": [{"at": "10:00", "title": "Inledning"}],
        "recipients": {
            "groups": ["registered", "attended"],
            "people": [
                {"email": "anna@example.org", "name": "Anna Andersson", "groups": ["registered"]},
                {"email": "bjorn@example.org", "name": "Björn", "language": "en", "phone": "1"},
            ],
        },
        "mail": [
            {"name": "invitation", "send_at": "start - 21d at 09:00", "to": ["all"]},
            {"name": "reminder", "send_at": "start - 2d at 09:00", "to": ["registered"]},
            {"name": "follow-up-lab", "send_at": "end + 2d at 10:00", "calendar": True},
        ],
    }


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """The valid event with random values (hostile text above all) put in at random keys."""
    doc = base_event()
    doc.update(draw(st.dictionaries(st.sampled_from(EVENT_KEYS), values, max_size=2)))
    recipients = doc.get("recipients")
    people = recipients.get("people") if isinstance(recipients, dict) else None
    if isinstance(people, list) and people and isinstance(people[0], dict):
        people[0].update(draw(st.dictionaries(st.sampled_from(PERSON_KEYS), values, max_size=2)))
    mails = doc.get("mail")
    if isinstance(mails, list) and mails and isinstance(mails[0], dict):
        mails[0].update(draw(st.dictionaries(st.sampled_from(MAIL_KEYS), values, max_size=2)))
    return doc


@st.composite
def events_with_hostile_text(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event whose names, title, subject, free fields and addresses are hostile."""
    doc = base_event()
    doc["title"] = draw(st.sampled_from(["Förlabb", ""]) | hostile_text)
    doc["location"] = draw(hostile_text)
    doc["organiser"]["name"] = draw(hostile_text)
    doc["registration_url"] = draw(hostile_text)
    person = doc["recipients"]["people"][0]
    person["name"] = draw(hostile_text)
    person["email"] = draw(addresses)
    person[draw(hostile_text)] = draw(hostile_text)  # a free field, any name
    doc["program"][0]["title"] = draw(hostile_text)
    subject = draw(st.none() | st.sampled_from(PLAUSIBLE[-5:]) | hostile_text)
    if subject is not None:
        doc["mail"][0]["subject"] = subject
    return doc


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = (
        f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else "\\" + c if c in '"\\' else c
        for c in text
    )
    return '"' + "".join(escaped) + '"'


def toml_value(value: object) -> str:
    """Any value the strategies make, as inline TOML (tables inline, so order never matters)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    return "".join(f"{toml_string(key)} = {toml_value(value)}\n" for key, value in doc.items())


def csv_text(rows: Iterable[list[str]], *, delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue()


# -- what every outcome must look like ---------------------------------------------------


def outcome(text: str, *, csv: str | None = None) -> Event | MailerError:
    """The pure path: TOML text (and CSV text) -> an Event, or the MailerError it raised."""
    try:
        doc = load_toml(text, source=SOURCE)
        return parse_event(doc, source=SOURCE, defaults=DEFAULTS, csv_text=csv)
    except MailerError as exc:
        return exc


def assert_located(error: MailerError, *sources: Path) -> None:
    """Every problem is one line that starts with its file and names the key it is about."""
    sources = sources or (SOURCE,)
    problems = error.problems if isinstance(error, Problems) else (error,)
    assert problems
    for problem in problems:
        assert problem.source in {str(s) for s in sources}, problem
        assert problem.key or WHOLE_FILE.match(problem.message), problem
    for line in str(error).splitlines():
        assert line.startswith(tuple(f"{s}: " for s in sources)), repr(line)
    assert len(str(error).splitlines()) == len(problems), repr(str(error))


def assert_one_recipient(raw: bytes, recipient: Recipient) -> None:
    """The bytes that go out parse back to our headers, each once, and To holds one address."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r" not in head.replace(b"\r\n", b"") and b"\n" not in head.replace(b"\r\n", b"")
    # UTF-8 only with SMTPUTF8 (a non-ASCII address), and then as RFC 6532 says.
    parsed = HeaderParser(policy=policy.default).parsestr(head.decode("utf-8") + "\r\n\r\n")
    names = [name.lower() for name in parsed]
    assert len(names) == len(set(names)) and set(names) <= OUR_HEADERS, names
    (to,) = parsed["To"].addresses
    assert to.addr_spec == recipient.address
    assert "\n" not in str(parsed["Subject"]) and "\r" not in str(parsed["Subject"])


def compose_every_message(event: Event, *, everyone: bool = False) -> int:
    """Compose each mail for its first recipient (the hostile one), or `everyone`; how many
    messages were made."""
    OUTBOX.forget(event.id)  # the .ics is cached per event id, which every example shares
    made = 0
    for mail in event.mails:
        recipients = event.recipients_of(mail) or event.recipients
        for recipient in recipients if everyone else recipients[:1]:
            try:
                raw = OUTBOX.compose(event, mail, recipient, now=NOW)
            except MailerError as exc:
                assert_located(exc, event.source)
                continue
            assert_one_recipient(raw, recipient)
            made += 1
    return made


def assert_event_or_located(result: Event | MailerError, *sources: Path) -> None:
    if isinstance(result, MailerError):
        assert_located(result, *sources)
    else:
        assert isinstance(result, Event)
        compose_every_message(result)


# -- properties over the pure path --------------------------------------------------------


@FUZZ
@given(st.text(max_size=2000) | st.binary(max_size=2000).map(lambda b: b.decode(errors="replace")))
def test_any_text_as_an_event_file_is_an_event_or_located_problems(text: str):
    assert_event_or_located(outcome(text))


@FUZZ
@given(st.dictionaries(keys | st.sampled_from(EVENT_KEYS), values, max_size=6))
def test_any_toml_table_as_an_event_is_an_event_or_located_problems(doc: dict[str, Any]):
    text = toml_document(doc)
    assert isinstance(load_toml(text, source=SOURCE), dict)  # the writer above writes TOML
    assert_event_or_located(outcome(text))


@FUZZ_COMPOSING
@given(mutated_events())
def test_a_valid_event_with_random_values_is_an_event_or_located_problems(doc: dict[str, Any]):
    assert_event_or_located(outcome(toml_document(doc)))


@FUZZ_COMPOSING
@given(events_with_hostile_text())
def test_hostile_text_in_names_subjects_fields_and_addresses_never_makes_a_header(
    doc: dict[str, Any],
):
    assert_event_or_located(outcome(toml_document(doc)))


def test_the_hostile_text_property_composes_messages_not_only_errors():
    """A guard on the strategies: hostile but acceptable values do reach a message."""
    doc = base_event()
    doc["recipients"]["people"][0].update(name="\u202eAnna 🎉 <b>", email="ännä@exämple.org")
    doc["mail"][0]["subject"] = "{{ recipient.name }} {{ event.title }}"
    result = outcome(toml_document(doc))
    assert isinstance(result, Event)
    assert compose_every_message(result, everyone=True) == 5


@FUZZ
@given(st.text(max_size=3000))
def test_any_text_as_a_csv_gives_recipients_or_located_problems(text: str):
    problems = Collector(CSV_SOURCE)
    found = parse_csv(text, problems=problems)
    assert all(isinstance(r, Recipient) for _, r in found)
    if problems.problems:
        assert_located(Problems(problems.problems), CSV_SOURCE)


@FUZZ_COMPOSING
@given(
    st.lists(st.sampled_from(["email", "name", "language", "groups"]) | hostile_text, max_size=5),
    st.lists(st.lists(hostile_text | addresses, max_size=6), max_size=4),
    st.sampled_from([",", ";"]),
)
def test_a_csv_with_hostile_cells_gives_an_event_or_located_problems(
    columns: list[str], rows: list[list[str]], delimiter: str
):
    doc = base_event()
    doc["recipients"]["file"] = CSV_SOURCE.name
    text = csv_text([["email", *columns], *rows], delimiter=delimiter)
    assert_event_or_located(outcome(toml_document(doc), csv=text), SOURCE, CSV_SOURCE)


# -- mailer check on garbage --------------------------------------------------------------


def check(config: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert isinstance(result.exception, SystemExit), result.exception  # never a traceback
    assert "Traceback" not in result.output
    return result.exit_code, result.output.splitlines()


@settings(FUZZ, max_examples=100, suppress_health_check=list(HealthCheck))
@given(garbage=st.binary(max_size=1000), people=st.binary(max_size=300))
def test_check_on_garbage_exits_1_with_every_line_naming_the_file(
    tmp_path: Path, garbage: bytes, people: bytes
):
    config = make_project(tmp_path)
    single = tmp_path / "schedules" / "garbage.toml"
    single.write_bytes(garbage)
    folder = write_event(tmp_path, "folder", garbage.decode("utf-8", "replace"), people__csv=people)
    code, lines = check(config)
    assert code == 1
    *problems, summary = lines
    assert summary == "2 event files checked, 2 with problems"
    assert problems
    assert all(line.startswith((f"{single}: ", f"{folder}: ")) for line in problems), problems


# -- specific cases, on real files --------------------------------------------------------


def folder_event(root: Path, text: str, **files: bytes | str) -> Path:
    """`schedules/hostile/event.toml` with its files (`people__csv=`); returns the event file."""
    source = root / "schedules" / "hostile" / "event.toml"
    source.parent.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = source.parent / name.replace("__", ".")
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    source.write_text(text, encoding="utf-8")
    return source


def loaded_error(source: Path) -> MailerError:
    loaded = load_event(source, defaults=DEFAULTS)
    assert loaded.event is None and loaded.error is not None
    assert_located(loaded.error, source, source.parent / "people.csv")
    return loaded.error


def loaded_event(source: Path) -> Event:
    loaded = load_event(source, defaults=DEFAULTS)
    assert loaded.event is not None, loaded.error
    return loaded.event


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None
    return str(part.get_content())


def problem_lines(error: MailerError) -> list[str]:
    return str(error).splitlines()


PERSON = '[[recipients.people]]\nemail = "anna@example.org"\nname = {name}\n'
EVENT = 'title = "Förlabb"\nstarts = 2027-06-16T09:00:00\n{extra}\n{people}\n' + (
    '[[mail]]\nname = "invitation"\nsend_at = "start - 21d at 09:00"\n{mail}\n'
)


def event_text(*, name: str = "Anna", extra: str = "", mail: str = "", people: str | None = None):
    people = PERSON.format(name=toml_string(name)) if people is None else people
    return EVENT.format(extra=extra, people=people, mail=mail)


@pytest.mark.parametrize("name", ["Anna\r\nBcc: evil@example.org", "Anna\nTo: x@example.org"])
def test_crlf_in_a_name_is_refused_in_the_event_file_and_the_csv(tmp_path: Path, name: str):
    source = folder_event(tmp_path, event_text(name=name))
    assert [line.split(": ", 2)[1] for line in problem_lines(loaded_error(source))] == [
        "recipients.people[0].name"
    ]
    csv_event = event_text(people='[recipients]\nfile = "people.csv"\n')
    people = csv_text([["email", "name"], ["a@example.org", name]])
    source = folder_event(tmp_path, csv_event, people__csv=people)
    (line,) = problem_lines(loaded_error(source))
    assert line.startswith(f"{source.parent / 'people.csv'}: row 2.name: control characters")


def test_crlf_reaching_a_subject_is_refused_never_a_new_header(tmp_path: Path):
    # A free CSV column may hold line breaks (it is body text); in a subject it is refused.
    text = event_text(
        people='[recipients]\nfile = "people.csv"\n',
        mail='subject = "Hej {{ recipient.note }}"',
    )
    people = csv_text([["email", "note"], ["anna@example.org", "x\r\nBcc: evil@example.org"]])
    source = folder_event(tmp_path, text, people__csv=people)
    event = loaded_event(source)
    with pytest.raises(MailerError) as raised:
        OUTBOX.compose(event, event.mails[0], event.recipients[0], now=NOW)
    assert str(raised.value).startswith(f'{source}: mail[0] "invitation".subject: ')
    assert "line break" in str(raised.value)
    # A subject written with a line break is refused when rendered (so `check` lists it).
    for subject in ["Hej\r\nBcc: evil@example.org", "Hej\u2028Bcc: evil@example.org"]:
        source = folder_event(tmp_path, event_text(mail=f"subject = {toml_string(subject)}"))
        event = loaded_event(source)
        with pytest.raises(MailerError) as raised:
            OUTBOX.compose(event, event.mails[0], event.recipients[0], now=NOW)
        assert str(raised.value).startswith(f'{source}: mail[0] "invitation".subject: ')
    # The title, which subjects are made from, is refused where it is written.
    text = event_text().replace('"Förlabb"', '"Förlabb\\r\\nBcc: evil@example.org"')
    (line,) = problem_lines(loaded_error(folder_event(tmp_path, text)))
    assert ": title: must be one line" in line
    code, lines = check(make_project(tmp_path))
    assert code == 1 and lines[-1] == "1 event files checked, 1 with problems", lines


def test_script_and_jinja_in_a_name_are_escaped_and_never_run_as_a_template(tmp_path: Path):
    name = "<script>alert(1)</script> {{ 7*7 }} {% if true %}yes{% endif %}"
    subject = 'subject = "Hej {{ recipient.name }}"'
    source = folder_event(tmp_path, event_text(name=name, mail=subject))
    event = loaded_event(source)
    raw = OUTBOX.compose(event, event.mails[0], event.recipients[0], now=NOW)
    message = parse_message(raw)
    html, text = body(message, "html"), body(message, "plain")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; {{ 7*7 }} {% if true %}yes{% endif %}" in html
    assert "<script>" not in html and "49" not in html
    assert name in text and "49" not in text
    assert message["Subject"] == f"Hej {name}"
    (to,) = message["To"].addresses
    # Too long for one line, the name goes as encoded-words; Python's parser (not a mail
    # client) puts a space where they were split.
    assert to.addr_spec == "anna@example.org" and to.display_name.replace(" ", "") == name.replace(
        " ", ""
    )


@pytest.mark.parametrize(
    "subject", ["{{ 'x' * 10**12 }}", "{{ 'x'.ljust(10**12) }}", "{{ 10**5000 }}", "{{ 1/0 }}"]
)
def test_a_subject_expression_that_cannot_be_computed_is_an_input_error(
    tmp_path: Path, subject: str
):
    text = event_text(mail=f"subject = {toml_string(subject)}")
    event = loaded_event(folder_event(tmp_path, text))
    with pytest.raises(MailerError) as raised:
        OUTBOX.compose(event, event.mails[0], event.recipients[0], now=NOW)
    assert str(raised.value).startswith(f'{event.source}: mail[0] "invitation".subject: ')


@pytest.mark.parametrize(
    "path", ["../secret.csv", "../../etc/passwd", "/etc/passwd", "sub/../../x", "..\\x", "C:\\x"]
)
@pytest.mark.parametrize("key", ["file", "attach"])
def test_a_path_out_of_the_event_folder_is_refused(tmp_path: Path, key: str, path: str):
    (tmp_path / "schedules" / "secret.csv").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "schedules" / "secret.csv").write_text("email\nanna@example.org\n")
    source = folder_event(tmp_path, paths_event(key, path))
    (line,) = problem_lines(loaded_error(source))
    where = "recipients.file" if key == "file" else 'mail[0] "invitation".attach'
    assert line == f"{source}: {where}: {path!r} leaves the event's folder; name a file inside it"


def paths_event(key: str, path: str) -> str:
    if key == "file":
        return event_text(people=f"[recipients]\nfile = {toml_string(path)}\n")
    return event_text(mail=f"attach = [{toml_string(path)}]")


@pytest.mark.parametrize("key", ["file", "attach"])
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("outside", "link.csv leads outside the event's folder (a link?)"),
        ("loop", "link.csv is a loop of links"),
        ("fifo", "link.csv is not a regular file"),
        ("folder", "link.csv is not a regular file"),
    ],
)
def test_links_out_loops_and_special_files_are_refused(
    tmp_path: Path, key: str, target: str, expected: str
):
    source = folder_event(tmp_path, paths_event(key, "link.csv"))
    link = source.parent / "link.csv"
    if target == "outside":
        secret = tmp_path / "secret.csv"
        secret.write_text("email\nanna@example.org\n")
        os.symlink(secret, link)
    elif target == "loop":
        os.symlink(link, link)
    elif target == "fifo":
        os.mkfifo(link)  # reading it would block the service for ever
    else:
        link.mkdir()
    (line,) = problem_lines(loaded_error(source))
    where = "recipients.file" if key == "file" else 'mail[0] "invitation".attach'
    assert line == f"{source}: {where}: {expected}"


@pytest.mark.parametrize(
    ("key", "limit"), [("file", MAX_CSV_BYTES), ("attach", MAX_ATTACHMENT_BYTES)]
)
def test_a_50_mb_csv_or_attachment_is_refused_stating_the_limit(
    tmp_path: Path, key: str, limit: int
):
    source = folder_event(tmp_path, paths_event(key, "big.csv"))
    with (source.parent / "big.csv").open("wb") as big:
        big.truncate(50 << 20)  # sparse: instant, and no disk used
    (line,) = problem_lines(loaded_error(source))
    where = "recipients.file" if key == "file" else 'mail[0] "invitation".attach'
    assert line == f"{source}: {where}: big.csv is 52,428,800 bytes; the limit is {limit:,}"
    code, lines = check(make_project(tmp_path))
    assert code == 1 and f"{source}: {where}: big.csv is 52,428,800 bytes" in lines[0]


@pytest.mark.parametrize(
    ("label", "text", "expected"),
    [
        ("deep arrays", "x = " + "[" * 5000 + "]" * 5000, ": not valid TOML: arrays or tables"),
        ("deep tables", "x = " + "{a = " * 2000 + "1" + "}" * 2000, ": not valid TOML: arrays"),
        ("NUL in a path", paths_event("file", "a\x00b.csv"), ": recipients.file: 'a\\x00b.csv'"),
        ("a zone folder", event_text(extra='timezone = "Europe"'), ": timezone: expected a time"),
        ("a long zone", event_text(extra=f'timezone = "{"a" * 5000}"'), ": timezone: expected"),
        ("year 1", "title = 'x'\nstarts = 0001-01-01T00:00:00+14:00\n", ": starts: 0001-01-01"),
        ("year 1 local", "title = 'x'\nstarts = 0001-01-01T00:00:00\n", ": starts: 0001-01-01"),
        ("year 9999", "title = 'x'\nstarts = 9999-12-31T23:59:59-12:00\n", ": starts: 9999-12-31"),
        ("a huge shift", event_text(mail='expires = "start + 99999999999999d"'), "years 1-9999"),
        ("a 200 kB cell", None, ": row 2: cannot read the CSV from here on: field larger"),
        ("not UTF-8", b"title = '\xff\xfe'", ": event.toml is not UTF-8 text"),
        ("NUL", "title = 'x'\x00", ": not valid TOML: "),
    ],
)
def test_crafted_event_files_are_refused_with_file_and_key(
    tmp_path: Path, label: str, text: str | bytes | None, expected: str
):
    people = csv_text([["email", "name"], ["anna@example.org", "x" * 200_000]])
    if text is None:
        text = event_text(people='[recipients]\nfile = "people.csv"\n')
    source = folder_event(tmp_path, "", people__csv=people)
    source.write_bytes(text if isinstance(text, bytes) else text.encode())
    error = loaded_error(source)
    assert expected in problem_lines(error)[0], label


def test_very_long_names_and_subjects_are_composed_or_refused_quickly(tmp_path: Path):
    long = "Ä" * 10_000 + " 🎉" * 2_000 + ", [x]: <y@example.org>"
    at_limit = ("Å, " * MAX_SUBJECT_CHARS)[:MAX_SUBJECT_CHARS]
    subject = f"subject = {toml_string(at_limit)}"
    source = folder_event(tmp_path, event_text(name=long, mail=subject))
    event = loaded_event(source)
    raw = OUTBOX.compose(event, event.mails[0], event.recipients[0], now=NOW)
    message = parse_message(raw)
    assert_one_recipient(raw, event.recipients[0])
    assert message["Subject"] == at_limit.strip()
    # Folding a long subject costs ~0.1 ms per character for every recipient: refused.
    title = toml_string(long)
    source = folder_event(tmp_path, event_text(name=long).replace('"Förlabb"', title))
    event = loaded_event(source)
    with pytest.raises(MailerError) as raised:
        OUTBOX.compose(event, event.mails[0], event.recipients[0], now=NOW)
    assert re.match(
        rf'{source}: mail\[0\] "invitation".subject: rendering for anna@example.org: '
        rf"the subject is [\d,]+ characters long; the limit is {MAX_SUBJECT_CHARS:,}: 'Inbjudan",
        str(raised.value),
    )


async def test_a_recipient_listed_twice_in_another_case_gets_one_delivery(tmp_path: Path):
    make_project(tmp_path)
    people = csv_text([["email", "name"], ["Anna@Example.org", "Anna"], ["anna@EXAMPLE.ORG", "A"]])
    source = write_event(tmp_path, "forlabb", people__csv=people)
    source.write_text(event_text(people='[recipients]\nfile = "people.csv"\n'))
    (line,) = problem_lines(loaded_error(source))
    assert line == (
        f"{source}: people.csv row 3.email: anna@example.org is already listed at people.csv row 2"
    )
    # Fixed to one line, sent; then the case of the address changes: still the same person.
    (source.parent / "people.csv").write_text(csv_text([["email"], ["Anna@Example.org"]]))
    async with engine_at(tmp_path, ManualClock(INVITATION_DUE)) as engine:
        assert (await engine.step()).handled == 1
        (source.parent / "people.csv").write_text(csv_text([["email"], ["ANNA@example.org"]]))
        await engine.catalog.sync([source])
        assert (await engine.step()).handled == 0
        assert await states(engine) == {"invitation": {"sent": 1}}
    assert [to for to, _ in maildir(tmp_path)] == ["Anna@example.org"]


# -- the running service keeps the last valid plan ---------------------------------------

HOSTILE_EDITS: dict[str, bytes] = {
    "random bytes": bytes(range(256)),
    "not UTF-8": b"title = '\xff'\n",
    "empty": b"",
    "deep nesting": b"x = " + b"[" * 5000 + b"]" * 5000,
    "NUL in a path": paths_event("file", "a\x00b.csv").encode(),
    "a zone folder": event_text(extra='timezone = "Europe"').encode(),
    "year 1": b"title = 'x'\nstarts = 0001-01-01T00:00:00+14:00\n",
    "CRLF in a name": event_text(name="Anna\r\nBcc: evil@example.org").encode(),
    "a path out": paths_event("attach", "../../../../../../etc/passwd").encode(),
}


@pytest.mark.parametrize("edit", list(HOSTILE_EDITS))
async def test_an_invalid_edit_never_cancels_the_last_valid_plan(tmp_path: Path, edit: str):
    make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    clock = ManualClock(INVITATION_DUE - timedelta(days=1))
    async with engine_at(tmp_path, clock) as engine:
        planned = await states(engine)
        assert planned == {"invitation": {"scheduled": 2}, "reminder": {"scheduled": 2}}
        source.write_bytes(HOSTILE_EDITS[edit])
        await engine.catalog.sync([source])
        assert await states(engine) == planned
        error = (await engine.store.events())["forlabb"].error
        assert error and all(line.startswith(f"{source}: ") for line in error.splitlines())
        clock.set(INVITATION_DUE)
        assert (await engine.step()).handled == 2  # sent under the last valid version
    assert len(maildir(tmp_path)) == 2
