"""The guides stay true: every configuration key documented, every example valid."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from tests.project import REPO, make_project

GUIDES = sorted((REPO / "docs").glob("*.md"))
TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.DOTALL)


def config_keys() -> set[str]:
    """Every `key =` of config.example.toml, the commented-out SMTP block included."""
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, re.MULTILINE))


def test_every_configuration_key_is_in_the_operators_reference():
    reference = (REPO / "docs" / "operator-guide.md").read_text(encoding="utf-8")
    missing = sorted(k for k in config_keys() if f"`{k}`" not in reference)
    assert len(config_keys()) > 20 and not missing


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_toml_example_in_the_guides_is_valid_toml(guide: Path):
    for block in TOML_BLOCK.findall(guide.read_text(encoding="utf-8")):
        if "…" not in block:  # a shortened excerpt is marked with an ellipsis
            tomllib.loads(block)


@pytest.mark.parametrize(
    "guide", [g for g in GUIDES if "organiser" in g.name], ids=lambda p: p.name
)
def test_every_whole_event_in_the_organisers_guide_passes_check(tmp_path: Path, guide: Path):
    config = make_project(tmp_path)
    events = [
        b
        for b in TOML_BLOCK.findall(guide.read_text(encoding="utf-8"))
        if "title" in b
        and "[[mail]]" in b
        and "file =" not in b
        and "attach" not in b
        and "…" not in b
    ]
    assert events, "the guide shows at least one whole event"
    for number, block in enumerate(events):
        (tmp_path / "schedules" / f"example-{number}.toml").write_text(block, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert result.exit_code == 0, result.output


ORGANISER_GUIDES = [g for g in GUIDES if "organiser" in g.name]
SAFETY_EVENT = "# schedules/midsommarseminarium.toml\n"


def shown_output(guide: Path, command: str) -> list[str]:
    """The lines a guide shows after its last `$ <command>` in a plain code block."""
    blocks = re.findall(
        r"```\n\$ " + re.escape(command) + r"\n(.*?)```", guide.read_text("utf-8"), re.DOTALL
    )
    assert blocks, f"{guide.name} shows `{command}`"
    return blocks[-1].splitlines()


@pytest.mark.parametrize("guide", ORGANISER_GUIDES, ids=lambda p: p.name)
def test_the_safety_rails_chapter_shows_what_the_code_prints(tmp_path: Path, guide: Path):
    """Chapter 11's examples (test send, working days, the check warning) are the code's own
    output for the chapter's own event."""
    (event,) = [
        b for b in TOML_BLOCK.findall(guide.read_text("utf-8")) if b.startswith(SAFETY_EVENT)
    ]
    config = make_project(tmp_path)
    (tmp_path / "schedules" / "midsommarseminarium.toml").write_text(event, encoding="utf-8")
    checked = CliRunner().invoke(main, ["check", "-c", str(config)])
    assert checked.exit_code == 0, checked.output
    printed = checked.output.replace(f"{tmp_path}/", "").splitlines()
    assert printed == shown_output(guide, "mailer check")
    command = (
        "mailer send midsommarseminarium invitation"
        " --test mig@example.org --recipient bjorn@example.org"
    )
    sent = CliRunner().invoke(
        main, [*command.split()[1:3], "-c", str(config), *command.split()[3:]]
    )
    assert sent.exit_code == 0, sent.output
    assert sent.stdout.splitlines() == shown_output(guide, command)
