"""The service's secret key and what it is used for: each delivery's bounce address (VERP,
SPEC §11) and the keyed hash that replaces an erased address (SPEC §13). Pure.

One secret, two subkeys (HMAC-SHA256 of the secret and a purpose), so a bounce token can
never be passed off as an erased address or the reverse. Where the secret lives (the
database by default, or `retention.key_file`) is the store's and the config's business;
docs/decisions.md and the operator's guide say what each place protects against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field

# What an erased address looks like in `deliveries.recipient`: never a valid address (no
# "@"), so nothing is ever sent to it, and recognisable in `status`.
ERASED_PREFIX = "erased:"
# 80 bits of HMAC: guessing a valid token for one delivery takes ~2^79 tries by mail, and
# the local part stays short enough for every relay (RFC 5321 allows 64 characters).
TOKEN_CHARS = 16
# The secret as generated (32 random bytes) and the least a key file must hold.
SECRET_BYTES = 32
_VERP = re.compile(rf"(?P<id>[0-9]{{1,18}})-(?P<mac>[a-z2-7]{{{TOKEN_CHARS}}})")


@dataclass(frozen=True)
class Keyring:
    """The subkeys derived from the one secret; `repr` never shows them."""

    secret: bytes = field(repr=False)

    def _subkey(self, purpose: str) -> bytes:
        return hmac.new(self.secret, purpose.encode(), hashlib.sha256).digest()

    def token(self, delivery_id: int) -> str:
        """`<id>-<mac>`: the delivery's id in clear (to find it), signed (so that nobody who
        has seen one bounce address can write another delivery's)."""
        return f"{delivery_id}-{self._mac(delivery_id)}"

    def _mac(self, delivery_id: int) -> str:
        digest = hmac.new(self._subkey("verp"), str(delivery_id).encode(), hashlib.sha256)
        return base64.b32encode(digest.digest()).decode().lower()[:TOKEN_CHARS]

    def envelope_sender(self, address: str, delivery_id: int) -> str:
        """`bounces@example.org` -> `bounces+<token>@example.org` (RFC 5321 MAIL FROM)."""
        local, _, domain = address.rpartition("@")
        return f"{local}+{self.token(delivery_id)}@{domain}"

    def delivery_of(self, address: str, *, bounce_address: str) -> int | None:
        """The delivery a bounce address names, if it is one of ours with a valid token.
        Case-insensitive: some servers lower-case the local part on the way back."""
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        ours_local, _, ours_domain = bounce_address.lower().rpartition("@")
        base, plus, token = local.partition("+")
        if domain != ours_domain or base != ours_local or not plus:
            return None
        found = _VERP.fullmatch(token)
        if found is None:
            return None
        delivery_id = int(found["id"])
        return delivery_id if hmac.compare_digest(found["mac"], self._mac(delivery_id)) else None

    def erased(self, address: str) -> str:
        """What an address becomes when its event's data is erased: the same address always
        gives the same hash (so the event coming back plans no duplicate), and without the
        secret nobody can test a guessed address against it."""
        digest = hmac.new(self._subkey("address"), address.lower().encode(), hashlib.sha256)
        return ERASED_PREFIX + digest.hexdigest()[:32]


def is_erased(recipient: str) -> bool:
    return recipient.startswith(ERASED_PREFIX)
