"""Live events: each call's application events as JSON, for pages that watch calls.

:class:`LiveEvents` is an :class:`~.observer.Observer`. It turns every event a call emits
into one JSON object, keeps the most recent ones per call (so a page that connects late
still sees the call from its start), and hands them to whoever subscribed to that call.
``BridgeApp(phone=True)`` (or ``live=True``) installs one and serves it as
Server-Sent Events at ``GET <mount>/live/events?call=<conversationId>`` (one call) and
``GET <mount>/live/events`` (every call), and lists the calls in progress at
``GET <mount>/live/calls`` (:class:`LiveCall`).

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
A call that moves to another instance stays one stream: the old owner's ``session_end``
(reason ``migrated``, :func:`handed_over`) does not end it, and the new owner goes on from
the next ``seq`` with ``session_resumed`` (see :mod:`acdg_asgi.cluster.live`); if no
other instance takes the call up within ``wait_for_call_s``, the stream ends there.
``seq`` has no gaps unless events were dropped: a subscriber that falls more than
``max_events_per_call`` behind (or joins a call that has emitted more than that) skips
ahead, and the jump in ``seq`` shows how many it missed. A subscriber resumes after a
given ``seq`` (SSE ``Last-Event-ID``) without repeats.

The stream of every call carries the same objects (each names its ``conversation_id``;
its ``seq`` is still the call's own); its SSE ids count across calls, and it starts with
the next event unless resumed after an id.

Nothing here ever waits on a subscriber: the call's side only appends to a bounded
buffer and wakes the readers. With a shared store the events also go to a
:class:`LiveOutbox`, bounded too, which a publisher task empties into the store (see
:mod:`acdg_asgi.cluster.live`). With no :class:`LiveEvents` installed a call pays nothing.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from typing import Final, Protocol

import anyio
import msgspec

from ..call import Measure
from ..events import EVENT_NAMES, Event, SessionEndEvent, SessionStartEvent
from .observer import CallView

__all__ = [
    "SCHEMA_VERSION", "LiveCall", "LiveEvent", "LiveEvents", "LiveItem", "LiveOutbox",
    "LiveSource", "event_name", "handed_over",
]

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


class _Reason(msgspec.Struct):
    reason: str | None = None


_reason: Final = msgspec.json.Decoder(_Reason)


def handed_over(event: LiveEvent) -> bool:
    """The old owner's end of a call that moved to another instance: its ``session_end``
    with reason ``migrated``, after which the call's stream goes on there."""
    return event.event == _END and _reason.decode(event.data).reason == _MIGRATED


class LiveEvent(msgspec.Struct, frozen=True):
    """One event of one call, encoded once for every subscriber."""

    seq: int
    event: str
    data: bytes  # the JSON object of the schema above
    id: str = ""  # the SSE id where it is not ``seq`` (the stream of every call)

    def sse(self) -> bytes:
        """The event as a Server-Sent Events frame."""
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            (self.id or str(self.seq)).encode(), self.event.encode(), self.data)


class LiveCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call in progress, as ``GET <mount>/live/calls`` lists it."""

    conversation_id: str
    session_id: str = ""
    caller: str | None = None
    callee: str | None = None
    started: float = 0.0  # wall clock (Unix seconds) when the call began, wherever it did
    owner: str = ""  # the instance that has the call
    state: str = "active"  # CallState's value: active, transferring, detached, ending, ended


LiveItem = tuple[LiveCall, LiveEvent | None]
"""What a publisher ships: the call as it now is, and its new event (``None``: the call
left this instance without one)."""


class LiveOutbox:
    """Events on their way to a shared store: bounded, so a slow store costs the calls
    nothing; when full the oldest go, and :attr:`dropped` counts them."""

    def __init__(self, size: int = 10_000) -> None:
        if size < 1:
            raise ValueError("LiveOutbox size must be at least 1")
        self._items: deque[LiveItem] = deque(maxlen=size)
        self._ready = anyio.Event()
        self.dropped = 0  # events that never reached the store

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: LiveItem) -> None:
        """Never waits."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def take(self, most: int = 500) -> list[LiveItem]:
        """Up to ``most`` items, oldest first; waits while there are none."""
        while not self._items:
            await self._ready.wait()
            self._ready = anyio.Event()
        count = min(most, len(self._items))
        return [self._items.popleft() for _ in range(count)]


