"""After an attempt: the delivery's next state and when to try again (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mailer.config import SendingSettings
from mailer.delivery import DeliveryState, Verdict


@dataclass(frozen=True)
class Next:
    state: DeliveryState
    next_attempt: float | None = None  # unix seconds, for RETRYING


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts, time and the mail's expiry."""

    attempts: int
    backoff_first_s: float
    backoff_max_s: float
    give_up_after_s: float

    @classmethod
    def from_settings(cls, sending: SendingSettings) -> RetryPolicy:
        return cls(
            sending.attempts,
            sending.backoff_first.total_seconds(),
            sending.backoff_max.total_seconds(),
            sending.give_up_after.total_seconds(),
        )

    def backoff_s(self, attempts_made: int, rng: random.Random) -> float:
        """Doubling from backoff_first up to backoff_max, ±20% so that retries of a whole
        batch refused at once do not hit the server again in one burst."""
        base = min(self.backoff_max_s, self.backoff_first_s * 2.0 ** max(0, attempts_made - 1))
        return base * rng.uniform(0.8, 1.2)

    def after(
        self,
        verdict: Verdict,
        *,
        attempts_made: int,
        first_attempt: float,
        expires: float,
        now: float,
        rng: random.Random,
    ) -> Next:
        """What an attempt's verdict means for the delivery. `give_up_after` counts from the
        first attempt, not the due time: a delivery that went out late (a late registrant,
        after an outage) still gets its full share of retries."""
        if verdict is Verdict.SENT:
            return Next(DeliveryState.SENT)
        if verdict is Verdict.FAIL or attempts_made >= self.attempts:
            return Next(DeliveryState.FAILED)
        retry_at = now + self.backoff_s(attempts_made, rng)
        if retry_at - first_attempt > self.give_up_after_s:
            return Next(DeliveryState.FAILED)
        if retry_at >= expires:
            return Next(DeliveryState.EXPIRED)
        return Next(DeliveryState.RETRYING, retry_at)
