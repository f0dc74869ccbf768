"""Which transport the settings name, built for one process: SMTP paced by `max_per_minute`
shared by every node on the database, or a Maildir. Both the service (`mailer run`) and a
mail sent by hand (`mailer send`, manual_send.py) build theirs here, so they send alike.
"""

from __future__ import annotations

from mailer.clock import Clock
from mailer.config import Settings
from mailer.config_transport import SmtpSettings
from mailer.pacing import SharedPace
from mailer.store import Store
from mailer.transports.base import Transport
from mailer.transports.maildir import MaildirTransport
from mailer.transports.smtp import SmtpTransport


def transport_for(settings: Settings, *, store: Store | None, clock: Clock) -> Transport:
    """The transport `[transport] kind` names; its `max_per_minute` shared by every process
    on the store's database (SPEC §9). Without a store (one test mail), not paced."""
    if isinstance(settings.transport, SmtpSettings):
        per_minute = settings.sending.max_per_minute
        return SmtpTransport(
            settings.transport,
            connections=settings.sending.connections,
            max_per_minute=per_minute,
            pace=SharedPace(store, max_per_minute=per_minute, clock=clock)
            if per_minute and store is not None
            else None,
        )
    return MaildirTransport(settings.transport.path)
