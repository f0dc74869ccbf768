"""One step of the service: send what is due now over `connections` sessions, record each
outcome, pause on a fault every message would share.

Each session takes the next claimed delivery, composes it, hands it to the transport and waits
until its outcome is committed before taking the next, so a crash can repeat at most the
messages in flight (SPEC §5.3). While a step holds claims it renews their leases (SPEC §9);
the claims and their leases are `claims.py`'s (split out, issue 13).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass

from mailer.announcing import NOTICES, revision
from mailer.catalog import Catalog
from mailer.claims import Claims
from mailer.clock import Clock
from mailer.config import Settings
from mailer.delivery import DeliveryState, Outcome, Verdict
from mailer.errors import MailerError
from mailer.keyring import Keyring
from mailer.outbox import Outbox
from mailer.policy import RetryPolicy
from mailer.secret import load_keyring
from mailer.store import Attempt, CalendarRow, Claimed, Narrow, Store
from mailer.transports.base import Transport

log = logging.getLogger("mailer")


@dataclass(frozen=True)
class StepResult:
    """What one step did: how each delivery it handled ended, by id; how many it handled;
    and, if sending is paused, why (what `mailer send` reports)."""

    outcomes: Mapping[int, DeliveryState]
    handled: int
    paused_because: str | None


class Sender:
    """Sends, records and pauses; the engine decides when a step runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        transport: Transport,
        outbox: Outbox,
        catalog: Catalog,
        clock: Clock,
        rng: random.Random,
        stopping: asyncio.Event,
        wakeup: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.outbox = outbox
        self.catalog = catalog
        self.clock = clock
        self.policy = RetryPolicy.from_settings(settings.sending)
        self.rng = rng
        self._stopping = stopping
        self._wakeup = wakeup  # set when a retry is planned: the engine re-arms its wake-up
        self.paused_until: float | None = None
        self.paused_because: str | None = None
        # Left over from a step the store failed: outcomes of messages that did go out (to be
        # recorded, never sent again) and claims to put back in the queue.
        self._unrecorded: dict[int, Attempt] = {}
        self._unreleased: set[int] = set()
        # Whether a step failed since the database last answered a settling in full: the
        # database may hold claims for us that we never heard of (see `_settle_leftovers`).
        self._unsure = False
        self.heartbeat_s = store.node.heartbeat_s  # how often a step renews its leases
        # Attempts recorded since this process started, by verdict ("sent" = messages sent):
        # what /metrics counts (SPEC §12).
        self.attempts_made: Counter[str] = Counter()
        # Each event's calendar identity as read in this step (announcing.revision).
        self._calendars: dict[str, CalendarRow | None] = {}
        self.keyring: Keyring | None = None  # signs bounce addresses; read at the first step

    async def step(self, *, only: Narrow | None = None, due_by: float | None = None) -> StepResult:
        """Send everything due now over `connections` concurrent sessions.

        A session that finds nothing left claims the next batch. `due_by` stops it from
        taking what falls due (a retry) after that instant: `mailer send` makes one pass.
        """
        await self._settle_leftovers()
        self._calendars.clear()  # read again each step: a revision is announced before it
        if self.settings.bounces is not None and self.keyring is None:
            self.keyring = await load_keyring(self.settings, self.store)
        if self.is_paused():
            return StepResult({}, 0, self.paused_because)
        self.paused_because = None  # a pause that has ended is not news of this step
        claims = Claims(self, only=only, due_by=due_by)
        # Per step, not for the life of the service: that would grow by one entry per delivery.
        outcomes: dict[int, DeliveryState] = {}
        heartbeat = asyncio.create_task(claims.renew_leases())
        sessions = [
            asyncio.create_task(self._session(claims, outcomes))
            for _ in range(self.settings.sending.connections)
        ]
        try:  # a stop cancels the sessions; gather returns once each has ended
            ended = await asyncio.gather(*sessions, return_exceptions=True)
        except BaseException:
            self._unsure = True
            raise
        finally:  # paused, stopping or failed with claims in hand: back to the queue
            await self._put_back(claims.waiting)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        if failures := [e for e in ended if isinstance(e, BaseException)]:
            self._unsure = True
            raise BaseExceptionGroup("a step of sending failed", failures)
        handled = sum(n for n in ended if isinstance(n, int))
        return StepResult(outcomes, handled, self.paused_because)

    async def _session(self, claims: Claims, outcomes: dict[int, DeliveryState]) -> int:
        """Deliver one claimed delivery after another; how many."""
        handled = 0
        while (delivery := await claims.take()) is not None:
            try:
                outcomes[delivery.id] = await self.deliver(delivery)
            except BaseException:
                # Stopped mid-send, or the store failed: back to the queue, to be tried
                # again (it may have gone out: at-least-once for what is in flight);
                # unless it went out and only its record failed. The other sessions finish
                # the message each has in hand (cancelled mid-send, it could go twice) and
                # take no more.
                claims.halted = True
                if delivery.id not in self._unrecorded:
                    claims.waiting.appendleft(delivery)
                raise
            handled += 1
        return handled

    async def _put_back(self, claimed: deque[Claimed]) -> None:
        """Claims a step ends with in hand go back to the queue, even if it is cancelled."""
        if claimed:
            ids = [c.id for c in claimed]
            self._unreleased.update(ids)
            await asyncio.shield(self.store.release(ids))
            self._unreleased.difference_update(ids)

    async def _settle_leftovers(self) -> None:
        """Finish what a failed step left: record what went out, requeue what did not."""
        if self._unrecorded:
            # Still ours while they wait: no other process may take them back and resend.
            await self.store.renew_leases(self.now())
            await self.store.record_now(list(self._unrecorded.values()))
            self._unrecorded.clear()
        if self._unreleased:
            await self.store.release(sorted(self._unreleased))
            self._unreleased.clear()
        if self._unsure:
            # Between steps this node sends nothing: whatever the database still leases to
            # it is a claim whose answer the failure swallowed. Back to the queue, or it
            # would stay `sending` for as long as this node lives and renews it.
            if taken := await self.store.release_held():
                log.warning("%d deliveries claimed as the database failed go back", taken)
            self._unsure = False

    def may_go_on(self) -> bool:
        """Whether a session may take another delivery: not stopping, not paused."""
        return not self._stopping.is_set() and not self.is_paused()

    def is_paused(self) -> bool:
        return self.paused_until is not None and self.now() < self.paused_until

    def _pause(self, reply: str) -> None:
        """A fault every message would share (a refused login, a refused certificate): stop
        sending until `backoff_first` has passed, instead of failing one login per delivery
        (which can also lock the account), and say loudly what to fix."""
        if self.is_paused():  # the other sessions in flight hit the same wall
            return
        pause_s = self.settings.sending.backoff_first.total_seconds()
        self.paused_until = self.now() + pause_s
        self.paused_because = reply
        log.error("sending paused for %.0f s until this is fixed: %s", pause_s, reply)

    async def deliver(self, claimed: Claimed) -> DeliveryState:
        """Compose, send and record one delivery; the state it ended in."""
        found = await self.catalog.find(claimed.event, claimed.mail, claimed.recipient)
        if found is None:  # edited away since it was planned: never sent, not an error
            await self.store.set_state(
                [claimed.id], DeliveryState.CANCELLED, reply="no longer in the event"
            )
            return DeliveryState.CANCELLED
        event, mail, recipient = found
        now = self.clock.now()
        identity = None
        if mail.calendar or mail.name in NOTICES:  # one look-up, only for these
            mail, identity = await revision(
                self.store, self.outbox, event, mail, recipient, known=self._calendars
            )
        try:
            message = await self.outbox.compose_async(
                event, mail, recipient, now=now, identity=identity, mid=claimed.message_id
            )
        except (MailerError, ValueError, UnicodeError) as exc:  # flattening can raise too
            outcome = Outcome(Verdict.FAIL, f"cannot compose the message: {exc}")
        except OSError as exc:  # a rendering worker could not start: this message's turn only
            outcome = Outcome(Verdict.RETRY, f"cannot compose the message now: {exc}")
        else:
            outcome = await self.transport.send(
                message, sender=self.envelope_sender(claimed.id), recipient=recipient.address
            )
        return await self.record(claimed, outcome)

    def envelope_sender(self, delivery_id: int) -> str:
        """MAIL FROM: the delivery's own bounce address with `[bounces]` (VERP, SPEC §11),
        so a bounce names its delivery; else the sender. The From header is the sender's
        either way."""
        bounces = self.settings.bounces
        if bounces is None or self.keyring is None:
            return self.settings.sender.from_
        return self.keyring.envelope_sender(bounces.address, delivery_id)

    async def record(self, claimed: Claimed, outcome: Outcome) -> DeliveryState:
        """Commit one attempt and the state the retry policy gives it; log it."""
        attempt = self._attempt(claimed, outcome)
        try:
            await self.store.record(attempt)
        except BaseException:  # the message went out: record it later, never send it again
            self._unrecorded[claimed.id] = attempt
            raise
        self.attempts_made[attempt.verdict] += 1
        state = attempt.state
        level = logging.INFO if state is DeliveryState.SENT else logging.WARNING
        log.log(
            level,
            "%s/%s to %s: %s (%s)",
            claimed.event,
            claimed.mail,
            claimed.recipient,
            state.value,
            outcome.reply,
        )
        if outcome.needs_attention:
            self._pause(outcome.reply)
        if attempt.next_attempt is not None:
            self._wakeup.set()
        return state

    def _attempt(self, claimed: Claimed, outcome: Outcome) -> Attempt:
        """The attempt to record: the outcome, and what the retry policy makes of it now."""
        now = self.now()
        step = self.policy.after(
            outcome.verdict,
            attempts_made=claimed.attempts + 1,
            first_attempt=claimed.first_attempt if claimed.first_attempt is not None else now,
            expires=claimed.expires,
            now=now,
            rng=self.rng,
        )
        return Attempt(
            delivery=claimed.id,
            at=now,
            verdict=outcome.verdict.value,
            code=outcome.code,
            reply=outcome.reply,
            state=step.state,
            attempts=claimed.attempts + 1,
            next_attempt=step.next_attempt,
        )

    def now(self) -> float:
        """The engine's clock, in POSIX seconds (what the store keeps)."""
        return self.clock.now().timestamp()
