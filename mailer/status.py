"""The status document (`mailer status --json`): per event and mail, read from the store."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailer.config import Settings
from mailer.delivery import DeliveryState
from mailer.errors import unusable_database
from mailer.store import LEASE_S, MailCounts, NodeRow, Store, StoreUnavailable
from mailer.store.contract import open_read_only

# Each state with its name, looked up once: a mail's counts are built for every mail of every
# event (10,000 mails at 2,000,000 deliveries), and the enum's iteration and `.value` cost
# more than the dictionary they fill.
_STATES = tuple((state, state.value) for state in DeliveryState)


async def read_status(
    settings: Settings, *, event_id: str | None, mail: str | None, now: datetime | None = None
) -> dict:
    """`mailer status`: read-only, safe while the service runs (WAL). It never creates or
    migrates the database: a missing one is said (exit 2), not shown as empty."""
    store = await open_read_only(settings.paths.database)
    try:
        return await status_report(
            store,
            zone=settings.sender.zone,
            event_id=event_id,
            mail=mail,
            now=None if now is None else now.timestamp(),
        )
    except StoreUnavailable as exc:  # malformed, or the server gone: one line, not a trace
        raise unusable_database(settings.paths.database, exc) from exc
    finally:
        await store.close()


def iso(seconds: float | None, zone: ZoneInfo) -> str | None:
    """ISO 8601 with the UTC offset, in the zone organisers think in."""
    return None if seconds is None else datetime.fromtimestamp(seconds, zone).isoformat()


async def status_report(
    store: Store,
    *,
    zone: ZoneInfo,
    event_id: str | None = None,
    mail: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Per event and mail: due, expiry and counts per state; per recipient with `mail`;
    and the nodes (SPEC §9), each live if heard of within a lease, as of `now`."""
    events = await store.events()
    mails_of: dict[str, list[MailCounts]] = {}
    for counted in await store.mail_counts(event_id):
        mails_of.setdefault(counted.event, []).append(counted)
    report = []
    for row in sorted(events.values(), key=lambda r: r.id):
        if event_id is not None and row.id != event_id:
            continue
        entry: dict[str, Any] = {
            "id": row.id,
            "title": row.title,
            "file": row.source,
            "error": row.error,
            "in_force": row.digest is not None,  # has a valid version, whatever the file says
            "removed": row.removed,
            "held": row.held,  # `hold = true`: planned, nothing sent (SPEC §10)
            "mails": [],
        }
        for described in _mails(row.mails, mails_of.get(row.id, []), zone):
            if mail is None or described["name"] == mail:
                if mail is not None:
                    described["deliveries"] = await _deliveries(store, row.id, mail, zone)
                entry["mails"].append(described)
        report.append(entry)
    nodes = await store.nodes()
    return {"events": report, "nodes": [_node(n, zone, now) for n in nodes]}


def _node(node: NodeRow, zone: ZoneInfo, now: float | None) -> dict[str, Any]:
    """A node as SPEC §9 lists it; `live`: heard of within a lease (a node killed stays
    listed, not live, until it is forgotten). Only a live node is the planner."""
    live = now is None or node.last_seen >= now - LEASE_S
    return {
        "id": node.id,
        "host": node.host,
        "pid": node.pid,
        "planner": node.planner and live,
        "live": live,
        "started": iso(node.started, zone),
        "last_seen": iso(node.last_seen, zone),
    }


def _mails(planned_json: str, counted: list[MailCounts], zone: ZoneInfo) -> list[dict[str, Any]]:
    """The mails of the version in force (even those nobody gets yet), then any others that
    still have history (a mail since removed from the event), in due order."""
    by_name = {m.mail: m for m in counted}
    rows = [(p["due"], p["expires"], p["name"], p["to"]) for p in json.loads(planned_json)]
    planned = {name for _, _, name, _ in rows}
    rows += [(m.due, m.expires, m.mail, None) for m in counted if m.mail not in planned]
    described = []
    for due, expires, name, to in sorted(rows, key=lambda row: row[0]):
        item = by_name.get(name)
        counted_here = item.counts if item else {}
        counts = {word: counted_here.get(state, 0) for state, word in _STATES}
        described.append(
            {
                "name": name,
                "to": to,
                "due": iso(due, zone),
                "expires": iso(expires, zone),
                "counts": counts,
                "problem": item.problem if item else None,
            }
        )
    return described


async def _deliveries(
    store: Store, event_id: str, mail: str, zone: ZoneInfo
) -> list[dict[str, Any]]:
    return [
        {
            "recipient": d.recipient,
            "state": d.state,
            "attempts": d.attempts,
            "last_reply": d.last_reply,
            "sent_at": iso(d.sent_at, zone),
        }
        for d in await store.deliveries_of(event_id, mail)
    ]
