"""The one language-code rule, and every place a code is written keeping to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.config import load_settings
from mailer.errors import Collector, Problems
from mailer.event_parser import parse_event
from mailer.languages import chain, is_language
from mailer.recipients import parse_csv
from mailer.templates import TemplateFolder
from mailer.toml_text import load_toml
from tests.project import make_project, write_event
from tests.test_events import BASE, DEFAULTS

# (code, is it one): BCP 47's shape, primary in lower case, later subtags in any case.
CODES = [
    ("sv", True),
    ("en", True),
    ("fil", True),  # three-letter ISO 639 codes
    ("sv-FI", True),
    ("sv-fi", True),
    ("zh-Hant", True),  # script
    ("zh-Hant-TW", True),
    ("es-419", True),  # region as digits
    ("de-CH-1901", True),  # variant
    ("en-x-a", True),  # one-letter singleton, as BCP 47 allows
    ("SV", False),  # the primary subtag is written in lower case
    ("s", False),
    ("swed", False),
    ("svenska", False),
    ("sv_FI", False),  # POSIX locale, not a language tag
    ("sv-", False),
    ("sv--FI", False),
    ("sv-ABCDEFGHI", False),  # a subtag has at most 8
    ("sv\n", False),  # a whole string: no line end slips through
    (" sv", False),
    ("../sv", False),  # codes name folders under templates/
    ("sv/../..", False),
    ("", False),
    (None, False),
    (7, False),
]


@pytest.mark.parametrize(("code", "ok"), CODES)
def test_the_rule(code: object, ok: bool) -> None:
    assert is_language(code) is ok


def test_chain_follows_each_code_with_its_base_in_lower_case() -> None:
    assert chain("sv-FI", None, "en", "sv", "bad code") == ["sv-fi", "sv", "en"]


def config_takes(tmp_path: Path, code: str) -> bool:
    path = tmp_path / "config.toml"
    path.write_text(f'[sender]\nfrom = "a@example.org"\nlanguage = "{code}"\n', encoding="utf-8")
    try:
        load_settings(path)
    except Problems:
        return False
    return True


def event_takes(tmp_path: Path, code: str) -> bool:
    try:
        parse_event(
            load_toml(f'language = "{code}"\n' + BASE, source=tmp_path / "forlabb.toml"),
            source=tmp_path / "forlabb.toml",
            defaults=DEFAULTS,
        )
    except Problems:
        return False
    return True


def csv_takes(tmp_path: Path, code: str) -> bool:
    problems = Collector("people.csv")
    parse_csv(f'email,language\nanna@example.org,"{code}"\n', problems=problems)
    return not problems.problems


def folder_taken(tmp_path: Path, code: str) -> bool:
    (tmp_path / "templates" / code).mkdir(parents=True)
    return code in TemplateFolder(tmp_path / "templates", default_language="sv").languages()


PLACES = [config_takes, event_takes, csv_takes]
# Written codes the old rules disagreed on: config.toml took "sv" but not "sv-FI"; events,
# mails and CSV columns took "sv-FI" but not "en-x-a"; the folders, "en-x-a" but not "sv-FI".
# A code of 300 characters named a folder too long to look up ("file name too long").
ONE_RULE = ["sv", "sv-FI", "zh-Hant", "en-x-a", "SV", "svenska", "sv/..", "sv" + "-abcdefgh" * 33]


@pytest.mark.parametrize("place", PLACES, ids=lambda p: p.__name__)
@pytest.mark.parametrize("code", ONE_RULE, ids=repr)
def test_every_place_keeps_the_one_rule(tmp_path: Path, place: object, code: str) -> None:
    assert place(tmp_path, code) is is_language(code)  # type: ignore[operator]


def test_a_line_end_is_no_part_of_an_events_code(tmp_path: Path) -> None:
    """The old rule matched with `$`, which also matches before a final line end."""
    assert not event_takes(tmp_path, "sv\\n")


@pytest.mark.parametrize(
    ("folder", "taken"), [("sv", True), ("sv-fi", True), ("en-x-a", True), ("sv-FI", False)]
)
def test_a_templates_folder_is_named_by_a_code_in_lower_case(
    tmp_path: Path, folder: str, taken: bool
) -> None:
    """chain() looks codes up in lower case, so a folder "sv-FI" would never be read."""
    assert folder_taken(tmp_path, folder) is taken


def test_a_code_too_long_to_name_a_folder_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """A 300-character code passed the rule, then failed the template look-up with
    "file name too long" (OSError) in `check` and in the rendering worker."""
    config = make_project(tmp_path)
    source = write_event(tmp_path, "forlabb")
    code = "sv" + "-abcdefgh" * 33
    source.write_text(
        source.read_text().replace(
            'name = "Anna Andersson"', f'name = "Anna Andersson"\nlanguage = "{code}"'
        )
    )
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 1, result.output
    assert "recipients.people[0].language: expected a language code" in result.output
