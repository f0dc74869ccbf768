"""`mailer check` and `mailer preview` as an organiser runs them."""

from __future__ import annotations

import subprocess
import sys
from email import message_from_bytes, policy
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from tests.project import REPO, make_project, write_event


def mailer(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    runner = CliRunner()
    if cwd is None:
        result = runner.invoke(main, list(args))
    else:
        with runner.isolated_filesystem(temp_dir=cwd) as _:
            result = runner.invoke(main, list(args))
    return result.exit_code, result.output


def test_check_passes_on_the_shipped_examples():
    code, output = mailer("check", "-c", str(REPO / "config.example.toml"))
    assert code == 0, output
    assert "2 event files checked, 0 with problems" in output


def test_check_lists_every_problem_with_file_and_key_and_exits_1(tmp_path: Path):
    config = make_project(tmp_path)
    broken = (
        write_event(tmp_path, "forlabb")
        .read_text()
        .replace('to = ["registered"]', 'to = ["registerd"]')
        .replace("calendar = true", "calender = true")
    )
    (tmp_path / "schedules" / "forlabb.toml").write_text(broken)
    write_event(tmp_path, "seminarium")
    code, output = mailer("check", "-c", str(config))
    assert code == 1
    assert 'forlabb.toml: mail[0] "invitation".calender: unknown key' in output
    assert 'forlabb.toml: mail[1] "reminder".to: unknown group "registerd"' in output
    assert "ok  " in output and "seminarium.toml" in output
    assert "Traceback" not in output


def test_check_finds_a_broken_template_before_anything_is_sent(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(
        tmp_path,
        "forlabb",
        (write_event(tmp_path, "forlabb").read_text() + 'subject = "{{ recipient.phone }}"\n'),
    )
    code, output = mailer("check", "-c", str(config))
    assert code == 1
    assert 'mail[1] "reminder".subject' in output and "phone" in output


def test_a_bad_config_exits_2_with_one_line_per_problem(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[transport]\nkind = "smtp"\nhost = "relay"\nport = 70000\n[sending]\nconnections = 0\n'
    )
    code, output = mailer("check", "-c", str(config))
    assert code == 2
    assert f"{config}: transport.port: must be 1-65535, got 70000" in output
    assert f"{config}: sending.connections:" in output


@pytest.mark.parametrize("language", ["sv", "en"])
def test_preview_writes_an_eml_that_reads_back(tmp_path: Path, language: str):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    address = "anna@example.org" if language == "sv" else "bjorn@example.org"
    out = tmp_path / "preview"
    code, output = mailer(
        "preview",
        "-c",
        str(config),
        "forlabb",
        "invitation",
        "--recipient",
        address,
        "--out",
        str(out),
    )
    assert code == 0, output
    eml = out / "forlabb" / "invitation" / f"{address}.eml"
    assert str(eml) in output
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["To"].addresses[0].addr_spec == address
    assert msg["Content-Language"] == language
    expected = "Inbjudan" if language == "sv" else "Invitation"
    assert expected in msg["Subject"]
    assert [p.get_filename() for p in msg.iter_attachments()] == ["forlabb.ics"]
    assert (out / "forlabb" / "invitation" / f"{address}.html").read_text().startswith("<!DOCTYPE")


def test_preview_without_recipient_writes_one_per_language(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    code, output = mailer(
        "preview", "-c", str(config), "forlabb", "reminder", "--out", str(tmp_path / "p")
    )
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "p" / "forlabb" / "reminder").glob("*.eml")) == [
        "anna@example.org.eml",
        "bjorn@example.org.eml",
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nope", "invitation"], 'no event "nope" (known: forlabb)'),
        (["forlabb", "nope"], 'no mail "nope" (known: invitation, reminder)'),
        (["forlabb", "reminder", "--recipient", "eve@example.org"], "eve@example.org does not get"),
    ],
)
def test_preview_says_what_exists_when_asked_for_what_does_not(tmp_path: Path, args, expected):
    config = make_project(tmp_path)
    write_event(tmp_path, "forlabb")
    code, output = mailer("preview", "-c", str(config), *args, "--out", str(tmp_path / "p"))
    assert code == 1 and expected in output


def test_a_missing_schedules_folder_stops_run_with_exit_2_naming_the_key(tmp_path: Path):
    """systemd's RestartPreventExitStatus=2 must stop a service that cannot ever work."""
    config = make_project(tmp_path)
    (tmp_path / "schedules").rmdir()
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{config}: paths.schedules: ") and str(tmp_path / "schedules") in line
    code, output = mailer("check", "-c", str(config))
    assert code == 2 and "paths.schedules" in output


def test_the_config_option_may_come_before_the_command():
    example = str(REPO / "config.example.toml")
    code, output = mailer("-c", example, "check")
    assert code == 0, output
    assert "2 event files checked, 0 with problems" in output
    code, output = mailer("-c", "/nonexistent.toml", "check", "-c", example)
    assert code == 0, output  # the command's own -c wins


def test_version_is_printed():
    code, output = mailer("--version")
    assert code == 0 and output.strip() == f"mailer, version {version('mailer')}"


def test_no_help_text_cites_a_document_the_repository_does_not_have():
    for name in [None, *main.commands]:
        code, output = mailer(*([name] if name else []), "--help")
        assert code == 0 and "SPEC" not in output, output


def test_check_takes_a_folder_event_by_its_folder(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "seminarium", notes__txt="anteckningar")
    code, output = mailer("check", "-c", str(config), str(tmp_path / "schedules" / "seminarium"))
    assert code == 0, output
    assert f"ok  {tmp_path / 'schedules' / 'seminarium' / 'event.toml'}: 2 mails" in output
    write_event(tmp_path, "forlabb")
    code, output = mailer("check", "-c", str(config), str(tmp_path / "schedules"))
    assert code == 0 and "2 event files checked, 0 with problems" in output, output


def test_an_event_id_error_is_said_in_words(tmp_path: Path):
    config = make_project(tmp_path)
    write_event(tmp_path, "Forlabb_2027")
    code, output = mailer("check", "-c", str(config))
    assert code == 1
    assert "lower-case letters a–z, digits and hyphens, starting with a letter or digit" in output
    assert "[a-z0-9]" not in output


def test_a_duration_in_a_config_error_reads_as_written(tmp_path: Path):
    config = make_project(tmp_path)
    text = config.read_text().replace('backoff_first = "1s"', 'backoff_first = "5m"')
    config.write_text(text.replace('backoff_max = "1h"', 'backoff_max = "90s"'))
    code, output = mailer("check", "-c", str(config))
    assert code == 2
    assert "backoff_first (5m) must not be longer than backoff_max (1m 30s)" in output
    assert "0:05:00" not in output
