"""How much work a dispatcher may take: its concurrency, minus what runs, minus what is promised.

Claims and direct hand-offs both take slots: a claim reserves its budget while its script is in flight, a
commit reserves the extra items its hand-off may bring, so that however replies interleave, the dispatcher never
holds more than ``concurrency`` items. While a suspect (an item that keeps killing its dispatchers) runs alone,
nothing is free. Pure accounting, no I/O: unit-tested in ``tests/unit/test_slots.py``.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["SlotLimiter"]


class SlotLimiter:
    def __init__(self, concurrency: int, *, batch: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        self.batch = batch  # the most items one claim or hand-off takes
        self.running = 0  # items being run
        self.reserved = 0  # slots promised to claims and hand-offs whose replies are on their way
        self.exclusive = False  # a suspect runs alone: nothing else may start
        self.accepting = False  # taking new work at all (false while starting and draining)
        self._room = asyncio.Event()

    def free(self) -> int:
        """Slots neither running an item nor promised: what a claim may ask for now."""
        if self.exclusive:
            return 0
        return max(0, self.concurrency - self.running - self.reserved)

    def handoff_budget(self) -> int:
        """How many items a commit may hand to this dispatcher: the slot the committed item frees, plus free
        capacity up to a batch. None while draining or while a suspect runs alone."""
        if not self.accepting or self.exclusive:
            return 0
        return 1 + min(self.free(), self.batch - 1)

    def reserve(self, slots: int) -> None:
        self.reserved += slots

    def release(self, slots: int) -> None:
        """Promised slots that were not used (or are now running): free again, and say so."""
        self.reserved -= slots
        self._room.set()

    def started(self) -> None:
        self.running += 1

    def finished(self) -> None:
        self.running -= 1
        self._room.set()

    def wake(self) -> None:
        """Wake whoever waits for room (a suspect finished, or the dispatcher is stopping)."""
        self._room.set()

    async def wait_for_room(self, timeout: float | None = None) -> bool:
        """Wait until something frees (or ``wake``); returns whether there is room now."""
        self._room.clear()
        if self.free() > 0:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._room.wait()
        return self.free() > 0
