"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from mailer.config import SmtpTransport
from tests import smtpd
from tests.smtpd import SmtpServer, serve_smtp


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    """A real SMTP server in the test's loop: STARTTLS and AUTH required (tests/smtpd.py)."""
    async with serve_smtp() as server:
        yield server


@pytest.fixture
def smtp_settings() -> Callable[..., SmtpTransport]:
    """`smtp_settings(server, **overrides)`: transport settings that log in to `server`."""
    return smtpd.smtp_settings
