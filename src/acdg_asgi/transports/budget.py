"""How fast one socket may be read: a budget of messages and bytes per second.

Every call shares one event loop, so a socket that sends ten thousand messages at once
would otherwise have them all handled before anything else runs. Its reader takes
from a :class:`ReadBudget` for every frame; once a frame takes more than is left, the
reader stops reading that socket for :meth:`ReadBudget.pause` seconds (its bytes wait in
the kernel, then at the sender) and the other calls run meanwhile. A socket that stays
over its budget is reported (``on_over``) and then closed.

One token bucket, in bytes (see :class:`~acdg_asgi.config.Budget`): a frame costs its
size plus ``bytes_per_s / messages_per_s``, so a flood of tiny messages is held to
``messages_per_s`` and one of large frames to ``bytes_per_s``. It is refilled only when a
frame finds it empty: the frame path pays one subtraction and one comparison.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import Budget
from ..interned import interned

__all__ = ["ReadBudget"]


class ReadBudget:
    """Readers take from :attr:`left` themselves (``left -= size + per_message``) and
    call :meth:`pause` when it goes below zero."""

    __slots__ = ("_burst", "_clock", "_paused_at", "_refilled", "budget", "closing", "left",
                 "on_over", "over_since", "per_message", "refills", "warned")

    def __init__(
        self, budget: Budget, *, max_frame_bytes: int, clock: Callable[[], float]
    ) -> None:
        self.budget = budget
        self.per_message = interned(budget.bytes_per_s / budget.messages_per_s)
        self._burst = max(budget.bytes_per_s * budget.burst_s, max_frame_bytes + self.per_message)
        self.left = self._burst
        self._clock = clock
        self._refilled = clock()
        self.refills = 0
        self.over_since: float | None = None  # over budget without a break since then
        self._paused_at = 0.0  # when reads last had to pause
        self.warned = False
        self.closing: str | None = None  # why the socket must be closed, once it must
        # Told once per stretch over the budget ("warn"), and at the close ("close").
        self.on_over: Callable[[str, str], None] | None = None

    def take(self, size: int) -> float:
        """One frame of ``size`` bytes read (where the reader is not a hot path): the
        seconds to stop reading for, as :meth:`pause`."""
        self.left -= size + self.per_message
        return self.pause() if self.left < 0 else 0.0

    def pause(self) -> float:
        """A frame took more than was left: refill for the time passed; the seconds to
        stop reading for (0: go on). Sets :attr:`closing` once the socket has been over
        its budget for ``close_after_s``."""
        budget, now = self.budget, self._clock()
        elapsed, self._refilled = now - self._refilled, now
        self.refills += 1
        self.left = min(self._burst, self.left + elapsed * budget.bytes_per_s)
        if self.left >= 0:
            # The refill covered it. A socket that had to pause within the last burst_s
            # is still over its budget: it used up what the pause gave it at once.
            if self.over_since is not None and now - self._paused_at > budget.burst_s:
                self.over_since, self.warned = None, False
            return 0.0
        # Long enough for a few frames to be read, not one at a time.
        wait = max(-self.left / budget.bytes_per_s, budget.burst_s / 20)
        self._paused_at = now
        if self.over_since is None:
            self.over_since = now
        over = now - self.over_since
        limits = (f"{budget.messages_per_s:g} messages and {budget.bytes_per_s / 1024:g} KiB "
                  "a second")
        if over >= budget.close_after_s:
            self.closing = f"over its budget of {limits} for {over:.0f} s"
            self._tell("close", self.closing)
        elif over >= budget.warn_after_s and not self.warned:
            self.warned = True
            self._tell("warn", f"sends more than its budget of {limits}: its reads are paused")
        return wait

    def _tell(self, stage: str, description: str) -> None:
        if self.on_over is not None:
            self.on_over(stage, description)

    # --- whether the socket was heard from --------------------------------------------

    def mark(self) -> tuple[int, float]:
        """Where the reads stand now; :meth:`heard_since` says if a frame came since."""
        return self.refills, self.left

    def heard_since(self, mark: tuple[int, float]) -> bool:
        return (self.refills, self.left) != mark