class LiveSource(Protocol):
    """What the live routes read: this instance's :class:`LiveEvents`, or every instance's
    through a shared store."""

    @property
    def shared(self) -> bool:
        """Every instance's calls, not only this one's."""
        ...

    def full(self) -> bool: ...

    def follow(self, conversation_id: str | None, after: str) -> AsyncGenerator[LiveEvent, None]:
        """One call's events after ``after`` (``""``: from its start), or with ``None``
        every call's (``""``: from now). Raises :class:`ValueError` at once for an
        ``after`` this source cannot have given, :class:`OverflowError` when full."""
        ...

    async def calls(self) -> list[LiveCall]: ...


class _Channel:
    """One call's recent events and the readers waiting for more."""

    __slots__ = ("buffer", "call", "changed", "finished", "moved", "next_seq", "readers",
                 "since", "started")

    def __init__(self, size: int, call: LiveCall) -> None:
        self.buffer: deque[LiveEvent] = deque(maxlen=size)
        self.next_seq = 1
        self.since = 1  # the first seq this instance gave the call (later after a move here)
        self.started = False
        self.finished = False
        self.moved = False  # the call went on at another instance
        self.readers = 0
        self.changed = anyio.Event()
        self.call = call

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
    ``max_events_all``: events kept for the stream of every call.
    ``instance``: the instance named as each call's owner (the bridge sets it).
    """

    def __init__(
        self,
        *,
        max_events_per_call: int = 500,
        max_finished_calls: int = 50,
        max_subscribers: int = 100,
        wait_for_call_s: float = 30.0,
        max_events_all: int = 2000,
        instance: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min(max_events_per_call, max_finished_calls, max_subscribers, max_events_all) < 1:
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
        self.instance = instance
        self._all: deque[LiveEvent] = deque(maxlen=max_events_all)
        self._all_seq = 0
        self._all_changed = anyio.Event()
        self.outbox: LiveOutbox | None = None  # set when a shared store carries the events

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
        self._wake_all()

    def open(self) -> None:
        self.closed = False

    def full(self) -> bool:
        """No room for another subscription."""
        return self._subscribers >= self.max_subscribers

    @contextmanager
    def seat(self) -> Iterator[None]:
        """One subscription's place: :class:`OverflowError` when there is none."""
        if self.full():
            raise OverflowError(f"{self._subscribers} live subscribers already")
        self._subscribers += 1
        try:
            yield
        finally:
            self._subscribers -= 1

    def covers(self, conversation_id: str, after: str) -> bool:
        """The call's stream after ``after`` (a seq as :meth:`follow` takes it) is here:
        it is (or ended) on this instance, and this instance has had it since then.
        Raises :class:`ValueError` for an ``after`` that is not a seq."""
        channel = self._channels.get(conversation_id)
        return channel is not None and channel.started and not channel.moved \
            and channel.since <= (_number(after) or 0) + 1

    def moved(self, conversation_id: str) -> bool:
        """The call left this instance for another, where its stream goes on."""
        channel = self._channels.get(conversation_id)
        return channel is not None and channel.moved

    def live_calls(self) -> list[LiveCall]:
        """The calls in progress here, oldest first."""
        found = [c.call for c in self._channels.values() if c.started and not c.finished]
        return sorted(found, key=lambda call: call.started)

    # --- the Observer side: called by each call, never waits ------------------------------

    def call_started(self, call: CallView) -> None:
        cid = call.conversation_id
        channel = self._channel(cid)
        self._begin(channel, call)
        if channel.finished:  # the same conversation again: taken back over after a move
            channel.finished = channel.moved = False
            self._finished.pop(cid, None)

    def continue_after(self, conversation_id: str, seq: int | None) -> None:
        """The call is taken over here and its stream had reached ``seq`` elsewhere
        (``None``: unknown): its next event here is ``seq + 1``. Call before the call
        starts here."""
        channel = self._channel(conversation_id)
        if seq is None:  # what this instance kept from an earlier stretch is not the start
            if channel.started:
                channel.buffer.clear()
                channel.since = channel.next_seq
        elif seq >= channel.next_seq:
            channel.buffer.clear()  # what came between was not here
            channel.next_seq = channel.since = seq + 1

    def call_event(self, call: CallView, event: Event) -> None:
        channel = self._channel(call.conversation_id)
        if isinstance(event, SessionEndEvent) and event.reason == _MIGRATED:
            channel.moved = True  # not the call's end: its stream goes on where it went
        self._begin(channel, call)
        name = event_name(event)
        now = self._clock()
        head = b'{"event":%s,"seq":%d,"time":%.3f,' % (
            _encoder.encode(name), channel.next_seq, now)
        body = _encoder.encode(event)
        data = head + body[1:] if len(body) > 2 else head[:-1] + b"}"
        item = LiveEvent(channel.next_seq, name, data)
        channel.buffer.append(item)
        channel.next_seq += 1
        channel.wake()
        self._all_seq += 1
        self._all.append(LiveEvent(item.seq, name, data, str(self._all_seq)))
        self._wake_all()
        channel.call = _updated(channel.call, call, event)
        if self.outbox is not None:
            self.outbox.put((channel.call, item))

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None:
        pass

    def call_finished(self, call: CallView) -> None:
        cid = call.conversation_id
        channel = self._channels.get(cid)
        if channel is None:
            return
        channel.finished = True
        channel.wake()
        if channel.call.state != "ended":
            channel.call = msgspec.structs.replace(channel.call, state="ended")
            if self.outbox is not None:
                self.outbox.put((channel.call, None))
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

    async def subscribe_all(self, *, after: int | None = None) -> AsyncGenerator[LiveEvent, None]:
        """Every call's events, each with its SSE id, after that id (``None``: from the
        next one), until :meth:`close`. Raises :class:`OverflowError` when full."""
        with self.seat():
            seq = self._all_seq if after is None else after
            while not self.closed:
                events = _after(self._all, seq)
                for item in events:
                    yield item
                if events:
                    seq = int(events[-1].id)
                else:
                    await self._all_changed.wait()

    # --- as a LiveSource: the calls of this instance -----------------------------------------

    shared = False

    def follow(self, conversation_id: str | None, after: str) -> AsyncGenerator[LiveEvent, None]:
        start = _number(after)
        if self.full():
            raise OverflowError(f"{self._subscribers} live subscribers already")
        if conversation_id is None:  # from now: from this request, not the first read
            return self.subscribe_all(after=self._all_seq if start is None else start)
        return self.subscribe(conversation_id, after=start or 0)

    async def calls(self) -> list[LiveCall]:
        return self.live_calls()

    def _wake_all(self) -> None:
        self._all_changed.set()
        self._all_changed = anyio.Event()

    def _begin(self, channel: _Channel, call: CallView) -> None:
        if not channel.started:
            channel.started = True
            # The call's own start and parties, also when it began on another instance.
            started = getattr(call, "started_wall", None)
            details = getattr(call, "details", None)
            channel.call = LiveCall(conversation_id=call.conversation_id,
                                    session_id=call.session_id, started=started or self._clock(),
                                    caller=details.caller if details else None,
                                    callee=details.callee if details else None,
                                    owner=self.instance, state=_state(call))

    def _channel(self, cid: str) -> _Channel:
        channel = self._channels.get(cid)
        if channel is None:
            channel = self._channels[cid] = _Channel(self.max_events_per_call,
                                                     LiveCall(conversation_id=cid))
        return channel


