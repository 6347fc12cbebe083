"""One timer for all calls in a process.

Calls need waking for pacing every chunk, for keep-alives, backoffs and grace periods.
A sleeping task per call would cost a timer and a cancel scope per wake-up; instead every
call posts its next deadline here, and one event-loop timer (armed for the earliest
deadline) wakes each call that is due. Deadlines within ``slack`` of each other are
served by the same wake-up, so hundreds of calls cost a few hundred wake-ups a second,
not thousands.

The scheduler holds its loop rather than asking ``asyncio.get_running_loop()``: on
Python 3.11 that call makes a ``getpid`` system call each time, and the clock is read
for every audio frame.

It also notices when the loop itself did not run (a callback that blocked it, the process
not scheduled): a heartbeat every :data:`STALL_CHECK_S` while anyone watches
(:meth:`Scheduler.watch_stalls`) that comes late by more than that is a stall, and the
watchers (the calls) hear how long it was.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Callable

__all__ = ["STALL_CHECK_S", "Kick", "Scheduler"]

STALL_CHECK_S = 0.05


class Scheduler:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, slack: float = 0.002) -> None:
        self.slack = slack
        self.loop = loop
        self.now: Callable[[], float] = loop.time
        """The loop's clock, in seconds."""
        self._heap: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._stall_watchers: dict[int, Callable[[float, float], None]] = {}
        self._beat: asyncio.TimerHandle | None = None
        self._beat_at = 0.0

    @classmethod
    def for_running_loop(cls) -> Scheduler:
        """The scheduler of the running event loop, shared by every call on it."""
        loop = asyncio.get_running_loop()
        scheduler = _per_loop.get(loop)
        if scheduler is None:
            scheduler = _per_loop[loop] = cls(loop)
        return scheduler

    def wake_at(self, when: float, wake: Callable[[float], None]) -> None:
        """Call ``wake(when)`` at ``when`` (loop time) or up to ``slack`` earlier.

        Loop clocks can be coarse (uvloop counts whole milliseconds), so a wake-up may
        come a little early: ``when`` tells the woken what time it was woken for.
        """
        heapq.heappush(self._heap, (when, next(self._seq), wake))
        if when < self._armed_at:
            self._arm(when)

    def forget(self, wake: Callable[[float], None]) -> None:
        """Drop the wake-ups pending for ``wake`` (a call that ended): what they hold goes
        now, not when they would have come due."""
        heap = self._heap
        kept = [entry for entry in heap if entry[2] != wake]
        if len(kept) != len(heap):
            heapq.heapify(kept)
            heap[:] = kept  # in place: the list is the one _fire walks

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = float("inf")
        heap = self._heap
        limit = self.loop.time() + self.slack
        while heap and heap[0][0] <= limit:
            when, _, wake = heapq.heappop(heap)
            wake(when)
        if heap:
            self._arm(heap[0][0])

    def __len__(self) -> int:
        return len(self._heap)

    # --- stalls of the loop itself ---------------------------------------------------------

    def watch_stalls(self, on_stall: Callable[[float, float], None]) -> Callable[[], None]:
        """Call ``on_stall(now, seconds)`` after each stall of the loop; returns the
        function that stops watching."""
        key = next(self._seq)
        self._stall_watchers[key] = on_stall
        if self._beat is None:
            self._heartbeat_at(self.loop.time() + STALL_CHECK_S)

        def stop() -> None:
            self._stall_watchers.pop(key, None)
            if not self._stall_watchers and self._beat is not None:
                self._beat.cancel()
                self._beat = None

        return stop

    def _heartbeat_at(self, when: float) -> None:
        self._beat_at = when
        self._beat = self.loop.call_at(when, self._heartbeat)

    def _heartbeat(self) -> None:
        now = self.loop.time()
        late = now - self._beat_at
        self._heartbeat_at(now + STALL_CHECK_S)
        if late > STALL_CHECK_S:
            for on_stall in list(self._stall_watchers.values()):
                on_stall(now, late)


class Kick:
    """Wakes the one task that waits on it, like ``asyncio.Event`` with ``clear`` folded
    into ``wait``, at a third of the cost: it is set for every agent frame on the
    standard ASGI path. Not for more than one waiter."""

    __slots__ = ("_loop", "_set", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Return once set (at once, if it was set meanwhile), and clear it."""
        if not self._set:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._set = False


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Scheduler] = (
    weakref.WeakKeyDictionary()
)
