"""Planned versions saved in batches, one transaction each, while the next batch is planned."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from mailer.store import Version

# Plans are saved in batches of about this many deliveries (one transaction each): a commit
# and a few round trips to the database's thread per batch, not per event, at start.
BATCH_DELIVERIES = 10_000


class BatchSaver:
    """Versions saved in batches of about BATCH_DELIVERIES, one transaction each, one batch
    saved (in the database's thread) while the next fills; all saved when the block ends."""

    def __init__(self, save: Callable[[list[Version]], Coroutine[Any, Any, None]]) -> None:
        self._save = save
        self._batch: list[Version] = []
        self._size = 0
        self._saving: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BatchSaver:
        return self

    async def add(self, version: Version) -> None:
        self._batch.append(version)
        self._size += version.plan.size if version.plan is not None else 0
        if self._size >= BATCH_DELIVERIES:
            await self._flush()

    async def _flush(self) -> None:
        if self._saving is not None:
            await self._saving
        self._saving = asyncio.create_task(self._save(self._batch))
        self._batch, self._size = [], 0

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            if self._batch:
                await self._flush()
            if self._saving is not None:
                await self._saving
        elif self._saving is not None:  # the transaction under way ends, whatever ended us
            await asyncio.wait([self._saving])
            if not self._saving.cancelled():
                self._saving.exception()  # retrieved: the fault that ended us is the one raised
