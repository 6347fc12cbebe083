"""Load generator: many simulated VAIC calls against one bot WebSocket URL.

Each call is what VoiceAI Connect does in Bot API streaming mode: ``session.initiate``
offering ``raw/lpcm16``, ``userStream.start``, then one ``userStream.chunk`` of 20 ms every
20 ms, paced against a monotonic clock without drift, for ``duration_s``; then
``session.end``. Calls start evenly spread over ``ramp_s``.

Echo mode (the default) expects the agent to send every caller frame straight back, so the
bot returns it as ``playStream.chunk``. The first 6 bytes of each caller frame carry the
frame number and a per-call tag, which is how an echoed chunk is matched to the frame it
came from: its added latency (caller -> bot -> agent -> bot -> caller) and whether a frame
was lost (sent but never echoed).

Barge-in mode expects the stand-in agent's scripted turns: the caller says something (a
voiced tone), the agent answers, and 300 ms into the answer the caller speaks again. Each
interruption records when ``userStream.speech.started`` and ``playStream.stop`` arrived
and how much agent audio came after.

The client is a minimal RFC 6455 client on an asyncio Protocol, with one timer per call
and no task per frame, so the generator stays cheap next to the process under test.

Usage::

    python benchmarks/loadgen.py --url ws://127.0.0.1:8000/ --calls 50 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import json
import math
import struct
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
from wsclient import MaskedTemplate, WsClient

FRAME_MS: Final = 20
FRAME_S: Final = FRAME_MS / 1000
MEDIA_FORMAT: Final = "raw/lpcm16"
SAMPLE_RATE: Final = 16000
FRAME_BYTES: Final = SAMPLE_RATE * 2 * FRAME_MS // 1000  # 640
TAG: Final = struct.Struct("<IH")  # frame number, call tag: 6 bytes = 8 base64 characters
TAG_B64: Final = 8
FRAME_B64: Final = (FRAME_BYTES + 2) // 3 * 4  # 856
BARGE_AFTER_S: Final = 0.3  # interrupt the agent this long after its play stream starts
EARLY_S: Final = 0.002
UTTERANCE_FRAMES: Final = 30  # 600 ms of caller speech per utterance
# Timestamps come from the monotonic clock: uvloop's loop.time() counts whole milliseconds.
clock: Final = time.monotonic


@dataclass(frozen=True)
class LoadConfig:
    url: str
    calls: int
    duration_s: float  # caller audio per call
    ramp_s: float = 2.0  # calls start spread evenly over this
    warmup_s: float = 1.0  # after the ramp, before the measurement window opens
    token: str | None = None  # sent as "Authorization: Bearer <token>"
    barge_in: bool = False
    drain_s: float = 1.0  # wait this long for the last echoes before session.end
    setup_timeout_s: float = 10.0


@dataclass(frozen=True)
class BargeIn:
    """One interruption of the agent, as the caller saw it."""

    react_ms: float | None  # first voiced caller frame sent -> playStream.stop received
    started_to_stop_ms: float | None  # userStream.speech.started -> playStream.stop (signed)
    audio_after_ms: float  # agent audio received after userStream.speech.started
    heard_after_ms: float  # audio already sent but not yet played when the bot reacted


@dataclass
class LoadResult:
    calls: int
    window: tuple[float, float]  # time.monotonic()
    failures: list[str]
    ok_calls: int = 0
    sent: int = 0
    echoed: int = 0
    duplicates: int = 0
    garbled: int = 0  # echoed audio that is not one of the call's own frames
    latencies_ms: list[float] = field(default_factory=list)  # frames sent in the window
    setup_ms: list[float] = field(default_factory=list)  # connect -> userStream.started
    # How late the load generator's own timers fired for frames sent in the window: a
    # busy load side shows here before it shows as latency of the target.
    send_lag_ms: list[float] = field(default_factory=list)
    call_seconds: float = 0.0  # caller audio streamed inside the window, summed over calls
    barge_ins: list[BargeIn] = field(default_factory=list)
    barge_missed: int = 0  # interruptions that got neither speech.started nor playStream.stop

    @property
    def lost(self) -> int:
        return self.sent - self.echoed

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calls": self.calls,
            "ok_calls": self.ok_calls,
            "failed_calls": len(self.failures),
            "failures": sorted(set(self.failures))[:5],
            "sent": self.sent,
            "echoed": self.echoed,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "garbled": self.garbled,
            "latency_ms": percentiles(self.latencies_ms),
            "setup_ms": percentiles(self.setup_ms),
            "send_lag_ms": percentiles(self.send_lag_ms),
            "call_seconds": round(self.call_seconds, 3),
        }
        if self.barge_ins or self.barge_missed:
            out["barge_in"] = barge_summary(self.barge_ins, self.barge_missed)
        return out


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

    return {"n": len(ordered), "p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1], 3)}


def barge_summary(events: list[BargeIn], missed: int) -> dict[str, Any]:
    def col(name: str) -> dict[str, float | None]:
        return percentiles([v for e in events if (v := getattr(e, name)) is not None])

    return {
        "events": len(events),
        "stopped": sum(e.react_ms is not None for e in events),
        "missed": missed,
        "react_ms": col("react_ms"),
        "started_to_stop_ms": col("started_to_stop_ms"),
        "audio_after_ms": col("audio_after_ms"),
        "heard_after_ms": col("heard_after_ms"),
    }


# --- audio and message templates -------------------------------------------------------------


def _tone_frame() -> bytes:
    """20 ms of a 440 Hz tone, loud enough to count as speech for the stand-in agent."""
    n = FRAME_BYTES // 2
    samples = (int(8000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)) for i in range(n))
    return struct.pack(f"<{n}h", *samples)


VOICED: Final = _tone_frame()
SILENT: Final = bytes(FRAME_BYTES)


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


class Templates:
    """One call's messages, encoded once. Caller audio frames are masked WebSocket frames
    built once (the call's masking key is fixed); only a frame's tag varies."""

    def __init__(self, cid: str, key: bytes) -> None:
        head = b'{"type":"userStream.chunk","conversationId":"' + cid.encode() + b'","audioChunk":"'
        tail = b'"}'
        # The tag is 6 bytes, a multiple of 3, so its base64 stands alone before the rest.
        self.chunk = MaskedTemplate(key, head, TAG_B64, _b64(SILENT[TAG.size :]) + tail)
        self.silent = MaskedTemplate(key, head + _b64(SILENT), 0, tail).frame(b"")
        self.voiced = MaskedTemplate(key, head + _b64(VOICED), 0, tail).frame(b"")
        self.initiate = json.dumps({
            "type": "session.initiate", "conversationId": cid, "botName": "bench",
            "caller": "+15550100", "expectAudioMessages": True,
            "supportedMediaFormats": [MEDIA_FORMAT],
        }).encode()  # fmt: skip
        self.start = json.dumps({"type": "userStream.start", "conversationId": cid}).encode()
        self.end = json.dumps(
            {"type": "session.end", "conversationId": cid, "reasonCode": "client-disconnected"}
        ).encode()

    def tagged(self, n: int, tag: int) -> bytes:
        """The frame of caller audio frame ``n``."""
        return self.chunk.frame(_b64(TAG.pack(n, tag)))


def echoed_tag(payload: bytes) -> bytes | None:
    """The tag's base64 in a ``playStream.chunk`` of exactly one caller frame, found
    without decoding the message (most echoes); ``None`` for anything else."""
    i = payload.find(b'"audioChunk"')
    if i < 0 or b"playStream.chunk" not in payload[:i]:
        return None
    start = payload.find(b'"', i + 12) + 1
    end = payload.find(b'"', start)
    if end - start != FRAME_B64 or payload.find(b"\\", start, end) >= 0:
        return None
    return payload[start : start + TAG_B64]


class _Msg(msgspec.Struct, rename="camel"):
    type: str
    stream_id: str | None = None
    audio_chunk: bytes = b""
    reason: str | None = None  # session.error
    activities: list[dict[str, Any]] | None = None  # a hangup says why in activityParams

    def why(self) -> str:
        if self.reason:
            return self.reason
        for activity in self.activities or ():
            params = activity.get("activityParams") or {}
            return f"{activity.get('name')}: {params.get('hangupReason', params)}"
        return ""


_decode: Final = msgspec.json.Decoder(_Msg).decode


# --- one simulated call ----------------------------------------------------------------------


SLOT_S: Final = 0.001
SLOTS: Final = round(FRAME_S / SLOT_S)


class Metronome:
    """One timer for every call's caller audio, instead of one per call and frame.

    The 20 ms period is cut into 1 ms slots (uvloop's timers count whole milliseconds in
    any case); a call joins the slot of its phase, and each tick sends what the calls of
    the slots now due owe. A late tick catches up on every slot it missed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: list[dict[Call, None]] = [{} for _ in range(SLOTS)]
        self.next_tick = 0  # the tick (in slots since the clock's zero) to serve next
        self.timer: asyncio.TimerHandle | None = None

    def join(self, call: Call, phase: float, now: float) -> float:
        """Add ``call`` at ``phase`` within the period; when its first frame is due."""
        slot = round(phase / SLOT_S) % SLOTS
        tick = math.ceil(now / SLOT_S)
        tick += (slot - tick) % SLOTS
        self.slots[slot][call] = None
        if self.timer is None or tick < self.next_tick:
            self._arm(tick, now)
        return tick * SLOT_S

    def leave(self, call: Call) -> None:
        for slot in self.slots:
            slot.pop(call, None)

    def _arm(self, tick: int, now: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.next_tick = tick
        self.timer = self.loop.call_later(max(0.0, tick * SLOT_S - now), self._fire)

    def _fire(self) -> None:
        self.timer = None
        now = clock()
        tick, slots = self.next_tick, self.slots
        last = math.floor((now + SLOT_S / 2) / SLOT_S)  # a tick that fired a little early
        for t in range(tick, max(tick, last) + 1):
            slot = slots[t % SLOTS]
            if slot:
                done = [call for call in list(slot) if not call.tick(now)]
                for call in done:
                    del slot[call]
            if t - tick >= SLOTS:
                break  # a whole period caught up: every call has sent what it owes
        tick = max(tick, last) + 1
        for step in range(SLOTS):  # the next slot with calls in it
            if slots[(tick + step) % SLOTS]:
                self._arm(tick + step, now)
                return



class Call(WsClient):
    """One VAIC call: handshake, session, real-time caller audio, echo matching."""

    def __init__(self, index: int, cfg: LoadConfig, host: str, path: str,
                 metronome: Metronome) -> None:
        super().__init__(host, path, cfg.token)
        self.cfg = cfg
        self.loop = asyncio.get_running_loop()
        self.metronome = metronome
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.tpl = Templates(f"bench-{index}-{uuid.uuid4().hex[:8]}", self.mask_key)
        self.tag = (0xAC00 + index) & 0xFFFF
        self.total = round(cfg.duration_s / FRAME_S)
        self.sent_at = [0.0] * self.total
        self.echoed = bytearray(self.total)
        self.n = 0  # frames sent
        self.n_echoed = 0
        self.duplicates = 0
        self.garbled = 0
        self.latencies_ms: list[float] = []
        self.send_lag_ms: list[float] = []
        self.window = (math.inf, math.inf)
        self.t_connect = clock()
        self.setup_ms: float | None = None
        self.t0 = 0.0  # when frame 0 was due
        # Calls are independent, so their frames are spread over the 20 ms period, evenly
        # (golden-ratio steps), not sent in step: 100 calls would otherwise burst at once.
        self.phase = (index * 0.6180339887498949) % 1.0 * FRAME_S
        self.state = "handshake"
        self.failure: str | None = None
        self.rx = bytearray()  # echoed audio not yet a whole frame (chunks resized by the bot)
        self.timer: asyncio.TimerHandle | None = None
        self.barge = Barger() if cfg.barge_in else None

    # --- session ---

    def on_open(self) -> None:
        self.state = "initiating"
        self.send_text(self.tpl.initiate)

    def on_text(self, payload: bytes) -> None:
        now = clock()
        if self.barge is None and not self.rx and (tag := echoed_tag(payload)) is not None:
            self._match(binascii.a2b_base64(tag), now)  # the usual case: one echoed frame
            return
        try:
            msg = _decode(payload)
        except msgspec.DecodeError:
            self.fail("undecodable message from the bot")
            return
        kind = msg.type
        if kind == "playStream.chunk":
            if self.barge is None:
                self._on_echo(msg.audio_chunk, now)
            else:
                self.barge.on_audio(msg.stream_id, len(msg.audio_chunk), now)
        elif self.barge is not None and kind in BARGE_MESSAGES:
            self.barge.on_message(kind, msg.stream_id, now)
        elif kind == "session.accepted" and self.state == "initiating":
            self.state = "starting"
            self.send_text(self.tpl.start)
        elif kind == "userStream.started" and self.state == "starting":
            self.state = "streaming"
            self.setup_ms = (now - self.t_connect) * 1000
            self.t0 = self.metronome.join(self, self.phase, now)
        elif kind in ("session.error", "activities") and self.state != "ending":
            self.fail(f"{kind} from the bot ({msg.why()})")

    def on_closed(self, reason: str) -> None:
        if self.state != "ending":
            self.fail(reason)
        self._finish()

    def fail(self, reason: str) -> None:
        if self.state != "ending":
            self.failure = f"{self.state}: {reason}"
            self.state = "ending"
        self.close()
        self._finish()

    def _finish(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.metronome.leave(self)
        if not self.done.done():
            self.done.set_result(None)

    # --- caller audio ---

    def tick(self, now: float) -> bool:
        """Send the frames due by ``now`` (the metronome's call); ``False`` once done."""
        n = self.n
        late = now - self.t0 - n * FRAME_S
        # uvloop's timers have 1 ms resolution and may fire a little early: a frame due
        # within EARLY_S goes now rather than after another wake-up.
        if late < -EARLY_S or self.state != "streaming":
            return self.state == "streaming"
        if self.window[0] <= now < self.window[1]:
            self.send_lag_ms.append(late * 1000 if late > 0 else 0.0)
        due = min(self.total, n + 1 + math.floor((late + EARLY_S) / FRAME_S))
        barge = self.barge
        while n < due:  # more than one only when the loop was late
            if barge is None:
                self.sent_at[n] = now
                self.send_frame(self.tpl.tagged(n, self.tag))
            else:
                self.send_frame(self.tpl.voiced if barge.voiced(now) else self.tpl.silent)
            n += 1
        self.n = n
        if n < self.total:
            return True
        if barge is None and self.n_echoed == self.total:
            self._end()
        else:
            self.state = "draining"
            self.timer = self.loop.call_later(self.cfg.drain_s, self._end)
        return False

    def _end(self) -> None:
        if self.state == "ending":
            return
        self.state = "ending"
        self.send_text(self.tpl.end)
        self.timer = self.loop.call_later(1.0, self._hang_up)  # the bot should close first

    def _hang_up(self) -> None:
        self.close()
        self._finish()

    # --- echoes ---

    def _on_echo(self, audio: bytes, now: float) -> None:
        if len(audio) == FRAME_BYTES and not self.rx:
            self._match(audio, now)
            return
        self.rx += audio
        while len(self.rx) >= FRAME_BYTES:
            self._match(bytes(self.rx[:FRAME_BYTES]), now)
            del self.rx[:FRAME_BYTES]

    def _match(self, frame: bytes, now: float) -> None:
        n, tag = TAG.unpack_from(frame)
        if tag != self.tag or n >= self.n:
            self.garbled += 1
            return
        if self.echoed[n]:
            self.duplicates += 1
            return
        self.echoed[n] = 1
        self.n_echoed += 1
        sent = self.sent_at[n]
        if self.window[0] <= sent < self.window[1]:
            self.latencies_ms.append((now - sent) * 1000)
        if self.n_echoed == self.total and self.state == "draining":
            if self.timer is not None:
                self.timer.cancel()
            self._end()


BARGE_MESSAGES: Final = frozenset(
    {"playStream.start", "playStream.stop", "userStream.speech.started"}
)
BYTES_PER_MS: Final = SAMPLE_RATE * 2 / 1000


class Barger:
    """The caller's side of barge-in: speak, let the agent answer, interrupt it, measure.

    An interruption starts when a play stream has been playing for ``BARGE_AFTER_S`` and
    the audio received so far has not finished playing at the caller's end. It lasts one
    utterance; when that ends, what was seen is recorded (or counted as missed).
    """

    def __init__(self) -> None:
        self.voiced_left = UTTERANCE_FRAMES  # the call opens with an utterance
        self.events: list[BargeIn] = []
        self.missed = 0
        self.stream: str | None = None  # the latest play stream, open or not
        self.stream_start = 0.0
        self.stream_bytes = 0
        self.stream_open = False
        self.barging = False
        self.target: str | None = None  # the stream being interrupted
        self.t_barge = 0.0
        self.t_started: float | None = None
        self.t_stop: float | None = None
        self.ahead_ms = 0.0
        self.after_bytes = 0

    def voiced(self, now: float) -> bool:
        """Whether the next caller frame (sent at ``now``) is speech."""
        if self.barging and not self.voiced_left:
            self._record()
        elif not self.barging and self._agent_audible(now):
            self.barging, self.target, self.t_barge = True, self.stream, now
            self.t_started = self.t_stop = None
            self.ahead_ms, self.after_bytes = 0.0, 0
            self.voiced_left = UTTERANCE_FRAMES
        if self.voiced_left:
            self.voiced_left -= 1
            return True
        return False

    def _agent_audible(self, now: float) -> bool:
        elapsed_ms = (now - self.stream_start) * 1000
        return (
            self.stream is not None
            and self.stream != self.target  # each agent turn is interrupted once
            and elapsed_ms >= BARGE_AFTER_S * 1000
            and self.stream_bytes / BYTES_PER_MS > elapsed_ms
        )

    def on_audio(self, stream_id: str | None, nbytes: int, now: float) -> None:
        if stream_id == self.stream:
            self.stream_bytes += nbytes
        if self.barging and self.t_started is not None:
            self.after_bytes += nbytes

    def on_message(self, kind: str, stream_id: str | None, now: float) -> None:
        if kind == "playStream.start":
            self.stream, self.stream_start, self.stream_bytes = stream_id, now, 0
            self.stream_open = True
            return
        if kind == "playStream.stop" and stream_id == self.stream:
            self.stream_open = False
        if not self.barging:
            return
        cut = False
        if kind == "userStream.speech.started" and self.t_started is None:
            self.t_started = now
            cut = self.t_stop is None
        elif kind == "playStream.stop" and stream_id == self.target and self.t_stop is None:
            self.t_stop = now
            cut = True
        if cut:  # audio the caller still hears: sent ahead of real time, not yet played
            played_ms = (now - self.stream_start) * 1000
            self.ahead_ms = max(0.0, self.stream_bytes / BYTES_PER_MS - played_ms)

    def _record(self) -> None:
        self.barging = False
        if self.t_started is None and self.t_stop is None:
            self.missed += 1
            return
        self.events.append(
            BargeIn(
                react_ms=None if self.t_stop is None else (self.t_stop - self.t_barge) * 1000,
                started_to_stop_ms=None
                if self.t_stop is None or self.t_started is None
                else (self.t_stop - self.t_started) * 1000,
                audio_after_ms=self.after_bytes / BYTES_PER_MS,
                heard_after_ms=self.ahead_ms,
            )
        )


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Hooks:
    """Called on the load generator's loop when the measurement window opens and closes."""

    on_window_start: Callable[[], None] | None = None
    on_window_end: Callable[[], None] | None = None


async def run(cfg: LoadConfig, hooks: Hooks | None = None) -> LoadResult:
    """Run ``cfg.calls`` calls to their end and return what they saw."""
    parts = urlsplit(cfg.url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"only ws:// URLs are supported: {cfg.url!r}")
    host, port = parts.hostname, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    start = clock()
    window = (start + cfg.ramp_s + cfg.warmup_s, start + cfg.duration_s - FRAME_S)
    hooks = hooks or Hooks()
    if window[1] > window[0]:
        for at, hook in ((window[0], hooks.on_window_start), (window[1], hooks.on_window_end)):
            if hook is not None:
                loop.call_later(at - start, hook)
    calls: list[Call] = []
    connect_failures: list[str] = []
    metronome = Metronome(loop)

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i * cfg.ramp_s / cfg.calls - clock()))
        try:
            _, call = await asyncio.wait_for(
                loop.create_connection(lambda: Call(i, cfg, f"{host}:{port}", path, metronome),
                                      host, port),
                cfg.setup_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            connect_failures.append(f"connect: {exc!r}")
            return
        call.window = window
        calls.append(call)
        guard = loop.call_later(cfg.setup_timeout_s, _setup_guard, call)
        await call.done  # every call ends by itself: audio, drain, session.end, close
        guard.cancel()

    await asyncio.gather(*(one(i) for i in range(cfg.calls)))
    return _collect(cfg, calls, connect_failures, window)


def _setup_guard(call: Call) -> None:
    if call.state in ("handshake", "initiating", "starting"):
        call.fail("setup timed out")


def _collect(
    cfg: LoadConfig, calls: list[Call], failures: list[str], window: tuple[float, float]
) -> LoadResult:
    result = LoadResult(calls=cfg.calls, window=window, failures=failures)
    for call in calls:
        if call.failure is not None:
            result.failures.append(call.failure)
        elif call.n == call.total:
            result.ok_calls += 1
        result.sent += call.n
        result.echoed += call.n if call.barge is not None else call.n_echoed
        result.duplicates += call.duplicates
        result.garbled += call.garbled
        result.latencies_ms.extend(call.latencies_ms)
        result.send_lag_ms.extend(call.send_lag_ms)
        if call.setup_ms is not None:
            result.setup_ms.append(call.setup_ms)
        if call.t0:
            overlap = min(window[1], call.t0 + call.n * FRAME_S) - max(window[0], call.t0)
            result.call_seconds += max(0.0, overlap)
        if call.barge is not None:
            result.barge_ins.extend(call.barge.events)
            result.barge_missed += call.barge.missed
    return result


def new_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_blocking(cfg: LoadConfig, hooks: Hooks | None = None) -> LoadResult:
    with asyncio.Runner(loop_factory=new_loop_factory()) as runner:
        return runner.run(run(cfg, hooks))


def call_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of a run of calls, shared with ``loadside.py``."""
    ap.add_argument("--url", required=True, help="the bot's WebSocket URL (ws://host:port/path)")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of caller audio")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds over which calls start")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds between ramp and window")
    ap.add_argument("--token", default=None, help="bearer token for the upgrade")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    call_arguments(ap)
    ap.add_argument("--barge-in", action="store_true", help="scripted agent: interrupt it")
    args = ap.parse_args(argv)
    cfg = LoadConfig(
        url=args.url, calls=args.calls, duration_s=args.duration, ramp_s=args.ramp,
        warmup_s=args.warmup, token=args.token, barge_in=args.barge_in,
    )  # fmt: skip
    result = run_blocking(cfg)
    json.dump(result.summary(), sys.stdout, indent=2)
    print()
    return 0 if result.ok_calls else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
