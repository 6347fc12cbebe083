"""Live events: each call's application events as JSON, for pages that watch calls.

:class:`LiveEvents` is an :class:`~.observer.Observer`. It turns every event a call emits
into one JSON object, keeps the most recent ones per call (so a page that connects late
still sees the call from its start), and hands them to whoever subscribed to that call.
``BridgeApp(phone=True)`` (or ``live=True``) installs one and serves it as
Server-Sent Events at ``GET <mount>/live/events?call=<conversationId>``.

One event on the wire (version 1; the SSE frame is ``id: <seq>``, ``event: <event>``,
``data: <the object>``)::

    {
      "event": "conversation_text",  # the name handlers register with (EVENT_NAMES)
      "seq": 4,                      # this event's place in its call's stream, from 1
      "time": 1764590400.123,        # wall clock when the bridge emitted it (Unix seconds)
      "session_id": "9f0c...",       # then the event's own fields, as msgspec encodes
      "conversation_id": "c0ff...",  #   the event (see acdg_asgi.events): "at" is the
      "at": 12.345,                  #   bridge's monotonic clock in seconds,
      "role": "user",                #   the rest depends on the event
      "content": "Where is my order?"
    }

A call's stream starts with its first event (VAIC's ``start`` activity, then
``session_start``) and ends with ``session_end``, after which the subscription closes.
``seq`` has no gaps unless events were dropped: a subscriber that falls more than
``max_events_per_call`` behind (or joins a call that has emitted more than that) skips
ahead, and the jump in ``seq`` shows how many it missed. A subscriber resumes after a
given ``seq`` (SSE ``Last-Event-ID``) without repeats.

Nothing here ever waits on a subscriber: the call's side only appends to a bounded
buffer and wakes the readers. With no :class:`LiveEvents` installed a call pays nothing.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable
from typing import Final

import anyio
import msgspec

from ..call import Measure
from ..events import EVENT_NAMES, Event, SessionEndEvent
from .observer import CallView

__all__ = ["SCHEMA_VERSION", "LiveEvent", "LiveEvents", "event_name"]

SCHEMA_VERSION: Final = 1

_NAMES: Final = {cls: name for name, cls in EVENT_NAMES.items()}
_encoder: Final = msgspec.json.Encoder()


def event_name(event: Event) -> str:
    """The name an event is registered under: ``ConversationTextEvent``, ``conversation_text``."""
    name = _NAMES.get(type(event))
    if name is None:  # an event class without a registered name: derived from the class
        stem = type(event).__name__.removesuffix("Event")
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", stem).lower()
    return name


class LiveEvent(msgspec.Struct, frozen=True):
    """One event of one call, encoded once for every subscriber."""

    seq: int
    event: str
    data: bytes  # the JSON object of the schema above

    def sse(self) -> bytes:
        """The event as a Server-Sent Events frame."""
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (self.seq, self.event.encode(), self.data)


class _Channel:
    """One call's recent events and the readers waiting for more."""

    __slots__ = ("buffer", "changed", "finished", "next_seq", "readers", "started")

    def __init__(self, size: int) -> None:
        self.buffer: deque[LiveEvent] = deque(maxlen=size)
        self.next_seq = 1
        self.started = False
        self.finished = False
        self.readers = 0
        self.changed = anyio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def after(self, seq: int) -> list[LiveEvent]:
        """The buffered events after ``seq``, oldest first."""
        if not self.buffer or self.buffer[-1].seq <= seq:
            return []
        skip = max(0, seq + 1 - self.buffer[0].seq)
        return list(self.buffer)[skip:]


