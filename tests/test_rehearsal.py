"""`mailer rehearse` on the shipped examples: every message in a scratch Maildir, nothing else."""

from __future__ import annotations

import hashlib
import mailbox
import shutil
from email import message_from_binary_file, policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.config import load_settings
from mailer.sources import defaults_for, load_event
from tests.project import REPO, make_project, write_event


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def received(maildir: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    box = mailbox.Maildir(
        maildir, create=False, factory=lambda f: message_from_binary_file(f, policy=policy.default)
    )
    return sorted(
        (
            m["To"].addresses[0].addr_spec,
            m["Content-Language"],
            tuple(a.get_filename() for a in m.iter_attachments()),
        )
        for m in box
    )


@pytest.mark.parametrize("event", ["seminarium-skolfranvaro", "forlabb-skolnarvaro"])
def test_rehearsing_a_shipped_example_plays_every_mail_and_touches_nothing(
    tmp_path: Path, event: str
):
    project = tmp_path / "project"
    shutil.copytree(REPO / "schedules", project / "schedules")
    shutil.copy(REPO / "config.example.toml", project / "config.toml")
    (project / "config.toml").write_text(
        (project / "config.toml")
        .read_text()
        .replace('templates = "templates"', f'templates = "{REPO / "templates"}"')
    )
    before = fingerprint(project)
    out = tmp_path / "rehearsal"
    result = CliRunner().invoke(
        main,
        [
            "rehearse",
            "-c",
            str(project / "config.toml"),
            str(project / "schedules" / event / "event.toml"),
            "--seconds",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert fingerprint(project) == before  # no database, no Maildir, no edit in the project
    assert f"Maildir with every message: {out / 'maildir'}" in result.output
    messages = received(out / "maildir")
    if event == "seminarium-skolfranvaro":
        # invitation to all four (with the .ics), report with the PDF and reminder to the three
        # registered; James reads English.
        assert len(messages) == 4 + 3 + 3
        assert messages.count(("james.taylor@example.org", "en", ("slutrapport.pdf",))) == 1
        assert (
            messages.count(("hanna.berg@example.org", "sv", ("seminarium-skolfranvaro.ics",))) == 1
        )
        assert "report" in result.output and "1 en, 2 sv" in result.output
    else:
        assert len(messages) == 5 + 4  # invitation to all, reminder to the registered
        assert "nobody yet" in result.output  # the follow-up lab: nobody has attended yet


def test_an_invalid_event_is_not_rehearsed_and_its_problems_are_listed(tmp_path: Path):
    config = make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    source.write_text(source.read_text().replace('to = ["registered"]', 'to = ["registerd"]'))
    result = CliRunner().invoke(
        main, ["rehearse", "-c", str(config), str(source), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 1
    assert 'mail[1] "reminder".to: unknown group "registerd"' in result.output
    assert not (tmp_path / "r").exists()


def test_a_folder_event_is_rehearsed_by_its_folder(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb", notes__txt="anteckningar")
    out = tmp_path / "r"
    result = CliRunner().invoke(
        main,
        [
            "rehearse",
            "-c",
            str(config),
            str(tmp_path / "schedules" / "forlabb"),
            "--seconds",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(received(out / "maildir")) == 2 + 2  # invitation to all, reminder to registered


def test_each_message_is_dated_when_its_mail_falls_due_in_the_played_timeline(tmp_path: Path):
    """The Date header is the played time, not the hour the rehearsal ran (issue 12, item 19),
    and a busy machine expires nothing: the played clock waits for each step."""
    config = make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    out = tmp_path / "r"
    result = CliRunner().invoke(
        main, ["rehearse", "-c", str(config), str(source), "--seconds", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    event = load_event(source, defaults=defaults_for(load_settings(config))).event
    assert event is not None
    box = mailbox.Maildir(
        out / "maildir",
        create=False,
        factory=lambda f: message_from_binary_file(f, policy=policy.default),
    )
    dates = [m["Date"].datetime for m in box]
    assert len(dates) == 2 + 2  # invitation to all, reminder to the registered
    assert set(dates) == {m.due for m in event.mails}
    assert "expired" not in result.output
