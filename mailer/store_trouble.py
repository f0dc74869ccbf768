"""Store failures in a row (another process holding the lock, a full disk): how long the
service pauses before trying again, and one log line per kind of failure, not per loop."""

from __future__ import annotations

import logging

log = logging.getLogger("mailer")

# After a store failure the engine waits this long before it tries again, doubled for each
# failure in a row up to STORE_PAUSE_MAX_S: quick after a hiccup, and no busy loop (or a log
# line per loop) while the fault lasts. At most half a lease (store/leases.py): each try
# renews the leases of messages that went out unrecorded, before another process may take
# them back and send them again.
STORE_PAUSE_S = 1.0
STORE_PAUSE_MAX_S = 15.0


class StoreTrouble:
    """Store failures in a row: the pause before the next try, and one log line per kind."""

    def __init__(self) -> None:
        self.failures = 0
        self._kinds: set[str] = set()

    def failed(self, exc: BaseException) -> float:
        """Say a new kind of failure once; the pause (s) before trying again."""
        causes = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        for cause in causes:
            kind = getattr(cause, "kind", None) or type(cause).__name__
            if kind not in self._kinds:
                self._kinds.add(kind)
                log.error(
                    "sending stopped for now: %s; trying again after pauses growing to "
                    "%.0f s (said once for each kind of failure)",
                    cause,
                    STORE_PAUSE_MAX_S,
                )
        self.failures += 1
        return min(STORE_PAUSE_S * 2.0 ** (self.failures - 1), STORE_PAUSE_MAX_S)

    def succeeded(self) -> None:
        """The store works again: say so once, and start counting afresh."""
        if self.failures:
            log.warning("sending resumed: the database works again (%d failures)", self.failures)
        self.failures = 0
        self._kinds.clear()
