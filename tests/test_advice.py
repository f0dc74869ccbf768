"""What `check`, `status` and `rehearse` show of the calendar (SPEC §14): the weekday of every
due time, in the organiser's language, and a warning (exit 0) for a mail due before the event
on a weekend or a public holiday. Midsommarafton 2031 is Friday 20 June."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from mailer.cli import main
from mailer.config import load_settings
from tests.project import make_project, write_event
from tests.test_commands import plan

MIDSUMMER = """
title = "Seminarium efter midsommar"
starts = 2031-06-23T09:00:00
report_url = "https://example.org/rapport.pdf"

[[recipients.people]]
email = "anna@example.org"

[[mail]]
name = "report"
send_at = "start - 3d at 08:00"

[[mail]]
name = "reminder"
send_at = "start - 1 workdays at 09:00"

[[mail]]
name = "follow-up-lab"
template = "reminder"
send_at = "end + 5d at 10:00"
"""


def english(config: Path) -> Path:
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[sender]\n", '[sender]\nlanguage = "en"\n'), encoding="utf-8")
    return config


def test_check_shows_weekdays_and_warns_of_a_mail_on_midsommarafton(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "seminarium", MIDSUMMER)
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert (
        'warning schedules/seminarium.toml: mail[0] "report".send_at: due fre 2031-06-20 08:00, '
        "Midsommarafton, a day off in SE"
    ) in result.output.replace(str(tmp_path) + "/", "")
    assert "    report: fre 2031-06-20 08:00, to 1" in result.output
    assert "    reminder: tors 2031-06-19 09:00, to 1" in result.output  # workdays skip it
    assert "follow-up-lab" not in result.output.split("ok ")[0]  # after the event: no warning
    assert "lör 2031-06-28 10:00" in result.output  # shown, not warned of


def test_check_in_english_names_days_in_english(tmp_path: Path):
    config = english(make_project(tmp_path))
    write_event(tmp_path, "seminarium", MIDSUMMER)
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "due Fri 2031-06-20 08:00, Midsummer Eve, a day off in SE" in result.output
    assert "    reminder: Thu 2031-06-19 09:00, to 1" in result.output


async def test_status_and_rehearse_show_the_weekday_of_each_due_time(tmp_path: Path):
    config = make_project(tmp_path)
    source = write_event(tmp_path, "seminarium", MIDSUMMER)
    await plan(load_settings(config))
    shown = await asyncio.to_thread(CliRunner().invoke, main, ["status", "-c", str(config)])
    assert "fre 2031-06-20 08:00" in shown.output and "tors 2031-06-19 09:00" in shown.output
    rehearsed = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        [
            "rehearse",
            "-c",
            str(english(config)),
            str(source),
            "--seconds",
            "1",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert rehearsed.exit_code == 0, rehearsed.output
    assert "Fri 2031-06-20 08:00 CEST" in rehearsed.output
