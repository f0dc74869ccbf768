"""Which event files a change in `schedules/` belongs to."""

from __future__ import annotations

from pathlib import Path

from mailer.watcher import event_sources


def test_a_file_beside_single_file_events_reloads_each_of_them(tmp_path: Path) -> None:
    """`schedules/deltagare.csv` belongs to the single-file events beside it; it used to map
    to `schedules/deltagare.csv/event.toml`, which no event is, so an edited CSV or
    attachment of a single-file event was never reloaded (found in review)."""
    schedules = tmp_path / "schedules"
    (schedules / "folder-event").mkdir(parents=True)
    for name in ("forlabb.toml", "seminarium.toml", ".#forlabb.toml"):
        (schedules / name).write_text("")
    changed = [str(schedules / "deltagare.csv"), str(schedules / "rapport.pdf")]
    assert event_sources(changed, schedules) == {
        schedules / "forlabb.toml",
        schedules / "seminarium.toml",
    }


def test_each_change_maps_to_its_own_event(tmp_path: Path) -> None:
    schedules = tmp_path / "schedules"
    changed = [
        str(schedules / "forlabb.toml"),
        str(schedules / "seminarium" / "people.csv"),
        str(schedules / "seminarium" / "event.toml"),
        str(schedules / "forlabb.toml.swp"),
        str(tmp_path / "elsewhere.toml"),
    ]
    assert event_sources(changed, schedules) == {
        schedules / "forlabb.toml",
        schedules / "seminarium" / "event.toml",
    }


def test_a_new_event_folder_is_its_own_event(tmp_path: Path) -> None:
    """A folder copied into schedules/ is reported as the folder alone when its files are
    written before inotify watches it (1 in 5 folders made in a burst, bench scenario 9):
    it mapped to the single-file events beside it, and the new event waited for its next
    edit. The folder is its event."""
    schedules = tmp_path / "schedules"
    (schedules / "ny").mkdir(parents=True)
    (schedules / "ny" / "event.toml").write_text("")
    (schedules / "forlabb.toml").write_text("")
    assert event_sources([str(schedules / "ny")], schedules) == {schedules / "ny" / "event.toml"}
