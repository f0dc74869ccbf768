"""What `check` and the service find before any mail is rendered (issue 12, items 7, 8, 10, 18):
a language with no templates, a template that needs an attachment the mail lacks, a free key
written as text where a template formats it as a date; and `preview --language`.

Each is judged by `checking.judge_event`, which `check` and the running service share."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from mailer import judging
from mailer.checking import judge_event
from mailer.cli import main
from mailer.events import EventDefaults
from mailer.render import Renderer
from tests.project import EVENT, TEMPLATES, make_project, write_event

DEFAULTS = EventDefaults(
    language="sv", timezone=ZoneInfo("Europe/Stockholm"), max_lateness=timedelta(hours=1)
)


def judged(source: Path, templates: Path = TEMPLATES) -> list[str]:
    """Every problem judge_event finds, as the lines check prints."""
    loaded = judge_event(
        source, defaults=DEFAULTS, renderer=Renderer(templates, default_language="sv")
    )
    if loaded.error is None:
        return []
    return [str(p) for p in getattr(loaded.error, "problems", [loaded.error])]


def mailer(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


# ---------------------------------------------------------------- 7: a language with no templates


def test_an_event_language_with_no_templates_is_an_error_naming_those_there_are(tmp_path: Path):
    source = write_event(
        tmp_path, "forlabb", EVENT.replace("\nlocation", '\nlanguage = "se"\nlocation')
    )
    problems = judged(source)
    assert len(problems) == 1, problems
    assert 'language: no templates in "se"' in problems[0]
    assert '"en" (English), "sv" (Swedish)' in problems[0]


def test_a_mail_language_with_no_templates_is_an_error_naming_the_mail(tmp_path: Path):
    text = EVENT.replace('to = ["registered"]', 'to = ["registered"]\nlanguage = "de"')
    problems = judged(write_event(tmp_path, "forlabb", text))
    assert len(problems) == 1, problems
    assert 'mail[1] "reminder".language: no templates in "de"' in problems[0]


def test_a_regional_language_of_one_there_is_passes(tmp_path: Path):
    text = EVENT.replace("\nlocation", '\nlanguage = "sv-FI"\nlocation')
    assert judged(write_event(tmp_path, "forlabb", text)) == []


def test_a_recipients_language_with_no_templates_falls_back_with_a_note(tmp_path: Path):
    """People cannot all be served: they get the event's language, and check says so."""
    text = EVENT.replace('language = "en"', 'language = "de"')
    source = write_event(tmp_path, "forlabb", text)
    loaded = judge_event(
        source, defaults=DEFAULTS, renderer=Renderer(TEMPLATES, default_language="sv")
    )
    assert loaded.error is None
    assert any('"de"' in note and "1 recipient" in note for note in loaded.notes), loaded.notes


