"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import settings

from mailer.config import SmtpSettings
from tests import smtpd
from tests.smtpd import SmtpServer, serve_smtp

# `make test` and CI draw the same examples every run, so a red build is never the luck of
# the draw; `make fuzz` draws fresh ones at random.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    """A real SMTP server in the test's loop: STARTTLS and AUTH required (tests/smtpd.py)."""
    async with serve_smtp() as server:
        yield server


@pytest.fixture
def smtp_settings() -> Callable[..., SmtpSettings]:
    """`smtp_settings(server, **overrides)`: transport settings that log in to `server`."""
    return smtpd.smtp_settings
