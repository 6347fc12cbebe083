"""One call between a scripted VAIC and a scripted agent: no sockets, a clock moved by hand.

After h11's ``ConnectionPair``: a :class:`~acdg_asgi.call.Call` in the middle, VAIC on
one side (:attr:`CallPair.vaic`: what it sends in, what it has received), the Deepgram
agent on the other (:attr:`CallPair.agent`), and time that passes only when the test says
so. A protocol rule gets a test that runs in a millisecond::

    pair = CallPair(limits=Limits(resume_grace_s=5))
    pair.agent.ready()  # Welcome, the call's Settings, SettingsApplied
    pair.agent.send(dg.ConversationText(role="assistant", content="Hello"))
    pair.agent.audio(bytes(640 * 50))  # one second at once, as the agent sends it
    pair.advance(0.41)  # paced out meanwhile: 500 ms sent, 100 ms ahead at most
    assert sum(isinstance(m, ac.PlayStreamChunk) for m in pair.vaic.received) == 25

What the pair does is what the runtime (:mod:`acdg_asgi.runtime`) does around a call,
minus the sockets:

* every message crosses the codecs of the wire both ways (encoded, then decoded), so a
  test sees what a socket would carry; VAIC's messages get the call's ``conversationId``
  if they name none;
* after every input the call's outboxes are emptied into :attr:`ScriptedVaic.received`,
  :attr:`ScriptedAgent.received`, :attr:`CallPair.events`, :attr:`CallPair.actions` and
  :attr:`CallPair.measures` (everything the call gave out, whether or not a socket is
  there to take it: a test can see what would be lost);
* :meth:`CallPair.advance` ticks the call at each of its deadlines on the way
  (:meth:`~acdg_asgi.call.Call.next_deadline`). A call that, just ticked, asks to be woken
  again at that time or before would have the runtime wake it without end: that fails
  the test.

Nothing here reads a clock or opens a socket; a test needs no event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import msgspec

from .. import events as ev
from ..audio import FORMATS
from ..call import Action, Call, CloseAgent, CloseVaic, Measure, PingAgent
from ..call.state import CallShared
from ..config import AgentConfig, Limits, Playout, Reconnect
from ..policies import CallOptions
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg

__all__ = ["CallPair", "ScriptedAgent", "ScriptedVaic", "Taken"]


class Taken(NamedTuple):
    """What the call gave out since the last :meth:`CallPair.take`."""

    vaic: list[ac.OutboundMessage]
    agent: list[dg.ClientMessage | bytes]
    events: list[ev.Event]
    actions: list[Action]


class ScriptedVaic:
    """VAIC's side: what it sends the call, and what the call sent it."""

    def __init__(self, pair: CallPair) -> None:
        self._pair = pair
        self.received: list[ac.OutboundMessage] = []
        self.attached = True  # a socket is there: not lost, not closed by the call

    def send(self, message: ac.InboundMessage) -> None:
        """A message from VAIC, as it would come off the socket."""
        pair = self._pair
        if message.conversation_id is None:
            message = msgspec.structs.replace(message, conversation_id=pair.conversation_id)
        decoded = ac.decode(ac.encode(message))
        assert not isinstance(decoded, ac.UnknownMessage), decoded
        pair.call.vaic(decoded, pair.now)
        pair.collect()

    def chunk(self, audio: bytes) -> None:
        """Caller audio (``userStream.chunk``)."""
        self.send(ac.UserStreamChunk(audio_chunk=audio))

    def end(self, reason_code: str = "client-disconnected", reason: str = "Client Side") -> None:
        """``session.end``: the caller hung up, or VAIC confirms the bot's hangup."""
        self.send(ac.SessionEnd(reason_code=reason_code, reason=reason))

    def lose(self) -> None:
        """The socket dies without ``session.end``."""
        self.attached = False
        self._pair.call.vaic_lost(self._pair.now)
        self._pair.collect()

    def resume(self) -> None:
        """``session.resume`` on a new socket."""
        self.attached = True
        self._pair.call.vaic_resumed(self._pair.now)
        self._pair.collect()

    def take(self) -> list[ac.OutboundMessage]:
        """What VAIC received since the last take."""
        taken, self.received = self.received, []
        return taken


class ScriptedAgent:
    """The agent's side: what it sends the call, and what the call sent it (``bytes`` for
    caller audio)."""

    def __init__(self, pair: CallPair) -> None:
        self._pair = pair
        self.received: list[dg.ClientMessage | bytes] = []
        self.connected = False  # a connection is open: connected, not lost or closed
        self.answers_pings = True  # False: a black hole, which the call finds out
        self.settings: dg.Settings | None = None  # what the call sent on this connection

    def connect(self, request_id: str = "request-1") -> None:
        """The connection opens and the agent says ``Welcome`` (the call answers with its
        ``Settings``)."""
        self.connected = True
        self.settings = None
        self._pair.call.agent_connected(self._pair.now)
        self.send(dg.Welcome(request_id=request_id))

    def ready(self) -> None:
        """Connect if not connected, and apply the call's ``Settings``."""
        if not self.connected:
            self.connect()
        assert self.settings is not None, "the call sent no Settings on this connection"
        self.send(dg.SettingsApplied())

    def send(self, message: dg.ServerMessage) -> None:
        """A message from the agent, as it would come off the socket."""
        pair = self._pair
        decoded = dg.decode_server(dg.encode(message))
        assert not isinstance(decoded, dg.UnknownMessage), decoded
        pair.call.agent(decoded, pair.now)
        pair.collect()

    def audio(self, data: bytes) -> None:
        """Agent audio (a binary frame)."""
        self._pair.call.agent_audio(data, self._pair.now)
        self._pair.collect()

    def lose(self, reason: str = "connection lost") -> None:
        """The connection closes, fails to open, or times out in the handshake."""
        self.connected = False
        self._pair.call.agent_lost(self._pair.now, reason)
        self._pair.collect()

    def reject(self, reason: str, status: int | None = None) -> None:
        """The connection is refused for good (a wrong key or URL: a retry cannot help)."""
        self.connected = False
        self._pair.call.agent_rejected(self._pair.now, reason, status)
        self._pair.collect()

    def take(self) -> list[dg.ClientMessage | bytes]:
        """What the agent received since the last take."""
        taken, self.received = self.received, []
        return taken


