"""The runtime's two shortcuts are the general path, only shorter: proven on random calls.

``CallRuntime.vaic_frame`` hands caller audio on without a full flush (it offers
``to_agent`` and looks only at the agent link's deadline) and ``CallRuntime.agent_frame``
does the same for agent audio (``to_vaic``, the playout's deadline). The general path is
every input followed by :meth:`CallRuntime.flush`. Two runtimes, one with the shortcuts
and one without, get the same random inputs on the same hand-moved clock; after each
input both must have written the same frames to each socket, scheduled the same wake-ups
and told the observers the same things.

The sockets are fakes that write at once (a direct VAIC socket that keeps up, a pushing
agent connection), and the scheduler records what it is asked instead of arming timers:
nothing else in the runtime differs from production.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
from fakes import DirectVaic, PushAgent

from acdg_asgi.audio import FORMATS
from acdg_asgi.call import Call, Measure
from acdg_asgi.config import AgentConfig, Limits, Playout, Reconnect
from acdg_asgi.events import Event
from acdg_asgi.observability.observer import CallView, Observers
from acdg_asgi.policies import CallOptions, Interruption
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.runtime import readers
from acdg_asgi.runtime.app_events import EventHandlers
from acdg_asgi.runtime.call_runtime import CallRuntime
from acdg_asgi.runtime.deps import CallDeps
from acdg_asgi.runtime.scheduler import Scheduler
from acdg_asgi.transports.vaic_asgi import VaicSocket

pytestmark = pytest.mark.anyio

SEEDS = range(40)
INPUTS = 400


class GeneralPath(CallRuntime):
    """The runtime without its shortcuts: every frame goes into the call, then the flush."""

    def vaic_frame(self, frame: str | bytes) -> None:
        msg = readers.vaic_message(self, frame)
        if msg is not None:
            readers.take_vaic(self, msg)
        self.flush()

    def agent_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self.call.agent_audio(frame, self.now())
        else:
            readers.agent_message(self, frame)
            self._hand_over()
        self.flush()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class RecordingScheduler(Scheduler):
    """Keeps the wake-ups it is asked for; the test runs them when the clock reaches them."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(asyncio.get_running_loop())
        self.now = clock
        self.asked: list[float] = []
        self._due: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()

    def wake_at(self, when: float, wake: Callable[[float], None]) -> None:
        self.asked.append(when)
        heapq.heappush(self._due, (when, next(self._seq), wake))

    def run_due(self) -> None:
        for _ in range(10_000):
            if not self._due or self._due[0][0] > self.now():
                return
            when, _, wake = heapq.heappop(self._due)
            wake(when)
        raise AssertionError(f"woken 10000 times at {self.now()}: the runtime would spin")


class Told:
    """An observer that writes down what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def call_started(self, call: CallView) -> None:
        pass

    def call_event(self, call: CallView, event: Event) -> None:
        self.seen.append(("event", event))

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None:
        self.seen.append(("measure", (measure, value)))

    def call_finished(self, call: CallView) -> None:
        self.seen.append(("finished", None))

    def refused(self, cause: str) -> None:
        pass

    def protocol_error(self, peer: str, kind: str) -> None:
        self.seen.append(("protocol_error", (peer, kind)))


async def _never() -> Any:
    raise NotImplementedError


class Side:
    """One runtime with its clock, fake sockets and what they saw."""

    def __init__(self, runtime_class: type[CallRuntime], settings: dict[str, Any]) -> None:
        self.clock = Clock()
        self.scheduler = RecordingScheduler(self.clock)
        self.written: list[tuple[str, bytes]] = []
        self.told = Told()
        deps = CallDeps(connector=None, agent_url="ws://agent", agent_headers={},  # type: ignore[arg-type]
                        scheduler=self.scheduler, handlers=EventHandlers(),
                        observers=Observers([self.told]))
        initiate = ac.SessionInitiate(conversation_id="c1", supported_media_formats=("raw/lpcm16",))
        call = Call(initiate, session_id="s1", media_format=FORMATS["raw/lpcm16"],
                    agent_config=AgentConfig(agent=dg.AgentSettings(greeting="Hi")),
                    now=0.0, **settings)
        self.flushes = 0
        self.shortcuts = {"vaic": 0, "agent": 0}  # audio frames handled without a flush
        side = self

        class Counted(runtime_class):  # type: ignore[valid-type, misc]
            """Counts the flushes (the runtime has slots: a method is replaced only so)."""

            def flush(self) -> None:
                side.flushes += 1
                super().flush()

        self.rt: CallRuntime = Counted(call, deps)
        self.attach_vaic()
        self.rt.flush()

    def attach_vaic(self) -> None:
        socket = VaicSocket(_never, _never, client="test", max_frame_bytes=1 << 20,
                            direct=DirectVaic(self.written))
        self.rt.vaic.attach(socket)

    def connect_agent(self) -> None:
        """What the runtime's agent loop does once a connection is open."""
        self.rt.agent.attach(PushAgent(self.written))
        self.rt.call.agent_connected(self.clock.t)
        self.rt.flush()

    def apply(self, op: tuple[str, Any]) -> None:
        kind, arg = op
        rt, now = self.rt, self.clock.t
        if kind == "time":
            self.clock.t += arg
            self.scheduler.run_due()
        elif kind in ("vaic", "agent"):
            if (rt.vaic.socket if kind == "vaic" else rt.agent.conn) is None:
                return  # frames come only on a socket
            flushes = self.flushes
            (rt.vaic_frame if kind == "vaic" else rt.agent_frame)(arg)
            audio = isinstance(arg, bytes) or '"userStream.chunk"' in arg
            self.shortcuts[kind] += audio and self.flushes == flushes
        elif kind == "agent_connect":
            if rt.call.is_open:  # the agent loop connects no ended call
                self.connect_agent()
        elif kind == "agent_lost":  # the agent loop, when a connection goes
            if rt.agent.drop():
                rt.call.agent_lost(now, "connection lost")
                rt.flush()
        elif kind == "vaic_lost":  # the reader, when VAIC's socket goes
            if rt.vaic.socket is not None and rt.vaic.detach(rt.vaic.socket):
                rt.call.vaic_lost(now)
                rt.flush()
        elif kind == "vaic_resume":
            if rt.call.is_active:
                rt.call.vaic_resumed(now)
                self.attach_vaic()
                rt.flush()
        elif kind == "command":
            arg(rt.call, now)
            rt._hand_over()
            rt.flush()
        else:
            raise AssertionError(kind)

    def seen(self) -> dict[str, Any]:
        return {"written": self.written, "wake-ups": self.scheduler.asked,
                "observed": self.told.seen, "stats": self.rt.call.stats,
                "state": self.rt.call.state}