def test_check_refuses_the_unknown_language(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb", EVENT.replace("\nlocation", '\nlanguage = "se"\nlocation'))
    code, output = mailer("check", "-c", str(config))
    assert code == 1
    assert 'forlabb.toml: language: no templates in "se"' in output


# ---------------------------------------------------------------- 8: what a template needs

REPORT = """
[[mail]]
name = "report"
send_at = "start - 7d at 09:00"
to = ["registered"]
"""


def test_a_report_without_an_attachment_is_an_error(tmp_path: Path):
    problems = judged(write_event(tmp_path, "forlabb", EVENT + REPORT))
    assert problems == [
        f'{tmp_path}/schedules/forlabb.toml: mail[2] "report": the template "report" needs an '
        'attachment (attach = ["rapport.pdf"]) or report_url in the event file; this mail has '
        "none of these"
    ]


@pytest.mark.parametrize("language", ["sv", "en"])
def test_a_report_online_needs_no_attachment_and_says_so(tmp_path: Path, language: str):
    """`needs: attachment or event.report_url`: the report on the web is the report too."""
    config = make_project(tmp_path)
    text = EVENT.replace("\nlocation", '\nreport_url = "https://example.org/r"\nlocation')
    write_event(tmp_path, "forlabb", text + REPORT + f'language = "{language}"\n')
    assert judged(tmp_path / "schedules" / "forlabb.toml") == []
    out = tmp_path / "p"
    code, output = mailer("preview", "-c", str(config), "forlabb", "report", "--out", str(out))
    assert code == 0, output
    body = (out / "forlabb" / "report" / "anna@example.org.html").read_text()
    assert "https://example.org/r" in body and "också" not in body and "also" not in body


def test_a_report_with_an_attachment_passes(tmp_path: Path):
    text = EVENT + REPORT + 'attach = ["rapport.pdf"]\n'
    assert judged(write_event(tmp_path, "forlabb", text, rapport__pdf=b"%PDF-1.4\n")) == []


def test_an_organisers_template_states_its_needs_in_a_comment(tmp_path: Path):
    templates = tmp_path / "templates"
    (templates / "sv").mkdir(parents=True)
    (templates / "sv" / "invitation.txt.j2").write_text(
        "{# needs: calendar #}\n{% block subject %}Hej{% endblock %}\nHej\n"
    )
    (templates / "sv" / "reminder.txt.j2").write_text(
        "{#- needs: attachment, program, event.signup_url -#}\n"
        "{% block subject %}Hej{% endblock %}\nHej\n"
    )
    text = EVENT.replace("calendar = true", "calendar = false")
    problems = judged(write_event(tmp_path, "forlabb", text), templates)
    assert any(
        'mail[0] "invitation": the template "invitation" needs a calendar (calendar = true)' in p
        for p in problems
    ), problems
    assert any(
        'templates/sv/reminder.txt.j2: needs: unknown "program" (known: attachment, calendar, '
        "event.<key>)" in p
        for p in problems
    ), problems
    assert any(
        'mail[1] "reminder": the template "reminder" needs signup_url in the event file' in p
        for p in problems
    ), problems


def test_a_template_edited_to_state_a_need_is_judged_by_it_once_its_facts_are_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """One renderer judges many events (the service's): a template's facts are looked up
    once per FACTS_FRESH_S, then again, so an edit is seen without a restart."""
    templates = tmp_path / "templates"
    (templates / "sv").mkdir(parents=True)
    for name in ("invitation", "reminder"):
        (templates / "sv" / f"{name}.txt.j2").write_text("{% block subject %}Hej{% endblock %}\n")
    renderer = Renderer(templates, default_language="sv")
    source = write_event(tmp_path, "forlabb", EVENT.replace("calendar = true", "calendar = false"))

    def problems() -> list[str]:
        loaded = judge_event(source, defaults=DEFAULTS, renderer=renderer)
        return [] if loaded.error is None else [str(p) for p in loaded.error.problems]

    assert problems() == []
    (templates / "sv" / "invitation.txt.j2").write_text(
        "{# needs: calendar #}\n{% block subject %}Hej{% endblock %}\n"
    )
    monkeypatch.setattr(judging, "FACTS_FRESH_S", 3600.0)
    assert problems() == []  # within the hour: the facts looked up before
    monkeypatch.setattr(judging, "FACTS_FRESH_S", 0.0)
    assert any('the template "invitation" needs a calendar' in p for p in problems())


def test_check_refuses_the_report_without_an_attachment(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb", EVENT + REPORT)
    code, output = mailer("check", "-c", str(config))
    assert code == 1
    assert 'the template "report" needs an attachment' in output


# ---------------------------------------------------------------- 10: a date written as text


def test_a_free_key_used_as_a_date_but_written_as_text_is_one_error_naming_the_key(tmp_path: Path):
    config = make_project(tmp_path)
    text = EVENT.replace("\nlocation", '\nregistration_deadline = "14 oktober"\nlocation')
    write_event(tmp_path, "forlabb", text)
    code, output = mailer("check", "-c", str(config))
    assert code == 1
    lines = [line for line in output.splitlines() if "registration_deadline" in line]
    assert lines == [
        f"{tmp_path}/schedules/forlabb.toml: registration_deadline: write a date, "
        '2027-10-14, not text ("14 oktober"): the templates format it as a date'
    ], output


@pytest.mark.parametrize("value", ["2027-10-14", "2027-10-14T12:00:00", '"2027-10-14"'])
def test_a_free_key_written_as_a_date_passes(tmp_path: Path, value: str):
    text = EVENT.replace("\nlocation", f"\nregistration_deadline = {value}\nlocation")
    assert judged(write_event(tmp_path, "forlabb", text)) == []


def test_a_date_key_as_text_in_a_span_argument_is_found(tmp_path: Path):
    text = (
        EVENT.replace(
            "\nlocation",
            '\nfollowup_starts = 2027-09-07T13:00:00\nfollowup_ends = "kl 16"\nlocation',
        )
        + '[[mail]]\nname = "follow-up-lab"\nsend_at = "end + 1d at 09:00"\nto = ["all"]\n'
    )
    problems = judged(write_event(tmp_path, "forlabb", text))
    assert len(problems) == 1 and problems[0].split(": ", 1)[1].startswith(
        "followup_ends: write a date"
    ), problems


# ---------------------------------------------------------------- 18: preview --language

SWEDES_ONLY = EVENT.replace('language = "en"\n', "")


def test_preview_language_shows_a_mail_in_english_to_a_group_of_swedes(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb", SWEDES_ONLY)
    out = tmp_path / "p"
    args = ("preview", "-c", str(config), "forlabb", "reminder", "--out", str(out))
    code, output = mailer(*args, "--language", "en")
    assert code == 0, output
    emls = sorted((out / "forlabb" / "reminder").glob("*.eml"))
    assert [p.name for p in emls] == ["anna@example.org.eml"]
    msg = message_from_bytes(emls[0].read_bytes(), policy=policy.default)
    assert msg["Content-Language"] == "en"
    assert msg["Subject"].startswith("Reminder")


def test_preview_language_with_a_recipient(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb", SWEDES_ONLY)
    out = tmp_path / "p"
    code, output = mailer(
        "preview",
        "-c",
        str(config),
        "forlabb",
        "reminder",
        "--out",
        str(out),
        "--language",
        "en",
        "--recipient",
        "bjorn@example.org",
    )
    assert code == 0, output
    raw = (out / "forlabb" / "reminder" / "bjorn@example.org.eml").read_bytes()
    assert message_from_bytes(raw, policy=policy.default)["Content-Language"] == "en"


def test_preview_in_a_language_with_no_templates_lists_those_there_are(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb", SWEDES_ONLY)
    code, output = mailer(
        "preview",
        "-c",
        str(config),
        "forlabb",
        "reminder",
        "--language",
        "se",
        "--out",
        str(tmp_path / "p"),
    )
    assert code == 1
    assert 'no templates in "se"' in output and '"en" (English), "sv" (Swedish)' in output
