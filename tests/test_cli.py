"""`mailer check` and `mailer preview` as an organiser runs them."""

from __future__ import annotations

from email import message_from_bytes, policy
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
