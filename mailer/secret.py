"""Where the secret key comes from: `retention.key_file` if set, else the database.

The default needs nothing set, and every node of a PostgreSQL database gets the same key
(a token signed by one node is checked by another; an address erased by one is matched by
all). The file is for operators who want a stolen database, or a backup of it, to be unable
to test a guessed address against the erased ones: docs/operator-guide.md, "Personal data".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.keyring import SECRET_BYTES, Keyring
from mailer.store import Store


async def load_keyring(settings: Settings, store: Store) -> Keyring:
    """The keyring for bounce addresses and erased addresses."""
    key_file = settings.retention.key_file
    if key_file is None:
        return Keyring(await store.secret())
    return Keyring(await asyncio.to_thread(_read_key, key_file))


def _read_key(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the key file {path}: {exc.strerror or exc}", key="retention.key_file"
        ) from exc
    if len(secret) < SECRET_BYTES:
        raise ConfigError(
            f"the key file {path} holds {len(secret)} bytes; expected at least {SECRET_BYTES} "
            f"random ones (make one with: head -c {SECRET_BYTES} /dev/urandom | base64 > {path})",
            key="retention.key_file",
        )
    return secret
