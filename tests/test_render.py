"""Tests for mailer.render: the shipped templates in both languages, dates, language choice,
escaping, and every template fault turned into an InputError naming file and key.

The sample event is the förlabb of the seeds: Wednesday 16 June 2027, 09:00-12:00, Stockholm.
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer.errors import InputError
from mailer.events import Event, Mail, Organiser, Recipient
from mailer.render import Renderer

TEMPLATES = Path(__file__).parents[1] / "templates"
STHLM = ZoneInfo("Europe/Stockholm")
SOURCE = Path("schedules/forlabb-skolnarvaro/event.toml")
SHIPPED = ("invitation", "reminder", "report", "follow-up-lab")

EVENT = Event(
    id="forlabb-skolnarvaro",
    source=SOURCE,
    title="Utforskande förlabb: Skolnärvaro",
    starts=datetime(2027, 6, 16, 9, 0, tzinfo=STHLM),
    ends=datetime(2027, 6, 16, 12, 0, tzinfo=STHLM),
    timezone=STHLM,
    language="sv",
    location="Mälardalens universitet, Västerås",
    organiser=Organiser("Samhällskontraktet", "samhallskontraktet@example.org"),
    description="Vi tar ett första steg mot tydligare samverkan.\n\nVi bekantar oss med varandra.",
    program=(
        {"at": "09:00", "title": "Välkommen och inledning", "speaker": "Mait Walderlo"},
        {"at": "10:30", "title": "Gemensamma utmaningar"},
    ),
)
BARE = dataclasses.replace(EVENT, location=None, organiser=None, description=None, program=())
ANNA = Recipient("anna@example.org", "Anna Andersson")
NAMELESS = Recipient("info@example.org")


def mail(name: str = "invitation", **changes: object) -> Mail:
    base = Mail(
        index=0, name=name, due=datetime(2027, 5, 26, 9, 0, tzinfo=STHLM),
        expires=datetime(2027, 6, 16, 9, 0, tzinfo=STHLM), to=("all",), template=name,
        attach=(SOURCE.parent / "slutrapport.pdf",), calendar=True,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@functools.cache
def renderer(templates: Path = TEMPLATES, default: str = "sv") -> Renderer:
    """Shared per folder, as in the service: compiled templates are cached, the suite stays fast."""
    return Renderer(templates, default_language=default)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def fault(templates: Path, m: Mail, who: Recipient = ANNA) -> InputError:
    with pytest.raises(InputError) as caught:
        renderer(templates).render_mail(EVENT, m, who)
    return caught.value


# ---------------------------------------------------------------- the shipped templates

GREETINGS = {
    ("sv", "Anna Andersson"): "Hej Anna Andersson!", ("sv", ""): "Hej!",
    ("en", "Anna Andersson"): "Dear Anna Andersson,", ("en", ""): "Hello,",
}
SUBJECTS = {
    ("invitation", "sv"): "Inbjudan: Utforskande förlabb: Skolnärvaro 16 juni",
    ("invitation", "en"): "Invitation: Utforskande förlabb: Skolnärvaro, 16 June",
    ("reminder", "sv"): "Påminnelse: Utforskande förlabb: Skolnärvaro 16 juni",
    ("reminder", "en"): "Reminder: Utforskande förlabb: Skolnärvaro, 16 June",
    ("report", "sv"): "Rapport inför Utforskande förlabb: Skolnärvaro",
    ("report", "en"): "Report ahead of Utforskande förlabb: Skolnärvaro",
    ("follow-up-lab", "sv"): "Inbjudan till uppföljande labb: Utforskande förlabb: Skolnärvaro",
    ("follow-up-lab", "en"): "Invitation to a follow-up lab: Utforskande förlabb: Skolnärvaro",
}
REPLY = {"sv": "Svara på det här mejlet om du har frågor.",
         "en": "Reply to this email if you have questions."}
CALENDAR = {"sv": "kalenderfil", "en": "calendar file"}


@pytest.mark.parametrize("event", [EVENT, BARE], ids=["full", "bare"])
@pytest.mark.parametrize("who", [ANNA, NAMELESS], ids=["named", "nameless"])
@pytest.mark.parametrize("language", ["sv", "en"])
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_mail_renders(name: str, language: str, who: Recipient, event: Event) -> None:
    out = renderer().render_mail(dataclasses.replace(event, language=language), mail(name), who)
    assert (out.language, out.subject) == (language, SUBJECTS[name, language])
    assert out.html is not None and f'<html lang="{language}">' in out.html
    assert f"<title>{out.subject}</title>" in out.html
    for part in (out.text, out.html):
        assert GREETINGS[language, who.name] in part
        assert REPLY[language] in part and CALENDAR[language] in part
        assert "None" not in part
        assert ("Samhällskontraktet" in part) is (event.organiser is not None)
        has_location = event.location is not None and name != "follow-up-lab"
        assert ("Mälardalens universitet" in part) is has_location
    assert "<" not in out.text and "\n\n\n" not in out.text and out.text.endswith(".\n")


@pytest.mark.parametrize("name", ["invitation", "reminder"])
def test_invitation_and_reminder_show_when_where_and_programme(name: str) -> None:
    sv = renderer().render_mail(EVENT, mail(name), ANNA)
    assert "När: onsdag 16 juni 2027 kl. 09:00–12:00\nVar: Mälardalens universitet" in sv.text
    programme = "Program\n09:00  Välkommen och inledning\n       Mait Walderlo\n10:30  Gemensamma"
    assert programme in sv.text
    en = renderer().render_mail(EVENT, mail(name, language="en"), ANNA)
    assert "When: Wednesday 16 June 2027, 09:00–12:00\nWhere: Mälardalens" in en.text
    assert "Programme\n09:00  Välkommen" in en.text
    assert en.html is not None and "<td" in en.html and ">Mait Walderlo</span>" in en.html


def test_invitation_shows_the_description_as_paragraphs() -> None:
    out = renderer().render_mail(EVENT, mail(), ANNA)
    assert "samverkan.\n\nVi bekantar oss" in out.text
    assert out.html is not None
    assert '<p style="margin:0 0 16px 0;">Vi bekantar oss med varandra.</p>' in out.html


@pytest.mark.parametrize("language", ["sv", "en"])
def test_report_lists_attachments_by_file_name(language: str) -> None:
    out = renderer().render_mail(EVENT, mail("report", language=language), ANNA)
    assert out.html is not None
    assert "\n- slutrapport.pdf\n" in out.text and "<li>slutrapport.pdf</li>" in out.html
    assert "schedules/" not in out.text + out.html


@pytest.mark.parametrize(
    "data,sv,en",
    [
        ({"followup_starts": datetime(2027, 9, 7, 9, 0), "followup_ends": "2027-09-07T12:00"},
         "När: tisdag 7 september 2027 kl. 09:00–12:00",
         "When: Tuesday 7 September 2027, 09:00–12:00"),
        ({"followup_starts": datetime(2027, 9, 7, 13, 0)},
         "När: tisdag 7 september 2027 kl. 13:00", "When: Tuesday 7 September 2027 at 13:00"),
        ({"followup": "7 eller 8 september"},
         "När: 7 eller 8 september", "When: 7 eller 8 september"),
        ({}, "Datum meddelar vi inom kort.", "We will let you know the date shortly."),
    ],
)
def test_follow_up_lab_dates(data: dict[str, object], sv: str, en: str) -> None:
    event = dataclasses.replace(EVENT, data=data)
    assert sv in renderer().render_mail(event, mail("follow-up-lab"), ANNA).text
    assert en in renderer().render_mail(event, mail("follow-up-lab", language="en"), ANNA).text


@pytest.mark.parametrize("name", SHIPPED)
def test_check_passes_the_shipped_templates(name: str) -> None:
    assert renderer().check_mail(EVENT, mail(name)) == []


# ---------------------------------------------------------------- dates and language

@pytest.mark.parametrize(
    "language,expression,expected",
    [
        ("sv", "event.starts|date", "onsdag 16 juni 2027"),
        ("sv", "event.starts|time", "09:00"),
        ("sv", "event.starts|datetime", "onsdag 16 juni 2027 kl. 09:00"),
        ("sv", "event.starts|span(event.ends)", "onsdag 16 juni 2027 kl. 09:00–12:00"),
        ("sv", "event.starts|shortdate", "16 juni"),
        ("sv", "event.starts|span(event.next_day)",
         "onsdag 16 juni 2027 kl. 09:00 – torsdag 17 juni 2027 kl. 12:00"),
        ("en", "event.starts|date", "Wednesday 16 June 2027"),
        ("en", "event.starts|datetime", "Wednesday 16 June 2027 at 09:00"),
        ("en", "event.starts|span(event.ends)", "Wednesday 16 June 2027, 09:00–12:00"),
        ("en", "event.starts|shortdate", "16 June"),
        ("sv", "event.utc|datetime", "onsdag 16 juni 2027 kl. 07:00"),  # in its own zone
        ("sv", "event.deadline|date", "fredag 4 juni 2027"),  # ISO text from a free key
        ("sv", "mail.due|date", "onsdag 26 maj 2027"),
    ],
)
def test_date_filters(language: str, expression: str, expected: str) -> None:
    data = {"next_day": datetime(2027, 6, 17, 12, 0, tzinfo=STHLM), "deadline": "2027-06-04",
            "utc": datetime(2027, 6, 16, 7, 0, tzinfo=UTC)}
    event = dataclasses.replace(EVENT, data=data)
    m = mail(language=language, subject=f"{{{{ {expression} }}}}")
    assert renderer().render_mail(event, m, ANNA).subject == expected


def test_a_language_without_a_date_style_is_formatted_in_english(tmp_path: Path) -> None:
    write(tmp_path, {"fi/x.txt.j2": "{% block subject %}{{ event.starts|datetime }}{% endblock %}"})
    out = renderer(tmp_path).render_mail(dataclasses.replace(EVENT, language="fi"), mail("x"), ANNA)
    assert (out.language, out.subject) == ("fi", "Wednesday 16 June 2027 at 09:00")


@pytest.mark.parametrize(
    "recipient,mail_language,event_language,default,expected",
    [
        ("en", "sv", "sv", "sv", "en"),  # the recipient's own language first
        (None, "en", "sv", "sv", "en"),  # then the mail's
        (None, None, "en", "sv", "en"),  # then the event's
        ("de", None, "en", "sv", "en"),  # no German templates: silently the event's
        ("de", "de", "fi", "en", "en"),  # nothing else: the default
        ("EN-gb", None, "sv", "sv", "en"),  # a regional code falls back to its base
        ("../en", None, "sv", "sv", "sv"),  # not a language code: ignored
    ],
)
def test_language_chain(
    recipient: str | None, mail_language: str | None, event_language: str, default: str,
    expected: str,
) -> None:
    event = dataclasses.replace(EVENT, language=event_language)
    m, who = mail(language=mail_language), dataclasses.replace(ANNA, language=recipient)
    assert renderer(default=default).language_for(event, m, who) == expected
    out = renderer(default=default).render_mail(event, m, who)
    assert out.language == expected
    assert GREETINGS[expected, ANNA.name] in out.text


# ---------------------------------------------------------------- hostile values

@pytest.mark.parametrize(
    "name", ["<script>alert(1)</script>", "{{ 7*7 }}", "{% if 1 %}x{% endif %}"]
)
def test_names_are_data_never_markup_or_template_code(name: str) -> None:
    who = dataclasses.replace(ANNA, name=name)
    out = renderer().render_mail(EVENT, mail(subject="Hej {{ recipient.name }}"), who)
    assert out.html is not None
    assert out.subject == f"Hej {name}" and f"Hej {name}!" in out.text
    assert "<script>" not in out.html and "49" not in out.subject + out.text + out.html
    if "<" in name:
        assert "Hej &lt;script&gt;alert(1)&lt;/script&gt;!" in out.html


def test_the_sandbox_refuses_python_internals() -> None:
    m = mail(subject="{{ ''.__class__.__mro__ }}")
    assert fault(TEMPLATES, m).key == 'mail[0] "invitation".subject'


@pytest.mark.parametrize(
    "subject,name",
    [
        ("Hej {{ recipient.name }}", "Anna\nBcc: evil@example.org"),
        ("Hej {{ recipient.name }}", "Anna\rX"),
        ("Hej {{ recipient.name }}", "A\u2028B"),
        ("{{ recipient.name }}", ""),
        ("   ", "Anna"),
    ],
)
def test_a_subject_must_be_one_nonempty_line(subject: str, name: str) -> None:
    err = fault(TEMPLATES, mail(subject=subject), dataclasses.replace(ANNA, name=name))
    assert err.key == 'mail[0] "invitation".subject'
    assert "anna@example.org" in err.message


def test_subject_from_the_mail_overrides_the_block_and_is_tidied() -> None:
    m = mail(subject="  Välkommen,\t{{ recipient.name }}  & välkommen åter ")
    expected = "Välkommen, Anna Andersson & välkommen åter"
    assert renderer().render_mail(EVENT, m, ANNA).subject == expected


# ---------------------------------------------------------------- template faults

def test_an_undefined_variable_names_the_recipient_and_line(tmp_path: Path) -> None:
    write(tmp_path / "templates", {"sv/x.txt.j2": "{% block subject %}Hej{% endblock %}\n"
                                                  "Telefon: {{ recipient.phone }}\n"})
    err = fault(tmp_path / "templates", mail("x"))
    assert err.key == 'mail[0] "x".template' and err.source == str(SOURCE)
    assert err.message == ("templates/sv/x.txt.j2 line 2: rendering for anna@example.org: "
                           "'dict object' has no attribute 'phone'")


@pytest.mark.parametrize(
    "files,where",
    [
        ({"sv/x.html.j2": "{% block subject %}Hej{% endblock %}\n<p>{{ recipient.name }</p>"},
         "templates/sv/x.html.j2 line 2:"),
        ({"sv/x.html.j2": '{% extends "layout.html.j2" %}{% block subject %}Hej{% endblock %}',
          "sv/layout.html.j2": "<p>\n\n{% if %}</p>"}, "templates/sv/layout.html.j2 line 3:"),
        ({"sv/x.txt.j2": "{% block subject %}Hej{% endblock %}",
          "en/x.txt.j2": "{% block subject %}Hi{% endblock %}{% for %}"},
         "templates/en/x.txt.j2 line 1:"),
    ],
    ids=["template", "its-layout", "another-language"],
)
def test_a_syntax_error_names_file_and_line(
    tmp_path: Path, files: dict[str, str], where: str
) -> None:
    templates = write(tmp_path / "templates", files)
    [err] = renderer(templates).check_mail(EVENT, mail("x"))
    assert err.key == 'mail[0] "x".template' and err.message.startswith(where)
    if "/sv/" in where:
        assert fault(templates, mail("x")).message.startswith(where)


@pytest.mark.parametrize(
    "files,message",
    [
        ({"sv/x.txt.j2": "{% block subject %}s{% endblock %}{{ event.title|date }}"},
         "date: expected a date or datetime, got 'Utforskande förlabb: Skolnärvaro'"),
        ({"sv/x.txt.j2": "{% block subject %}{{ 1 // 0 }}{% endblock %}"}, "ZeroDivisionError"),
        ({"sv/x.txt.j2": '{% extends "nowhere.txt.j2" %}{% block subject %}s{% endblock %}'},
         "template 'nowhere.txt.j2' not found"),
        ({"sv/x.txt.j2": "Hej"}, "no subject"),
    ],
)
def test_other_faults_are_input_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    err = fault(write(tmp_path, files), mail("x", subject=None))
    assert err.key == 'mail[0] "x".template' and message in err.message


def test_check_finds_a_missing_subject_in_any_language(tmp_path: Path) -> None:
    templates = write(tmp_path, {"sv/x.txt.j2": "{% block subject %}Hej{% endblock %}",
                                 "en/x.html.j2": "<p>Hi</p>"})
    [err] = renderer(templates).check_mail(EVENT, mail("x"))
    assert (err.key, err.message[:11]) == ('mail[0] "x".template', "no subject:")
    assert renderer(templates).check_mail(EVENT, mail("x", subject="Hej")) == []


def test_a_missing_template_names_every_place_looked(tmp_path: Path) -> None:
    templates = write(tmp_path / "templates", {"sv/other.txt.j2": ""})
    expected = ('no template "x" (looked for x.html.j2 / x.txt.j2 in '
                "templates/en, templates/sv, templates)")
    m = mail("x", language="en")
    assert fault(templates, m).message == expected
    [err] = renderer(templates).check_mail(EVENT, m)
    assert (err.key, err.message) == ('mail[0] "x".template', expected)


@pytest.mark.parametrize("template", ["../secret", "a/../../b", "/etc/passwd", ""])
def test_a_template_name_cannot_leave_the_folder(template: str) -> None:
    err = fault(TEMPLATES, mail(template=template))
    assert err.key == 'mail[0] "invitation".template' and "invalid template name" in err.message


# ---------------------------------------------------------------- text derived from HTML

def test_the_text_part_is_derived_from_html_when_there_is_no_text_template(tmp_path: Path) -> None:
    html = ("<html><head><title>t</title><style>p {}</style></head><body><h1>Rubrik</h1>"
            "<p>{% block subject %}Om &amp; {{ recipient.name }}{% endblock %}</p>"
            "<p>Rad ett<br>rad två</p><ul><li>ett</li><li>två</li></ul>"
            '<table><tr><td>10:00</td><td>Inledning</td></tr></table>'
            '<p><a href="https://example.org/anmalan">Anmäl dig</a> eller '
            '<a href="mailto:info@example.org">info@example.org</a></p></body></html>')
    templates = write(tmp_path / "templates", {"sv/x.html.j2": html})
    out = renderer(templates).render_mail(EVENT, mail("x"), dataclasses.replace(ANNA, name="A&B"))
    assert out.subject == "Om & A&B"  # the HTML subject block, unescaped
    assert out.text == ("Rubrik\n\nOm & A&B\n\nRad ett\nrad två\n\n- ett\n- två\n\n"
                        "10:00  Inledning\n\nAnmäl dig (https://example.org/anmalan) eller "
                        "info@example.org\n")
