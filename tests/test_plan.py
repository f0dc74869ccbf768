"""The planner: what an event wants against what is stored, for every state a delivery can be in."""

from __future__ import annotations

import pytest

from mailer.delivery import DeliveryState as S
from mailer.plan import Plan, Retime, Stored, Wanted, plan_event


def want(recipient: str = "anna", due: float = 100.0, expires: float = 200.0) -> Wanted:
    return Wanted("invitation", recipient, due, expires, f"<{recipient}@example.org>")


def have(state: S, recipient: str = "anna", due: float = 100.0, expires: float = 200.0) -> Stored:
    return Stored(7, "invitation", recipient, due, expires, state)


@pytest.mark.parametrize(
    ("wanted", "stored", "expected"),
    [
        # new file: everything inserted
        ([want()], [], Plan("e", inserts=(want(),))),
        # nothing changed: nothing to do, whatever the state
        *[([want()], [have(state)], Plan("e")) for state in S if state is not S.CANCELLED],
        # times changed: pending ones follow, history does not
        ([want(due=150)], [have(S.SCHEDULED)], Plan("e", retimes=(Retime(7, 150, 200),))),
        ([want(due=150)], [have(S.RETRYING)], Plan("e", retimes=(Retime(7, 150, 200),))),
        ([want(due=150)], [have(S.SENT)], Plan("e")),
        ([want(due=150)], [have(S.FAILED)], Plan("e")),
        ([want(due=150)], [have(S.SENDING)], Plan("e")),
        # a cancelled recipient put back, an expired mail moved later: revived
        ([want()], [have(S.CANCELLED)], Plan("e", revives=(Retime(7, 100, 200),))),
        ([want(expires=300)], [have(S.EXPIRED)], Plan("e", revives=(Retime(7, 100, 300),))),
        # no longer wanted: pending ones cancelled; sent, failed and in-flight left alone
        ([], [have(S.SCHEDULED)], Plan("e", cancels=(7,))),
        ([], [have(S.RETRYING)], Plan("e", cancels=(7,))),
        *[([], [have(state)], Plan("e")) for state in (S.SENT, S.FAILED, S.SENDING, S.EXPIRED)],
    ],
)
def test_plan_event(wanted: list[Wanted], stored: list[Stored], expected: Plan):
    assert plan_event("e", wanted, stored) == expected


def test_a_plan_with_changes_summarises_them():
    plan = plan_event("e", [want("bo")], [have(S.SCHEDULED)])
    assert not plan.is_empty
    assert plan.summary() == "1 added, 0 retimed, 0 revived, 1 cancelled"
