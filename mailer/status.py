"""The status document of SPEC §7 (`mailer status --json`), read from the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailer.plan import DeliveryState
from mailer.store import Store


def iso(seconds: float | None, zone: ZoneInfo) -> str | None:
    """ISO 8601 with the UTC offset, in the zone organisers think in."""
    return None if seconds is None else datetime.fromtimestamp(seconds, zone).isoformat()


async def status_report(
    store: Store, *, zone: ZoneInfo, event_id: str | None = None, mail: str | None = None
) -> dict[str, Any]:
    """Per event and mail: due, expiry and counts per state; per recipient with `mail`."""
    events = await store.events()
    mails = await store.mail_counts(event_id)
    report = []
    for row in sorted(events.values(), key=lambda r: r.id):
        if event_id is not None and row.id != event_id:
            continue
        entry: dict[str, Any] = {
            "id": row.id,
            "title": row.title,
            "file": row.source,
            "error": row.error,
            "removed": row.removed,
            "mails": [],
        }
        for item in (m for m in mails if m.event == row.id):
            if mail is not None and item.mail != mail:
                continue
            counts = {state.value: item.counts.get(state, 0) for state in DeliveryState}
            described: dict[str, Any] = {
                "name": item.mail,
                "due": iso(item.due, zone),
                "expires": iso(item.expires, zone),
                "counts": counts,
            }
            if mail is not None:
                described["deliveries"] = [
                    {
                        "recipient": d.recipient,
                        "state": d.state,
                        "attempts": d.attempts,
                        "last_reply": d.last_reply,
                        "sent_at": iso(d.sent_at, zone),
                    }
                    for d in await store.deliveries_of(row.id, item.mail)
                ]
            entry["mails"].append(described)
        report.append(entry)
    return {"events": report}