class CallPair:
    """A :class:`~acdg_asgi.call.Call` as ``session.initiate`` makes it, at ``now``,
    between a :class:`ScriptedVaic` and a :class:`ScriptedAgent` (not yet connected).

    ``factory=True``: no agent yet, as with ``BridgeApp(agent=callable)``; the call asks
    for one with :class:`~acdg_asgi.call.state.ChooseAgent`, answered with e.g.
    ``pair.command(lambda call, now: call.agent_chosen(config, now))``.
    ``taken_over=(epoch, history, shared)``: the call as another instance resumes it
    (``session.resume``), from what the first one shared
    (:meth:`~acdg_asgi.call.Call.shared`)."""

    def __init__(
        self,
        media_format: str = "raw/lpcm16",
        *,
        agent: AgentConfig | dg.AgentSettings | None = None,
        playout: Playout | None = None,
        limits: Limits | None = None,
        reconnect: Reconnect | None = None,
        options: CallOptions | None = None,
        conversation_id: str = "conv-1",
        caller: str | None = "+15551230000",
        offered: tuple[str, ...] | None = None,
        now: float = 0.0,
        factory: bool = False,
        taken_over: tuple[int, list[dg.History], CallShared] | None = None,
    ) -> None:
        config: AgentConfig | None = None
        if not factory:
            config = agent if isinstance(agent, AgentConfig) \
                else AgentConfig(agent=agent or dg.AgentSettings())
        self.conversation_id = conversation_id
        self.now = now
        self.vaic = ScriptedVaic(self)
        self.agent = ScriptedAgent(self)
        self.events: list[ev.Event] = []
        self.actions: list[Action] = []
        self.measures: list[tuple[Measure, float]] = []
        initiate = ac.SessionInitiate(
            conversation_id=conversation_id, caller=caller,
            supported_media_formats=offered or (media_format,),
        )
        self.call = Call(
            initiate, session_id=f"session-{conversation_id}", media_format=FORMATS[media_format],
            agent_config=config, now=now, playout=playout, limits=limits, reconnect=reconnect,
            options=options, taken_over=taken_over,
        )
        self.collect()

    def __repr__(self) -> str:
        return f"<CallPair {self.call!r} at {self.now:.3f}>"

    # --- time --------------------------------------------------------------------------

    def step(self) -> float | None:
        """Move the clock to the call's next deadline (not back) and tick the call there;
        the time it ticked at, or ``None`` if the call waits for nothing."""
        deadline = self.call.next_deadline()
        if deadline is None:
            return None
        at = self.now = max(self.now, deadline)
        self.call.tick(at)
        self.collect()
        after = self.call.next_deadline()
        if after is not None and after <= at:
            raise AssertionError(
                f"ticked at {at}, the call asks to be woken at {after} again: the runtime "
                f"would wake it without end ({self.call!r})")
        return at

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, ticking the call at every deadline on the way."""
        until = self.now + seconds
        while (deadline := self.call.next_deadline()) is not None and deadline <= until:
            self.step()
        self.now = max(self.now, until)

    # --- the application ---------------------------------------------------------------

    def command(self, fn: Callable[[Call, float], None]) -> None:
        """An application command, as :class:`~acdg_asgi.Session` applies it, e.g.
        ``pair.command(lambda call, now: call.hangup(now, "bye"))``."""
        fn(self.call, self.now)
        self.collect()

    # --- outputs -----------------------------------------------------------------------

    def collect(self) -> None:
        """Empty the call's outboxes to each side (the pair does it after every input)."""
        call = self.call
        if call.to_vaic:
            out, call.to_vaic = call.to_vaic, []
            self.vaic.received += [ac.decode_outbound(ac.encode(m)) for m in out]
        if call.to_agent:
            sent, call.to_agent = call.to_agent, []
            for item in sent:
                if isinstance(item, bytes):
                    self.agent.received.append(item)
                else:
                    decoded = dg.decode_client(dg.encode(item))
                    assert not isinstance(decoded, dg.UnknownMessage), decoded
                    self.agent.received.append(decoded)
                    if isinstance(decoded, dg.Settings):
                        self.agent.settings = decoded
        if call.events:
            events, call.events = call.events, []
            self.events += events  # as handlers get them
            call.observed = []  # (observers see some otherwise; the pair has none)
        if call.observations:
            measures, call.observations = call.observations, []
            self.measures += measures
        if call.actions:
            actions, call.actions = call.actions, []
            self.actions += actions
            for action in actions:
                if isinstance(action, CloseAgent):
                    self.agent.connected = False
                elif isinstance(action, PingAgent) and self.agent.connected \
                        and self.agent.answers_pings:
                    call.agent_pong(self.now)  # a live peer answers at once
                elif isinstance(action, CloseVaic):
                    self.vaic.attached = False

    def take(self) -> Taken:
        """What the call gave out since the last take: to VAIC, to the agent, events and
        actions."""
        events, self.events = self.events, []
        actions, self.actions = self.actions, []
        return Taken(self.vaic.take(), self.agent.take(), events, actions)
