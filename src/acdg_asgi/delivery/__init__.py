"""After the call: each finished call's record, delivered where the contact centre wants it.

    bridge = BridgeApp(
        ...,
        records=[
            JsonLines("calls.jsonl"),                       # a file, one record per line
            RecordWebhook("https://crm.example.com/hooks/calls",
                          secret=os.environ["ACDG_WEBHOOK_SECRET"],
                          spool="/var/spool/acdg"),         # survives an outage and restarts
        ],
    )

A sink is handed each :class:`~acdg_asgi.events.CallRecord` as its call ends
(:meth:`RecordSink.put`, which never blocks the call) and delivers it from a task of its
own while the bridge runs (its lifespan, or ``async with bridge``).

Records hold the caller's number and the whole transcript: personal data. Keep the
files and the spool where such data may live, and rotate or ship them on.
"""

from __future__ import annotations

from typing import Protocol

from ..call import Measure
from ..events import CallRecord, Event, SessionEndEvent
from ..observability.observer import CallView
from .jsonl import JsonLines
from .spool import DirectorySpool
from .webhook import RecordWebhook, sign, verify

__all__ = [
    "DirectorySpool", "JsonLines", "RecordFeed", "RecordSink", "RecordWebhook", "sign", "verify",
]


class RecordSink(Protocol):
    def put(self, record: CallRecord) -> None:
        """Take a finished call's record; never blocks and never raises."""
        ...

    async def run(self) -> None:
        """Deliver what was put, until cancelled."""
        ...

    async def flush(self) -> None:
        """The bridge is stopping: deliver or keep what still waits, quickly."""
        ...


class RecordFeed:
    """The observer that hands each finished call's record to the sinks."""

    def __init__(self, sinks: tuple[RecordSink, ...]) -> None:
        self._sinks = sinks

    def call_event(self, call: CallView, event: Event) -> None:
        if isinstance(event, SessionEndEvent) and event.record is not None:
            for sink in self._sinks:
                sink.put(event.record)

    def call_started(self, call: CallView) -> None:
        pass

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None:
        pass

    def call_finished(self, call: CallView) -> None:
        pass

    def refused(self, cause: str) -> None:
        pass

    def protocol_error(self, peer: str, kind: str) -> None:
        pass