def apart(fast: Side, general: Side) -> str | None:
    """Where the two runtimes differ, shortly; ``None`` if they do not."""
    a, b = fast.seen(), general.seen()
    for name in a:
        if a[name] != b[name]:
            x, y = a[name], b[name]
            if isinstance(x, list):
                i = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q),
                         min(len(x), len(y)))
                return (f"{name} from #{i}: shortcuts {str(x[i:i + 3])[:300]} / "
                        f"flush {str(y[i:i + 3])[:300]}")
            return f"{name}: shortcuts {x} / flush {y}"
    return None


def vaic_text(message: ac.InboundMessage) -> str:
    return ac.encode(message).decode()


def agent_text(message: dg.ServerMessage) -> str:
    return dg.encode(message).decode()


def _inject(call: Call, now: float) -> None:
    if call.is_active and call.link.ready:
        call.send_to_agent(dg.InjectAgentMessage(message="Still there?"), now)


def _hang_up(call: Call, now: float) -> None:
    if call.is_active:
        call.hangup(now, "bye")


def random_inputs(rng: random.Random) -> list[tuple[str, Any]]:
    """A call's worth of inputs: mostly audio both ways at about real time, with the rest
    of what happens in a call mixed in."""
    frame = bytes(640)
    loud = b"\x00\x40" * 320  # the caller's voice: it confirms a pending barge-in
    ops: list[tuple[str, Any]] = [("agent", agent_text(dg.Welcome(request_id="r")))]
    if rng.random() < 0.5:  # caller audio before the agent is ready: held
        ops += [("vaic", vaic_text(ac.UserStreamChunk(audio_chunk=frame)))] * rng.randint(1, 9)
    ops.append(("agent", agent_text(dg.SettingsApplied())))
    agent_up = vaic_up = True
    for _ in range(INPUTS):
        roll = rng.random()
        if not vaic_up and roll < 0.1:  # VAIC resumes soon, mostly within the grace
            ops.append(("vaic_resume", None))
            vaic_up = True
            continue
        if roll < 0.30 and vaic_up:
            pick = rng.random()
            chunk = frame if pick < 0.8 else loud if pick < 0.9 else bytes(
                rng.choice((320, 1280, 642)))
            # Agent assist now and then: a participant's stream, the caller's or another's.
            who = rng.choice((None, "caller", "agent")) if rng.random() < 0.1 else None
            ops.append(("vaic", vaic_text(ac.UserStreamChunk(audio_chunk=chunk,
                                                             participant=who))))
        elif roll < 0.58:
            if agent_up:
                size = 640 if rng.random() < 0.85 else rng.choice((320, 1280, 4000, 6))
                ops.append(("agent", bytes([rng.randrange(256)]) * size))
        elif roll < 0.83:
            ops.append(("time", rng.choice((0.0, 0.001, 0.005, 0.02, 0.02, 0.03, 0.08, 0.2))))
        elif roll < 0.93:
            if agent_up:
                ops.append(("agent", agent_text(rng.choice((
                    dg.ConversationText(role="assistant", content="An answer."),
                    dg.ConversationText(role="user", content="A question."),
                    dg.AgentAudioDone(),
                    dg.UserStartedSpeaking(),
                    dg.AgentStartedSpeaking(total_latency=0.5),
                    dg.AgentThinking(content="hm"),
                    dg.History(role="assistant", content="An answer."),
                    dg.Error(code="SERVER_BUSY", description="try again"),  # a reconnect
                )))))
        elif roll < 0.96 and vaic_up:
            ops.append(("vaic", rng.choice((
                vaic_text(ac.UserStreamStart()), vaic_text(ac.UserStreamStop()),
                vaic_text(ac.Activities(activities=({"type": "event", "name": "DTMF",
                                                     "value": "5"},))),
                '{"type": "userStream.chunk", "audioChunk": 5}',  # malformed: a warning
                b"\x00binary",
            ))))
        elif roll < 0.975:
            if agent_up:
                ops.append(("agent_lost", None))
                agent_up = False
            else:
                ops += [("agent_connect", None),
                        ("agent", agent_text(dg.Welcome(request_id="r2"))),
                        ("agent", agent_text(dg.SettingsApplied()))]
                agent_up = True
        elif roll < 0.985:
            ops.append(("vaic_resume", None) if rng.random() < 0.3 else ("vaic_lost", None))
            vaic_up = ops[-1][0] == "vaic_resume"
        else:
            ops.append(("command", _inject))
    ops.append(("command", _hang_up))
    ops += [("time", 0.05)] * 40
    return ops