class LiveEvents:
    """Fans each call's events out as JSON, with a bounded replay buffer per call.

    ``max_events_per_call``: events kept per call for late subscribers.
    ``max_finished_calls``: ended calls whose events stay available (oldest go first).
    ``max_subscribers``: subscriptions at once; :meth:`subscribe` refuses more.
    ``wait_for_call_s``: how long a subscription to a call that has not started waits.
    """

    def __init__(
        self,
        *,
        max_events_per_call: int = 500,
        max_finished_calls: int = 50,
        max_subscribers: int = 100,
        wait_for_call_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min(max_events_per_call, max_finished_calls, max_subscribers) < 1:
            raise ValueError("LiveEvents limits must be at least 1")
        self.max_events_per_call = max_events_per_call
        self.max_finished_calls = max_finished_calls
        self.max_subscribers = max_subscribers
        self.wait_for_call_s = wait_for_call_s
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._subscribers = 0
        self.closed = False  # by close(): subscriptions end, new ones end at once

    def __repr__(self) -> str:
        return f"<LiveEvents calls={len(self._channels)} subscribers={self._subscribers}>"

    @property
    def subscribers(self) -> int:
        return self._subscribers

    def close(self) -> None:
        """End every subscription (the bridge has shut down); :meth:`open` undoes it."""
        self.closed = True
        for channel in self._channels.values():
            channel.wake()

    def open(self) -> None:
        self.closed = False

    def full(self) -> bool:
        """No room for another subscription."""
        return self._subscribers >= self.max_subscribers

    # --- the Observer side: called by each call, never waits ------------------------------

    def call_started(self, call: CallView) -> None:
        cid = call.conversation_id
        channel = self._channel(cid)
        channel.started = True
        if channel.finished:  # the same conversation again: taken back over after a move
            channel.finished = False
            self._finished.pop(cid, None)

    def call_event(self, call: CallView, event: Event) -> None:
        channel = self._channel(call.conversation_id)
        name = event_name(event)
        head = b'{"event":%s,"seq":%d,"time":%.3f,' % (
            _encoder.encode(name), channel.next_seq, self._clock())
        body = _encoder.encode(event)
        data = head + body[1:] if len(body) > 2 else head[:-1] + b"}"
        channel.buffer.append(LiveEvent(channel.next_seq, name, data))
        channel.next_seq += 1
        channel.started = True
        channel.wake()

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None:
        pass

    def call_finished(self, call: CallView) -> None:
        cid = call.conversation_id
        channel = self._channels.get(cid)
        if channel is None:
            return
        channel.finished = True
        channel.wake()
        self._finished[cid] = None
        self._finished.move_to_end(cid)
        while len(self._finished) > self.max_finished_calls:
            old, _ = self._finished.popitem(last=False)
            gone = self._channels.get(old)
            if gone is not None and gone.finished:
                del self._channels[old]

    def refused(self, cause: str) -> None:
        pass

    def protocol_error(self, peer: str, kind: str) -> None:
        pass

    # --- the subscriber side ---------------------------------------------------------------

    async def subscribe(
        self, conversation_id: str, *, after: int = 0
    ) -> AsyncGenerator[LiveEvent, None]:
        """The call's events after ``after`` (0: from its start), until ``session_end``.

        Waits up to ``wait_for_call_s`` for a call that has not started. Raises
        :class:`OverflowError` when ``max_subscribers`` are already subscribed.
        """
        if self.full():
            raise OverflowError(f"{self._subscribers} live subscribers already")
        channel = self._channel(conversation_id)
        channel.readers += 1
        self._subscribers += 1
        try:
            if not channel.started:
                with anyio.move_on_after(self.wait_for_call_s):
                    while not channel.started and not self.closed:
                        await channel.changed.wait()
            seq = after
            while channel.started:
                events = channel.after(seq)
                for item in events:
                    yield item
                    if item.event == _END:
                        return
                if events:
                    seq = events[-1].seq
                if (channel.finished or self.closed) and not channel.after(seq):
                    return
                if not events:
                    await channel.changed.wait()
        finally:
            channel.readers -= 1
            self._subscribers -= 1
            if not channel.started and channel.readers == 0:
                self._channels.pop(conversation_id, None)  # the call never came

    def _channel(self, cid: str) -> _Channel:
        channel = self._channels.get(cid)
        if channel is None:
            channel = self._channels[cid] = _Channel(self.max_events_per_call)
        return channel


_END: Final = _NAMES[SessionEndEvent]
