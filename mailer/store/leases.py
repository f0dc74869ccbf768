"""Who holds a delivery being sent, and until when (SPEC §9: leases, not resets).

A claim leases each delivery it takes to the claiming node until `now + LEASE_S`; the node
renews its leases every HEARTBEAT_S while it lives. A lease that ran out goes back to the
queue, so a process that starts takes back only what a stopped one held, never what a live
`mailer send` is sending.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

# How long a claim holds without renewal: SPEC §9's "back in the queue within 30 seconds".
LEASE_S = 30.0
# How often a node renews: a third of the lease, so two missed beats still leave it held.
HEARTBEAT_S = LEASE_S / 3
# A node's row not heard of for this long goes (a machine killed and never restarted):
# long enough that `status` shows a dead node for a day, as someone may look for it.
NODE_FORGOTTEN_S = 86_400.0


@dataclass(frozen=True)
class Node:
    """A process that claims deliveries: its host and pid for people, and a random token,
    since pids are reused and one process may open the store twice (tests do); and how long
    its claims hold without renewal (`[sending] lease`, LEASE_S unless set)."""

    host: str
    pid: int
    token: str
    lease_s: float = LEASE_S

    @classmethod
    def here(cls, *, lease_s: float = LEASE_S) -> Node:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12], lease_s)

    @property
    def heartbeat_s(self) -> float:
        """How often this node renews its leases: a third of one (as HEARTBEAT_S)."""
        return self.lease_s / 3

    @property
    def id(self) -> str:
        """As the store keeps it, in `leased_by`: readable by a person looking at a row."""
        return f"{self.host} {self.pid} {self.token}"

    @classmethod
    def parse(cls, text: str) -> Node | None:
        """The node a `leased_by` names; None if it names none."""
        parts = text.rsplit(" ", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])

    def is_gone(self) -> bool:
        """Known to have stopped: a process of this host whose pid no longer runs. A node on
        another host, or whose pid runs (maybe reused), may live: only its lease's end says."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # runs, as another user
            return False
        return False