def _after(buffer: deque[LiveEvent], seq: int) -> list[LiveEvent]:
    """The events of the stream of every call after id ``seq`` (its ids count up by one)."""
    if not buffer or int(buffer[-1].id) <= seq:
        return []
    return list(buffer)[max(0, seq + 1 - int(buffer[0].id)):]


def _number(after: str) -> int | None:
    """``after`` as given (``""``: none); :class:`ValueError` for anything but a number."""
    if not after.strip():
        return None
    if not after.strip().isdigit():
        raise ValueError("Last-Event-ID and ?after= take an id this stream sent")
    return int(after)


def _state(call: CallView) -> str:
    state = getattr(call, "state", None)
    return str(state.value) if state is not None else "active"


def _updated(known: LiveCall, call: CallView, event: Event) -> LiveCall:
    """The call's entry after ``event``: the same object unless something changed."""
    changes: dict[str, object] = {}
    if isinstance(event, SessionStartEvent):
        details = event.details
        changes["caller"] = event.caller or (details.caller if details else None)
        changes["callee"] = details.callee if details else None
        changes["session_id"] = event.session_id
    state = "ended" if isinstance(event, SessionEndEvent) else _state(call)
    if state != known.state:
        changes["state"] = state
    return msgspec.structs.replace(known, **changes) if changes else known


_END: Final = _NAMES[SessionEndEvent]
_MIGRATED: Final = "migrated"  # SessionEndEvent.reason: the call was handed to another instance
