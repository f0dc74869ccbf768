"""The queue in SQLite: claims under leases, group commit of outcomes, requeues."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from mailer.delivery import DeliveryState
from mailer.store.contract import TURN_AHEAD_MAX_S
from mailer.store.leases import Node
from mailer.store.rows import Attempt, Claimed, Narrow
from mailer.store.sqlite.connection import Connection

PENDING_SQL = "('scheduled', 'retrying')"
# SPEC §10 `hold = true`: an event's deliveries stay planned and are neither claimed nor
# waited for; released, what fell due goes out at once (expiry still applies meanwhile).
NOT_HELD = "event NOT IN (SELECT id FROM events WHERE held = 1)"
# Back in the queue as it was before it was claimed: retrying if it had been tried before.
_REQUEUED = "state = CASE WHEN attempts > 0 THEN 'retrying' ELSE 'scheduled' END"
# Leased by another node whose lease ran out: its node stopped (or stalled) without
# recording an outcome, so it goes back to the queue (SPEC §9). Never our own: we still
# hold it, and it may be on its way right now.
_RUN_OUT = "state = 'sending' AND lease_until <= :now AND leased_by IS NOT :node"


class Queue(Connection):
    """What is due, who sends it, and what came of it."""

    def __init__(self, db: aiosqlite.Connection, *, path: Path, node: Node) -> None:
        super().__init__(db, path=path, node=node)
        self._pending: list[tuple[Attempt, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await super().close()

    async def take_back_abandoned(self, now: float) -> int:
        """At start: deliveries whose lease ran out, or whose node is known to have stopped
        (a process of this host that no longer runs: killed, crashed), back to the queue. A
        live node's leases stay its own (SPEC §9)."""
        # NOT INDEXED: every row is read once at start (~50 ms for 200,000), so a damaged
        # page says so now, in one line, not when its mail falls due (as the reset did).
        rows = await self._rows(
            "SELECT DISTINCT leased_by FROM deliveries NOT INDEXED WHERE state = 'sending' "
            "AND leased_by IS NOT ?",
            (self.node.id,),
        )
        gone = [holder for (holder,) in rows if _is_gone(holder)]
        async with self.transaction() as db:
            taken = 0
            for holder in gone:
                cursor = await db.execute(
                    f"UPDATE deliveries SET {_REQUEUED} WHERE state = 'sending' AND leased_by = ?",
                    (holder,),
                )
                taken += cursor.rowcount
            cursor = await db.execute(
                f"UPDATE deliveries SET {_REQUEUED} WHERE {_RUN_OUT}",
                {"now": now, "node": self.node.id},
            )
            return taken + cursor.rowcount

    async def renew_leases(self, now: float) -> int:
        """This node lives: its leases hold until `now + lease_s` (one statement for all)."""
        async with self.transaction() as db:
            cursor = await db.execute(
                "UPDATE deliveries SET lease_until = ? WHERE state = 'sending' AND leased_by = ?",
                (now + self.node.lease_s, self.node.id),
            )
            return cursor.rowcount

    async def reserve_turn(self, now: float, *, interval_s: float) -> float:
        """The next turn of every process on this file together (`max_per_minute`)."""
        params = {"now": now, "interval": interval_s, "ahead": TURN_AHEAD_MAX_S}
        async with (
            self.transaction() as db,
            db.execute(
                """INSERT INTO pace (name, next_at) VALUES ('send', :now + :interval)
                   ON CONFLICT (name) DO UPDATE SET next_at = CASE
                       WHEN next_at > :now + :ahead THEN :now ELSE MAX(next_at, :now)
                   END + :interval
                   RETURNING next_at""",
                params,
            ) as cursor,
        ):
            (next_at,) = await cursor.fetchone() or (now + interval_s,)
        return float(next_at) - interval_s

    async def release(self, ids: Sequence[int]) -> None:
        """Claimed but not sent (sending paused or stopping): back to the queue as they were.
        Only while still ours: a lease that ran out may have gone to another node since."""
        async with self.transaction() as db:
            await db.executemany(
                f"UPDATE deliveries SET {_REQUEUED} WHERE id = ? AND state = 'sending' "
                f"AND leased_by = ?",
                [(i, self.node.id) for i in ids],
            )

    async def release_held(self) -> int:
        async with self.transaction() as db:
            cursor = await db.execute(
                f"UPDATE deliveries SET {_REQUEUED} WHERE state = 'sending' AND leased_by = ?",
                (self.node.id,),
            )
            return cursor.rowcount

    async def next_due(self) -> float | None:
        rows = await self._rows(
            f"SELECT MIN(next_attempt) FROM deliveries WHERE state IN {PENDING_SQL} AND {NOT_HELD}"
        )
        due = rows[0][0]
        return None if due is None else float(due)

    async def oldest_due(self, now: float) -> float | None:
        rows = await self._rows(
            "SELECT MIN(due) FROM deliveries "
            "WHERE state IN ('scheduled', 'retrying', 'sending') AND due <= ?",
            (now,),
        )
        return None if rows[0][0] is None else float(rows[0][0])

    async def claim_due(
        self, now: float, *, limit: int, only: Narrow | None = None
    ) -> tuple[list[Claimed], int]:
        """Lease up to `limit` due deliveries to this node, earliest due first; take back
        what a stopped node held (its lease ran out); expire those past their expiry.

        `only` narrows it to one mail, or one recipient of it (`mailer send`). Returns the
        claimed ones and how many expired. The lease is set by the claim's own statement.
        """
        params: dict[str, Any] = {
            "now": now,
            "limit": limit,
            "node": self.node.id,
            "until": now + self.node.lease_s,
        }
        narrow = ""
        if only is not None:
            params.update(event=only.event, mail=only.mail, recipient=only.recipient)
            narrow = " AND event = :event AND mail = :mail"
            narrow += " AND recipient = :recipient" if only.recipient else ""
        async with self.transaction() as db:
            await db.execute(f"UPDATE deliveries SET {_REQUEUED} WHERE {_RUN_OUT}", params)
            expired = await db.execute(
                f"UPDATE deliveries SET state = 'expired', last_reply = 'expired before it "
                f"could be sent' WHERE id IN (SELECT id FROM deliveries WHERE state IN "
                f"{PENDING_SQL} AND next_attempt <= :now AND expires <= :now{narrow})",
                params,
            )
            async with db.execute(
                f"UPDATE deliveries SET state = 'sending', leased_by = :node, "
                f"lease_until = :until WHERE id IN (SELECT id FROM deliveries "
                f"WHERE state IN {PENDING_SQL} AND next_attempt <= :now{narrow} "
                f"AND {NOT_HELD} "
                f"ORDER BY next_attempt LIMIT :limit) "
                f"RETURNING id, event, mail, recipient, due, expires, attempts, message_id, "
                f"first_attempt",
                params,
            ) as cursor:
                # RETURNING comes in no particular order: earliest due first, as claimed.
                claimed = sorted(
                    (Claimed(*row) for row in await cursor.fetchall()), key=lambda c: (c.due, c.id)
                )
        return claimed, expired.rowcount

    async def record(self, attempt: Attempt) -> None:
        """Record an outcome durably; returns once it is committed.

        Outcomes that arrive while a commit is under way are committed together in the next
        one (group commit), so N sessions cost about one commit per round, not N.
        """
        done = asyncio.get_running_loop().create_future()
        self._pending.append((attempt, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.record_now([attempt for attempt, _ in batch])
            except Exception as exc:  # every waiter learns that its outcome is not durable
                for _, done in batch:
                    if not done.done():  # a waiter cancelled (shutdown) wants no answer
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def record_now(self, attempts: Sequence[Attempt]) -> None:
        """Record outcomes in one transaction, now (what a failed step left over). Each
        attempt is kept in the log; a delivery's state changes only while this node holds
        its lease: one that ran out and went to another node is that node's now."""
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO attempts (delivery, at, verdict, code, reply) VALUES (?, ?, ?, ?, ?)",
                [(a.delivery, a.at, a.verdict, a.code, a.reply) for a in attempts],
            )
            await db.executemany(
                "UPDATE deliveries SET state = :state, attempts = :attempts, "
                "last_reply = :reply, next_attempt = COALESCE(:next, next_attempt), "
                "first_attempt = COALESCE(first_attempt, :at), "
                "sent_at = CASE WHEN :state = 'sent' THEN :at ELSE sent_at END "
                "WHERE id = :id AND state = 'sending' AND leased_by = :node",
                [
                    {
                        "state": a.state.value,
                        "attempts": a.attempts,
                        "reply": a.reply,
                        "next": a.next_attempt,
                        "at": a.at,
                        "id": a.delivery,
                        "node": self.node.id,
                    }
                    for a in attempts
                ],
            )

    async def set_state(self, ids: Sequence[int], state: DeliveryState, *, reply: str) -> None:
        """End deliveries without an attempt (cancelled: the event no longer wants them)."""
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE deliveries SET state = ?, last_reply = ? WHERE id = ?",
                [(state.value, reply, i) for i in ids],
            )

    async def requeue(
        self,
        event_id: str,
        mail: str | None,
        *,
        states: Iterable[DeliveryState],
        now: float,
        recipient: str | None = None,
    ) -> int:
        """Put deliveries back in the queue now, as new: `mailer retry` and `mailer send`.

        Attempts start from zero again (their history stays in the attempt log), and an
        expiry that has passed gets an hour, since a person asked for this now.
        """
        names = [s.value for s in states]
        where = f"event = ? AND state IN ({', '.join('?' * len(names))})"
        params: list[Any] = [event_id, *names]
        for column, value in (("mail", mail), ("recipient", recipient)):
            if value is not None:
                where += f" AND {column} = ?"
                params.append(value)
        async with self.transaction() as db:
            cursor = await db.execute(
                f"UPDATE deliveries SET state = 'scheduled', attempts = 0, first_attempt = NULL, "
                f"next_attempt = ?, expires = MAX(expires, ? + 3600) WHERE {where}",
                [now, now, *params],
            )
            return cursor.rowcount


def _is_gone(holder: str | None) -> bool:
    """A row left `sending` by a mailer from before leases names no node: gone."""
    node = Node.parse(holder) if holder is not None else None
    return node is None or node.is_gone()
