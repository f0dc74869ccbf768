"""The SMTP password masked in whatever a server says back: as written, and in base64.

A relay may quote the AUTH argument in its refusal; AUTH PLAIN carries the password as
base64 of "authzid NUL user NUL password", AUTH LOGIN as base64 of the password alone, so the
plain text alone is not enough to hide it from logs, the database and `status`.
"""

from __future__ import annotations

import base64
import binascii
import re

# What stands for the password wherever a server's reply quoted it.
MASK = "********"
# A run of base64 letters: AUTH PLAIN carries the password as base64 of
# "authzid NUL user NUL password", AUTH LOGIN as base64 of the password alone.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{4,}=*")
# A decoded run holding this many bytes of the password in a row is masked: a server that
# quotes only part of the argument still gives the password away in part.
SECRET_WINDOW = 8


def scrub(text: str, password: str) -> str:
    """`text` with the password masked: as written, and in any base64 run that decodes to
    bytes holding it (or SECRET_WINDOW bytes of it), whatever authzid, user or alignment the
    run was made with: the AUTH PLAIN or LOGIN argument a relay quotes in its 535."""
    text = text.replace(password, MASK)
    secret = password.encode()
    size = min(len(secret), SECRET_WINDOW)
    windows = {secret[i : i + size] for i in range(len(secret) - size + 1)}

    # Fewer letters than this cannot decode to a window, however aligned.
    shortest = (size * 4 + 2) // 3

    def masked(run: re.Match[str]) -> str:
        letters = run[0].rstrip("=")
        if len(letters) < shortest:
            return run[0]
        for start in range(4):  # a run cut at any point: one of four starts is aligned
            usable = letters[start:]
            usable = usable[: len(usable) - (len(usable) % 4 == 1)]  # a lone letter is no byte
            try:
                decoded = base64.b64decode(usable + "=" * (-len(usable) % 4), validate=True)
            except (binascii.Error, ValueError):
                continue
            if any(window in decoded for window in windows):
                return MASK
        return run[0]

    return _BASE64_RUN.sub(masked, text)
