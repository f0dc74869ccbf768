"""Reading events from a real schedules folder: links out, size limits, files that are missing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer.event_files import MAX_CSV_BYTES
from mailer.events import EventDefaults
from mailer.sources import find_event_files, load_event

DEFAULTS = EventDefaults("sv", ZoneInfo("Europe/Stockholm"), timedelta(days=1))

EVENT = """
title = "Seminarium"
starts = 2027-05-12T10:00:00

[recipients]
file = "{csv}"

[[mail]]
name = "report"
send_at = "start - 5d at 08:00"
to = ["registered"]
attach = ["{attach}"]
"""


def write_event(folder: Path, *, csv: str = "people.csv", attach: str = "rapport.pdf") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "event.toml").write_text(EVENT.format(csv=csv, attach=attach), encoding="utf-8")
    (folder / "people.csv").write_text(
        "email;groups\nanna@example.org;registered\n", encoding="utf-8"
    )
    (folder / "rapport.pdf").write_bytes(b"%PDF-1.4 report")
    return folder / "event.toml"


def test_a_folder_event_loads_with_its_csv_and_attachment(tmp_path: Path):
    loaded = load_event(write_event(tmp_path / "seminarium"), defaults=DEFAULTS)
    assert loaded.error is None and loaded.event is not None
    assert loaded.event.mails[0].attach == (tmp_path / "seminarium" / "rapport.pdf",)
    assert len(loaded.digest) == 64


def test_the_digest_changes_when_the_csv_or_the_attachment_changes(tmp_path: Path):
    source = write_event(tmp_path / "seminarium")
    first = load_event(source, defaults=DEFAULTS).digest
    (source.parent / "people.csv").write_text("email;groups\nbo@example.org;registered\n")
    second = load_event(source, defaults=DEFAULTS).digest
    (source.parent / "rapport.pdf").write_bytes(b"%PDF-1.4 a longer, newer report")
    assert len({first, second, load_event(source, defaults=DEFAULTS).digest}) == 3


@pytest.mark.parametrize("field", ["csv", "attach"])
def test_a_symlink_out_of_the_event_folder_is_refused(tmp_path: Path, field: str):
    secret = tmp_path / "secret.txt"
    secret.write_text("email\nx@example.org\n")
    source = write_event(tmp_path / "schedules" / "seminarium", **{field: "link.txt"})
    (source.parent / "link.txt").symlink_to(secret)
    loaded = load_event(source, defaults=DEFAULTS)
    key = "recipients.file" if field == "csv" else 'mail[0] "report".attach'
    assert str(loaded.error).startswith(
        f"{source}: {key}: link.txt leads outside the event's folder"
    )


def test_a_missing_attachment_is_an_error_not_a_surprise_at_send_time(tmp_path: Path):
    source = write_event(tmp_path / "seminarium", attach="slutrapport.pdf")
    loaded = load_event(source, defaults=DEFAULTS)
    assert str(loaded.error) == f'{source}: mail[0] "report".attach: no such file: slutrapport.pdf'


def test_an_oversized_csv_has_a_clear_limit(tmp_path: Path):
    source = write_event(tmp_path / "seminarium")
    with (source.parent / "people.csv").open("wb") as csv:
        csv.truncate(MAX_CSV_BYTES + 1)
    loaded = load_event(source, defaults=DEFAULTS)
    assert str(loaded.error) == (
        f"{source}: recipients.file: people.csv is 20,971,521 bytes; the limit is 20,971,520"
    )


def test_a_csv_that_is_not_utf8_is_read_as_windows_1252_and_says_so(tmp_path: Path):
    source = write_event(tmp_path / "seminarium")
    (source.parent / "people.csv").write_bytes(
        "email;name;groups\nå@example.org;Åsa;registered\n".encode("latin-1")
    )
    loaded = load_event(source, defaults=DEFAULTS)
    assert loaded.event is not None and loaded.event.recipients[0].name == "Åsa"
    assert "people.csv is not UTF-8; read as Windows-1252" in loaded.notes[0]


def test_event_files_are_found_and_editor_leftovers_ignored(tmp_path: Path):
    for name in ["b.toml", "a.toml", ".a.toml.swp", "a.toml~", ".#a.toml", "notes.txt"]:
        (tmp_path / name).write_text("")
    write_event(tmp_path / "c")
    (tmp_path / "d").mkdir()
    assert [p.relative_to(tmp_path).as_posix() for p in find_event_files(tmp_path)] == [
        "a.toml",
        "b.toml",
        "c/event.toml",
    ]
