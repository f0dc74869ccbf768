"""The queue in PostgreSQL: claims under leases with `FOR UPDATE SKIP LOCKED`, group
commit of outcomes, requeues.

Every statement that picks rows by a condition over many of them (claim, take back,
expire) selects them `FOR UPDATE SKIP LOCKED`: a row another node is changing right now is
left to that node, never waited for, so claims never hand one delivery to two nodes, never
block each other and cannot deadlock (procrastinate's claim; kannon #374 is what an
`UPDATE … (SELECT … LIMIT)` without it does under READ COMMITTED).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from mailer.delivery import DeliveryState
from mailer.store.contract import TURN_AHEAD_MAX_S
from mailer.store.leases import Node
from mailer.store.postgres.connection import Connection, Db
from mailer.store.postgres.wakeups import announce
from mailer.store.rows import Attempt, Claimed, Narrow

PENDING_SQL = "('scheduled', 'retrying')"
# SPEC §10 `hold = true`: an event's deliveries stay planned and are neither claimed nor
# waited for; released, what fell due goes out at once (expiry still applies meanwhile).
NOT_HELD = "event NOT IN (SELECT id FROM events WHERE held)"
# Back in the queue as it was before it was claimed: retrying if it had been tried before.
_REQUEUED = "state = CASE WHEN attempts > 0 THEN 'retrying' ELSE 'scheduled' END"
# Leased by another node whose lease ran out (SPEC §9). Never our own: we still hold it.
_RUN_OUT = "state = 'sending' AND lease_until <= %(now)s AND leased_by IS DISTINCT FROM %(node)s"


def _locked(where: str) -> str:
    """The ids of rows matching `where` that no other transaction holds, locked for ours."""
    return f"id IN (SELECT id FROM deliveries WHERE {where} FOR UPDATE SKIP LOCKED)"


class Queue(Connection):
    """What is due, who sends it, and what came of it."""

    def __init__(self, pool: AsyncConnectionPool[Db], *, url: str, node: Node) -> None:
        super().__init__(pool, url=url, node=node)
        self._pending: list[tuple[Attempt, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await super().close()

    async def take_back_abandoned(self, now: float) -> int:
        """At start: deliveries whose lease ran out, or whose node is known to have stopped
        (a process of this host that no longer runs), back to the queue. A live node's
        leases stay its own (SPEC §9)."""
        rows = await self._rows(
            "SELECT DISTINCT leased_by FROM deliveries WHERE state = 'sending' "
            "AND leased_by IS DISTINCT FROM %s",
            (self.node.id,),
        )
        gone = [holder for (holder,) in rows if _is_gone(holder)]
        params = {"now": now, "node": self.node.id, "gone": [h for h in gone if h is not None]}
        gone_sql = "leased_by = ANY(%(gone)s)" + (" OR leased_by IS NULL" if None in gone else "")
        async with self.transaction() as db:
            cursor = await db.execute(
                f"UPDATE deliveries SET {_REQUEUED} WHERE "
                + _locked(f"state = 'sending' AND ({gone_sql} OR ({_RUN_OUT}))"),
                params,
            )
            if cursor.rowcount:
                await announce(db, self.node, "queue")
            return cursor.rowcount

    async def renew_leases(self, now: float) -> int:
        """This node lives: its leases hold until `now + lease_s` (one statement for all)."""
        async with self.transaction() as db:
            cursor = await db.execute(
                "UPDATE deliveries SET lease_until = %s WHERE state = 'sending' AND leased_by = %s",
                (now + self.node.lease_s, self.node.id),
            )
            return cursor.rowcount

    async def reserve_turn(self, now: float, *, interval_s: float) -> float:
        """The next turn of every node together (`max_per_minute`): one row, locked for the
        moment of its update, so turns are handed out one after another. Not waited onto
        disk (a turn lost in a database crash lets one message go a little early), so a
        turn costs a round trip, not a flush."""
        params = {"now": now, "interval": interval_s, "ahead": TURN_AHEAD_MAX_S}
        async with self.transaction() as db:
            await db.execute("SET LOCAL synchronous_commit = off")
            cursor = await db.execute(
                """INSERT INTO pace (name, next_at) VALUES ('send', %(now)s + %(interval)s)
                   ON CONFLICT (name) DO UPDATE SET next_at = CASE
                       WHEN pace.next_at > %(now)s + %(ahead)s THEN %(now)s
                       ELSE GREATEST(pace.next_at, %(now)s)
                   END + %(interval)s
                   RETURNING next_at""",
                params,
            )
            (next_at,) = await cursor.fetchone() or (now + interval_s,)
        return float(next_at) - interval_s

    async def release(self, ids: Sequence[int]) -> None:
        """Claimed but not sent (sending paused or stopping): back to the queue as they were.
        Only while still ours: a lease that ran out may have gone to another node since."""
        async with self.transaction() as db:
            await db.execute(
                f"UPDATE deliveries SET {_REQUEUED} WHERE id = ANY(%s) AND state = 'sending' "
                f"AND leased_by = %s",
                (sorted(ids), self.node.id),
            )
            await announce(db, self.node, "queue")  # another node may send them now

    async def release_held(self) -> int:
        async with self.transaction() as db:
            cursor = await db.execute(
                f"UPDATE deliveries SET {_REQUEUED} WHERE state = 'sending' AND leased_by = %s",
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
            "WHERE state IN ('scheduled', 'retrying', 'sending') AND due <= %s",
            (now,),
        )
        return None if rows[0][0] is None else float(rows[0][0])

    async def claim_due(
        self, now: float, *, limit: int, only: Narrow | None = None
    ) -> tuple[list[Claimed], int]:
        """Lease up to `limit` due deliveries to this node, earliest due first; take back
        what a stopped node held (its lease ran out); expire those past their expiry.

        `only` narrows it to one mail, or one recipient of it (`mailer send`). Returns the
        claimed ones and how many expired. One transaction; the lease is set by the claim's
        own statement, on rows its SELECT locked (SKIP LOCKED: never one to two nodes).
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
            narrow = " AND event = %(event)s AND mail = %(mail)s"
            narrow += " AND recipient = %(recipient)s" if only.recipient else ""
        due = f"state IN {PENDING_SQL} AND next_attempt <= %(now)s{narrow}"
        async with self.transaction() as db:
            await db.execute(f"UPDATE deliveries SET {_REQUEUED} WHERE {_locked(_RUN_OUT)}", params)
            expired = await db.execute(
                "UPDATE deliveries SET state = 'expired', last_reply = 'expired before it "
                f"could be sent' WHERE {_locked(due + ' AND expires <= %(now)s')}",
                params,
            )
            cursor = await db.execute(
                f"""WITH due AS (
                        SELECT id FROM deliveries WHERE {due} AND {NOT_HELD}
                        ORDER BY next_attempt, id LIMIT %(limit)s
                        FOR UPDATE SKIP LOCKED)
                    UPDATE deliveries d SET state = 'sending', leased_by = %(node)s,
                        lease_until = %(until)s
                    FROM due WHERE d.id = due.id
                    RETURNING d.id, d.event, d.mail, d.recipient, d.due, d.expires,
                        d.attempts, d.message_id, d.first_attempt""",
                params,
            )
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
        its lease: one that ran out and went to another node is that node's now.

        Two statements over arrays, not `executemany`: psycopg pipelines that, and a node
        frozen between two statements of a pipeline (SIGSTOP) left the server waiting for
        the rest with the rows locked and no `idle_in_transaction_session_timeout` armed
        (it arms only once the server has answered everything sent), so no other node
        could send them until the frozen one woke. Rows in id order, so that two writers
        cannot deadlock."""
        ordered = sorted(attempts, key=lambda a: a.delivery)
        ids = [a.delivery for a in ordered]
        ats = [a.at for a in ordered]
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO attempts (delivery, at, verdict, code, reply) SELECT * FROM "
                "unnest(%s::bigint[], %s::float8[], %s::text[], %s::int[], %s::text[])",
                (ids, ats, [a.verdict for a in ordered], [a.code for a in ordered],
                 [a.reply for a in ordered]),
            )  # fmt: skip
            await db.execute(
                """UPDATE deliveries d SET state = v.state, attempts = v.attempts,
                    last_reply = v.reply, next_attempt = COALESCE(v.next, d.next_attempt),
                    first_attempt = COALESCE(d.first_attempt, v.at),
                    sent_at = CASE WHEN v.state = 'sent' THEN v.at ELSE d.sent_at END
                FROM (SELECT * FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::text[],
                        %s::float8[], %s::float8[]) AS u(id, state, attempts, reply, next, at)
                      ORDER BY id) AS v
                WHERE d.id = v.id AND d.state = 'sending' AND d.leased_by = %s""",
                (ids, [a.state.value for a in ordered], [a.attempts for a in ordered],
                 [a.reply for a in ordered], [a.next_attempt for a in ordered], ats,
                 self.node.id),
            )  # fmt: skip

    async def set_state(self, ids: Sequence[int], state: DeliveryState, *, reply: str) -> None:
        """End deliveries without an attempt (cancelled: the event no longer wants them)."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE deliveries SET state = %s, last_reply = %s WHERE id = ANY(%s)",
                (state.value, reply, sorted(ids)),
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
        where = "event = %s AND state = ANY(%s)"
        params: list[Any] = [event_id, [s.value for s in states]]
        for column, value in (("mail", mail), ("recipient", recipient)):
            if value is not None:
                where += f" AND {column} = %s"
                params.append(value)
        async with self.transaction() as db:
            cursor = await db.execute(
                f"UPDATE deliveries SET state = 'scheduled', attempts = 0, first_attempt = NULL, "
                f"next_attempt = %s, expires = GREATEST(expires, %s + 3600) WHERE {where}",
                [now, now, *params],
            )
            if cursor.rowcount:
                await announce(db, self.node, "queue", event=event_id)
            return cursor.rowcount


def _is_gone(holder: str | None) -> bool:
    """A row left `sending` by a mailer from before leases names no node: gone."""
    node = Node.parse(holder) if holder is not None else None
    return node is None or node.is_gone()