def settings_for(rng: random.Random) -> dict[str, Any]:
    return {
        "playout": Playout(lead_ms=rng.choice((0, 60, 100)), chunk_ms=rng.choice((20, 40)),
                           max_buffer_ms=rng.choice((400, 120_000))),
        "limits": Limits(caller_frame_ms=rng.choice((0, 0, 40, 60)),
                         keepalive_s=rng.choice((0.3, 8.0)), pre_ready_audio_ms=100,
                         resume_grace_s=rng.choice((0.5, 30.0))),
        "reconnect": Reconnect(attempts=5, initial_backoff_s=0.05),
        # A barge-in that waits for the caller's voice: the lane's tap cuts the agent.
        "options": CallOptions(interruption=Interruption(min_speech_ms=rng.choice((0, 40)))),
    }


@pytest.mark.parametrize("seed", SEEDS)
async def test_the_shortcuts_write_and_schedule_what_the_flush_would(seed: int) -> None:
    rng = random.Random(seed)
    settings = settings_for(rng)
    ops = random_inputs(rng)
    fast, general = Side(CallRuntime, settings), Side(GeneralPath, settings)
    fast.connect_agent()
    general.connect_agent()
    for step, op in enumerate(ops):
        fast.apply(op)
        general.apply(op)
        difference = apart(fast, general)
        assert difference is None, f"after input {step} {str(op)[:80]}: {difference}"
    # Both shortcuts were taken, and the other runtime never took them.
    assert fast.shortcuts["vaic"] > 0 and fast.shortcuts["agent"] > 0, fast.shortcuts
    assert general.shortcuts == {"vaic": 0, "agent": 0}


async def test_audio_kept_ahead_of_the_lead_plays_on_while_the_agent_pauses() -> None:
    """The agent sends a second of audio at once, then nothing for a while (between two
    sentences, say): the runtime must wake for the playout by itself, not wait for the
    agent's next frame."""
    side = Side(CallRuntime, {"playout": Playout(lead_ms=100, chunk_ms=20)})
    side.connect_agent()
    for message in (dg.Welcome(request_id="r"), dg.SettingsApplied(),
                    dg.ConversationText(role="assistant", content="One second.")):
        side.apply(("agent", agent_text(message)))
    for _ in range(50):
        side.apply(("agent", bytes(640)))

    def chunks_written() -> int:
        return sum(b'"playStream.chunk"' in data for kind, data in side.written if kind == "vaic")

    assert chunks_written() == 5  # the lead
    for _ in range(100):
        side.apply(("time", 0.01))
        assert chunks_written() <= 5 + round(side.clock.t / 0.02) + 1  # paced, not at once
    assert chunks_written() == 50


async def test_the_random_calls_reach_what_the_vaic_shortcut_must_step_aside_for() -> None:
    """Not vacuous: among the seeds, barge-ins confirmed by the caller's voice (the tap
    cuts the agent inside the shortcut) and other participants' audio both happen."""
    confirmed = other = 0
    for seed in SEEDS:
        rng = random.Random(seed)
        settings = settings_for(rng)
        side = Side(CallRuntime, settings)
        side.connect_agent()
        for op in random_inputs(rng):
            side.apply(op)
        stats = side.rt.call.stats
        if settings["options"].interruption.min_speech_ms:
            confirmed += stats.barge_ins
        other += stats.other_participant_frames
    assert confirmed > 0 and other > 0, (confirmed, other)
