"""`mailer check PATH` on an event in force: what saving the file would do (SPEC §10).

The store is opened read-only (as `status` opens it: never created, migrated or written), and
each valid file is planned against its stored deliveries by the one planner
(`planning.edit_effect`): mails re-timed, deliveries added and cancelled. Without a database,
or for an event the service has never planned, there is nothing to compare with.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from mailer.config import Settings
from mailer.dates import weekday_time
from mailer.errors import MailerError
from mailer.planning import EditEffect, edit_effect, read_version
from mailer.sources import Loaded
from mailer.store import Store, StoreUnavailable
from mailer.store.contract import is_url, open_read_only


class Foresight:
    """A read-only look at the store for a run of `check`, usable from synchronous code:
    `with Foresight(settings) as seen: seen.effect_of(loaded)`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner = asyncio.Runner()
        self._store: Store | None = None
        self.unavailable: str | None = None  # why the plans in force could not be read

    def __enter__(self) -> Foresight:
        database = self.settings.paths.database
        if is_url(database) or Path(database).is_file():
            try:
                self._store = self._runner.run(open_read_only(database))
            except (MailerError, StoreUnavailable, OSError) as exc:  # said once by `check`
                self.unavailable = str(exc)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._store is not None:
                self._runner.run(self._store.close())
        finally:
            self._runner.close()

    def effect_of(self, loaded: Loaded) -> EditEffect | None:
        """What saving this valid file would do, or None if its event is not in force."""
        if self._store is None or self.unavailable is not None or loaded.event is None:
            return None
        try:
            return self._runner.run(self._effect(self._store, loaded))
        except StoreUnavailable as exc:  # damaged pages, the server gone: said once, as above
            self.unavailable = str(exc)
            return None

    async def _effect(self, store: Store, loaded: Loaded) -> EditEffect | None:
        row = (await store.events()).get(loaded.id)
        if row is None or row.digest is None:
            return None
        stored = await store.stored_deliveries(loaded.id)
        reading = read_version(loaded, self.settings)
        return edit_effect(reading, stored, in_force=row.mails)


def effect_document(effect: EditEffect, zone: ZoneInfo) -> dict[str, Any]:
    """An EditEffect as `check --json` gives it: times ISO 8601 with their offset."""

    def iso(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, zone).isoformat()

    return {
        "retimed": [
            {"mail": r.mail, "from": iso(r.old), "to": iso(r.new), "deliveries": r.deliveries}
            for r in effect.retimed
        ],
        "added": [{"mail": m, "recipient": r} for m, r in effect.added],
        "cancelled": [{"mail": m, "recipient": r} for m, r in effect.cancelled],
        "notices": [{"mail": m, "recipient": r} for m, r in effect.notices],
    }


def effect_lines(effect: EditEffect, zone: ZoneInfo, *, language: str, named: int = 5) -> list[str]:
    """An EditEffect in an organiser's words, one line per kind of change."""

    def when(seconds: float) -> str:
        return weekday_time(datetime.fromtimestamp(seconds, zone), language)

    if effect.is_empty:
        return ["saving it changes nothing that is planned"]
    lines = [
        f"saving it re-times {r.mail}: {when(r.old)} → {when(r.new)} "
        f"({r.deliveries} waiting {'delivery moves' if r.deliveries == 1 else 'deliveries move'})"
        for r in effect.retimed
    ]
    for verb, pairs in (("adds", effect.added), ("cancels", effect.cancelled)):
        for mail in sorted({m for m, _ in pairs}):
            people = [r for m, r in pairs if m == mail]
            more = f" and {len(people) - named} more" if len(people) > named else ""
            lines.append(f"saving it {verb} {mail} to {', '.join(people[:named])}{more}")
    return lines
