"""After an attempt: sent, retried with growing waits, failed, or expired."""

from __future__ import annotations

import random

import pytest

from mailer.delivery import DeliveryState as S
from mailer.delivery import Verdict
from mailer.policy import RetryPolicy

POLICY = RetryPolicy(attempts=5, backoff_first_s=60, backoff_max_s=600, give_up_after_s=3600)
DAY = 86_400.0


@pytest.mark.parametrize(
    ("verdict", "attempts_made", "first_attempt", "now", "expires", "state"),
    [
        (Verdict.SENT, 1, 0, 0, DAY, S.SENT),
        (Verdict.FAIL, 1, 0, 0, DAY, S.FAILED),  # 5xx: at once, retrying repeats the refusal
        (Verdict.RETRY, 1, 0, 0, DAY, S.RETRYING),
        (Verdict.RETRY, 5, 0, 0, DAY, S.FAILED),  # out of attempts
        (Verdict.RETRY, 2, 0, 3500, DAY, S.FAILED),  # the next try would be past give_up_after
        (Verdict.RETRY, 1, 0, 0, 30, S.EXPIRED),  # the next try would be past the expiry
        # A delivery due a week ago (a late registrant, an outage) starts its give-up clock at
        # its first attempt: its first 451 is retried, not given up.
        (Verdict.RETRY, 1, 7 * DAY, 7 * DAY, 8 * DAY, S.RETRYING),
    ],
)
def test_the_next_state(verdict, attempts_made, first_attempt, now, expires, state):
    step = POLICY.after(
        verdict,
        attempts_made=attempts_made,
        first_attempt=first_attempt,
        expires=expires,
        now=now,
        rng=random.Random(1),
    )
    assert step.state is state
    assert (step.next_attempt is not None) == (state is S.RETRYING)


@pytest.mark.parametrize(
    ("attempts_made", "base"), [(1, 60), (2, 120), (3, 240), (4, 480), (5, 600), (9, 600)]
)
def test_backoff_doubles_up_to_the_cap_with_jitter(attempts_made: int, base: float):
    waits = [POLICY.backoff_s(attempts_made, random.Random(seed)) for seed in range(50)]
    assert all(0.8 * base <= w <= 1.2 * base for w in waits)
    assert len(set(waits)) > 40  # jittered: a batch refused together does not retry together
