"""The runtime of one call: the I/O around a :class:`~acdg_asgi.call.Call`.

One anyio task group per call holds the agent connection loop, a writer per socket, the
event dispatcher and (with a shared store) the keeper of the call's shared state. VAIC's
socket is read by the ASGI task that owns it: the first socket's task also owns the call
(and so outlives its socket during a resume grace period); a resumed socket's task reads
its frames into the same call.

Every input (a frame from either socket, a socket lost, a deadline reached, a command of
the application) goes into the call and is followed by :meth:`CallRuntime.flush`, which
never waits: events go to the dispatcher, actions are taken, and each outbox is offered
to its socket's outlet (:mod:`.outlets`), which writes at once where the socket allows
and otherwise queues for its writer. So a frame can be handled inside a socket's
``data_received`` callback, and a deadline inside the timer's.

The runtime also tells the call what only I/O can see: that the event loop stalled
(:meth:`~.scheduler.Scheduler.watch_stalls`), that VAIC's socket went over its read
budget, whether that socket is still alive when a resume asks for the call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..call import Call, CallState, CloseAgent, CloseVaic, ConnectAgent, Measure, PingAgent
from ..call.state import CallShared, CheckTool, ChooseAgent
from ..cluster.cluster import Cluster
from ..config import AgentConfig
from ..errors import AgentClosed, AgentConnectError
from ..events import CallDetails, ToolRequest
from ..interned import interned
from ..observability.logs import CallLog, FoldedLog, logger, security
from ..policies import Refuse
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from ..session import Session
from ..transports.agent_base import AgentConnection, PushAgentConnection, shown_url
from ..transports.vaic_asgi import VaicSocket
from . import readers
from .app_events import EventDispatch
from .deps import CallDeps
from .mailbox import Mailbox
from .outlets import AgentOutlet, VaicOutlet
from .scheduler import Kick

__all__ = ["AgentChooser", "CallRuntime"]

_ACTIVE: Final = CallState.ACTIVE  # for the per-frame path: see call.machine._ACTIVE
_CHUNK: Final = ac.UserStreamChunk

AgentChooser = Callable[[CallDetails | None], Awaitable[AgentConfig | None]]


class _RuntimeFramePath:
    # What the frame handlers read, first in the object (see call.machine._CallFramePath).
    __slots__ = ("_gathers", "_max_frame", "agent", "call", "now", "vaic")


class CallRuntime(_RuntimeFramePath):
    __slots__ = (
        "_agent_scope", "_cluster", "_connect_requests", "_done", "_events", "_history_grew",
        "_keys", "_observers", "_scheduled", "_spawn_requests", "choose_agent", "deps",
        "finished", "folded", "log", "persisted", "persisted_version", "scheduler", "session",
    )

    def __init__(self, call: Call, deps: CallDeps, choose_agent: AgentChooser | None = None
                 ) -> None:
        self.call = call
        self.deps = deps
        self.choose_agent = choose_agent  # for a call whose agent is chosen once it starts
        self.session = Session(self)
        self.log = CallLog(
            logger, {"conversation_id": call.conversation_id, "session_id": call.session_id}
        )
        self.scheduler = deps.scheduler
        self.now = deps.scheduler.now
        self.folded = FoldedLog(self.log, self.now, interval_s=call.limits.warning_interval_s)
        loop, limit = deps.scheduler.loop, call.limits.outbound_queue_bytes
        self.vaic = VaicOutlet(Kick(loop), call.stats, limit=limit, on_shed=self._shed,
                               on_stuck=self._stuck,
                               on_stop_written=self._stop_written)
        self.agent = AgentOutlet(Kick(loop), call.stats, limit=limit, on_shed=self._shed)
        self._scheduled = math.inf
        self._gathers = call.limits.caller_frame_ms > 0
        self._max_frame = interned(call.limits.max_frame_bytes)
        self._connect_requests = Mailbox[int](loop, limit=8)
        # Tasks asked for in socket and timer callbacks start from inside a task: anyio
        # starts tasks only from one, and under uvicorn a callback runs in none.
        self._spawn_requests = Mailbox[Callable[[], Coroutine[Any, Any, None]]](loop)
        self._observers = deps.observers
        self._events = EventDispatch(self.session, call, deps.handlers, deps.observers,
                                     self.log, queue=call.limits.event_queue, loop=loop,
                                     folded=self.folded)
        self._done = Kick(loop)  # set with finished, for run()
        self.finished = False  # set in the same step as observers hear of the end
        self._cluster = deps.cluster if deps.cluster and deps.cluster.shared else None
        # Set when the history grew or the rest of the shared state changed (a store only).
        self._history_grew = anyio.Event() if self._cluster is not None else None
        self._agent_scope: anyio.CancelScope | None = None  # reading the agent connection
        self.persisted = len(call.transcript.entries)  # history entries already shared
        self.persisted_version = call.shared_version  # of the rest of the call's state
        self._keys: MemoryObjectSendStream[str] | None = None  # to a sensitive() block

    def __repr__(self) -> str:
        return f"<CallRuntime {self.call!r}>"

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self, vaic: VaicSocket) -> None:
        """Run the call to its end. Called by the ASGI task of the socket that started it."""
        self.vaic.attach(vaic)
        vaic.budget.on_over = self._over_budget
        self.log.info("call accepted: %s from %s", self.call.media_format.token, vaic.client)
        if self._observers:
            self._observers.call_started(self.call)
        stop_watching = self.scheduler.watch_stalls(self._stalled)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._spawner, tg)
                tg.start_soon(self._agent_loop)
                tg.start_soon(self.vaic.run)
                tg.start_soon(self.agent.run)
                tg.start_soon(self._events.run)
                if self._cluster is not None:
                    tg.start_soon(self._keep_loop, self._cluster)
                self.flush()
                await self._read_vaic(vaic)
                await self._done.wait()
                with anyio.move_on_after(self.deps.end_handler_timeout_s):
                    await self._events.finished.wait()
                tg.cancel_scope.cancel()
        except Exception:
            self.log.exception("call failed inside the bridge")
            await self._abort("internal error")
        finally:
            stop_watching()
            self.folded.flush()
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.agent.aclose()
                if self.vaic.socket is not None:
                    await self.vaic.socket.close(1000)
            reason, code, detail = self.call.end_reason or ("unknown", None, None)
            why = ": ".join(str(part) for part in (code, detail) if part)
            self.log.info("call finished: %s%s", reason, f" ({why})" if why else "")
            # A deadline posted before the end would keep the whole call until it came due.
            self.scheduler.forget(self._wake)

    async def attach(self, vaic: VaicSocket) -> None:
        """``session.resume`` on a new socket: carry on with it, until it closes."""
        self.call.vaic_resumed(self.now())  # raises SessionClosedError if the call ended
        old = self.vaic.attach(vaic)
        vaic.budget.on_over = self._over_budget
        if old is not None:
            await old.close(1000, "replaced by a resumed socket")
        self.log.info("call resumed from %s", vaic.client)
        self.flush()
        await self._read_vaic(vaic)

    async def _read_vaic(self, vaic: VaicSocket) -> None:
        """Read VAIC's socket until it closes. A direct socket hands its text frames over
        inside ``data_received`` instead, and this only waits for the end."""
        if vaic.direct is not None:
            vaic.direct.listen(self.vaic_frame)
        while (frame := await vaic.receive()) is not None:
            self.vaic_frame(frame)
        if self.vaic.detach(vaic):
            self.call.vaic_lost(self.now())
            if self.call.state is CallState.DETACHED:  # else the call's end says why
                self.log.info("VAIC's socket closed without session.end: waiting up to "
                              "%g s for its session.resume", self.call.limits.resume_grace_s)
            self.flush()

    async def _abort(self, reason: str) -> None:
        """Our own failure: hang up politely if VAIC is there, and end the call."""
        if self.finished:
            return
        if self.call.state is CallState.ACTIVE:
            hangup = ac.OutboundActivities(activities=(ac.Activity(
                type="event", name="hangup", activity_params={"hangupReason": reason}),))
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await self.vaic.last_words(hangup)
        self.call.end(self.now(), "error", detail=reason)
        self._deliver_events()
        self._finished()

    # --- inputs -------------------------------------------------------------------------

    # Frames and deadlines arrive in socket and timer callbacks, where an exception would
    # reach the event loop: a fault of ours there ends this call (``_fail``), no other.

    def vaic_frame(self, frame: str | bytes) -> None:
        try:
            try:
                # The usual frame, a known message: one call into msgspec. Any other is
                # read again by readers.vaic_message, which says what is wrong with it.
                if frame.__class__ is not str or len(frame) > self._max_frame:
                    raise ValueError
                msg: ac.InboundMessage | None = ac.decode_known(frame)
            except Exception:
                msg = readers.vaic_message(self, frame)
            call = self.call
            if msg.__class__ is _CHUNK and msg.participant is None and call.state is _ACTIVE:
                # The usual case, caller audio for the agent: the table's handler, inline.
                # The outboxes are empty between inputs, and only the link's tap can give
                # anything out here: without a tap they need not be looked at.
                link = call.link
                untapped = link.tap is None
                audio = link.caller_audio(msg.audio_chunk, self.now())
                if untapped or not (call.events or call.actions or call.to_vaic
                                    or call.to_agent):
                    # Of the call's deadlines only the link's can move, and only earlier
                    # when it gathers larger frames (the keep-alive only moves later: the
                    # timer already armed comes first).
                    if audio is not None:
                        self.agent.offer_audio(audio)
                    if self._gathers:
                        self._wake_by(link.next_deadline())
                    return
                if audio is not None:
                    call.to_agent.append(audio)  # after what the chunk led to, as the table does
            elif msg is not None:
                readers.take_vaic(self, msg)
            self.flush()
        except Exception:
            self._fail("a VAIC frame")

    def agent_frame(self, frame: str | bytes) -> None:
        try:
            if frame.__class__ is bytes:
                call, now = self.call, self.now()
                chunk = call.agent_chunk(frame, now)
                if chunk is not None:  # the steady state
                    self.vaic.offer_chunk(chunk)
                    return
                call.agent_audio_buffered(frame, now)
                if call.events or call.actions or call.observations or call.to_agent:
                    self.flush()
                elif call.to_vaic:  # chunks out after a push: only the playout moved
                    batch, call.to_vaic = call.to_vaic, []
                    self.vaic.offer(batch)
                    self._wake_by(call.playout.next_deadline())
                else:  # kept for later (ahead of the lead, detached): when is it due?
                    self.flush()
                return
            readers.agent_message(self, frame)  # type: ignore[arg-type]
            self._hand_over()  # the transcript may have grown without an event
            self.flush()
        except Exception:
            self._fail("an agent frame")

    async def command(self, fn: Callable[[Call, float], None]) -> None:
        """Apply an application command to the call (see :class:`~acdg_asgi.Session`)."""
        fn(self.call, self.now())
        self._hand_over()  # the transcript may have grown without an event
        self.flush()

    def peer_error(self, source: str, kind: str, description: str) -> None:
        self.call.protocol_warning(self.now(), source, description, kind)
        if self._observers:
            self._observers.protocol_error(source, kind)

    async def vaic_alive(self, probe_s: float) -> bool:
        """Whether VAIC's socket for this call proves alive within ``probe_s``: a frame
        from it, or (on the direct protocol, which can ping) the pong to a ping. A
        detached call's socket is not alive; nor is one silent for the whole probe."""
        socket = self.vaic.socket
        if socket is None or socket.closed or socket.broken:
            return False
        mark = socket.budget.mark()
        socket.ping()
        with anyio.move_on_after(probe_s):
            while self.vaic.socket is socket and not socket.closed:
                if socket.budget.heard_since(mark):
                    return True
                await anyio.sleep(0.02)
        return False

    def _over_budget(self, stage: str, description: str) -> None:
        """VAIC's socket sends more than its read budget (it is read slower meanwhile)."""
        try:
            self.call.protocol_warning(self.now(), "audiocodes", f"VAIC socket {description}",
                                       "budget")
            if stage == "close":
                if self._observers:
                    self._observers.protocol_error("audiocodes", "over_budget")
                socket = self.vaic.socket
                security.warning("[%s] VAIC socket from %s closed: %s", self.call.conversation_id,
                                 socket.client if socket is not None else "?", description)
            self.flush()
        except Exception:
            self._fail("a socket over its budget")

    def _stalled(self, now: float, seconds: float) -> None:
        if not self.finished:
            try:
                self.call.stalled(now, seconds)
                self.flush()
            except Exception:
                self._fail("a stall")

    # --- the flush -----------------------------------------------------------------------

    def flush(self) -> None:
        """Hand everything the call gave out to where it goes; never waits."""
        call = self.call
        if call.events or call.observations or call.actions:
            self._hand_over()
        if call.to_agent:
            batch, call.to_agent = call.to_agent, []
            self.agent.offer(batch)
        if call.to_vaic:
            out, call.to_vaic = call.to_vaic, []
            self.vaic.offer(out)
        self._wake_by(call.next_deadline())  # None once the call has ended

    def _deliver_events(self) -> None:
        call = self.call
        events, observed = call.events, call.observed
        call.events = []
        if observed:
            call.observed = []
        self._events.deliver(events, {id(event): seen for event, seen in observed} or None)

    def _hand_over(self) -> None:
        """The rarer outputs: events, measures, actions; and news for the shared store."""
        call = self.call
        if call.events:
            self._deliver_events()
        if call.observations:
            observations, call.observations = call.observations, []
            self._events.observe(observations)
        if call.masking.captured:
            self._hand_keys(call.masking.captured)
            call.masking.captured = []
        if call.actions:
            self._take_actions()
        if self._history_grew is not None and (len(call.transcript.entries) != self.persisted
                                               or call.shared_version != self.persisted_version):
            self._history_grew.set()

    def _take_actions(self) -> None:
        actions, self.call.actions = self.call.actions, []
        for action in actions:
            if isinstance(action, ConnectAgent):
                self._connect_requests.put(action.attempt)  # dropped once 8 wait, or ended
            elif isinstance(action, CloseAgent):
                self.agent.close()
                if self._agent_scope is not None:
                    self._agent_scope.cancel()
            elif isinstance(action, PingAgent) and not self.agent.ping(self._agent_pong):
                self.call.agent_pong(self.now())  # cannot be pinged: not watched for silence
            elif isinstance(action, CloseVaic):
                # "migrated": no session.end, so VAIC resumes on another instance
                self.vaic.close(1012 if action.reason == "migrated" else 1000)
                self._finished()
            elif isinstance(action, ChooseAgent):
                self._spawn(functools.partial(self._choose_agent, action.details))
            elif isinstance(action, CheckTool):
                self._spawn(functools.partial(self._check_tool, action.request))

    async def _check_tool(self, request: ToolRequest) -> None:
        """Run the application's check of a telephony tool; a hook that fails refuses it."""
        tools = self.call.options.tools
        assert tools is not None and tools.check is not None
        try:
            verdict = await tools.check(self.session, request)
        except Exception as exc:
            self.log.exception("the telephony tools' check hook failed on %s", request.name)
            verdict = Refuse(f"the check failed: {type(exc).__name__}")
        await self.command(lambda call, now: call.tool_checked(request.id, verdict, now))

    # --- keys keyed in sensitive mode: to the sensitive() block, nowhere else -----------

    def sensitive_keys(self) -> MemoryObjectReceiveStream[str]:
        send, receive = anyio.create_memory_object_stream[str](32)
        if self._keys is not None:
            self._keys.close()
        self._keys = send
        return receive

    def _hand_keys(self, keys: list[str]) -> None:
        if self._keys is None:
            return
        for key in keys:
            try:
                self._keys.send_nowait(key)
            except anyio.WouldBlock:
                self.log.warning("sensitive input not read: dropped")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._keys = None  # the block is over
                return

    async def _choose_agent(self, details: CallDetails | None) -> None:
        """Run the per-call agent factory, now that the call's details are known."""
        if self.choose_agent is None:
            await self.command(lambda call, now: call.agent_choice_failed(now, "no factory"))
            return
        try:
            config = await self.choose_agent(details)
        except Exception as exc:
            self.log.exception("agent factory failed")
            why = f"{type(exc).__name__}: {exc}"
            await self.command(lambda call, now: call.agent_choice_failed(now, why))
            return
        if config is None:  # the application's choice, not a fault
            self.log.info("no agent for this call: hanging up")
        await self.command(lambda call, now: call.agent_chosen(config, now))

    def _finished(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._connect_requests.close()
        if self._keys is not None:
            self._keys.close()
        self._events.close()
        self._done.set()
        if self._observers:
            self._observers.call_finished(self.call)

    def _shed(self, peer: str, dropped: int) -> None:
        self.call.protocol_warning(
            self.now(), "bridge", f"{peer} is slow: dropped {dropped} audio frames", "slow")
        self._hand_over()

    def _stuck(self, waiting: int) -> None:
        self.call.protocol_warning(self.now(), "bridge", f"VAIC reads nothing: {waiting} "
                                   "messages waited for it; its socket is closed", "stuck")
        self._hand_over()

    def _agent_pong(self) -> None:
        try:
            self.call.agent_pong(self.now())
            self.flush()
        except Exception:
            self._fail("an agent pong")

    def _stop_written(self) -> None:
        at, self.call.barge_in_at = self.call.barge_in_at, None
        if self._observers and at is not None:
            self._observers.call_observed(self.call, Measure.BARGE_IN_REACTION, self.now() - at)

    # --- time ----------------------------------------------------------------------------

    def _wake_by(self, deadline: float | None) -> None:
        if deadline is not None and deadline < self._scheduled:
            self._scheduled = deadline
            self.scheduler.wake_at(deadline, self._wake)

    def _wake(self, when: float) -> None:
        self._scheduled = math.inf
        if not self.finished:
            try:
                # Woken for a deadline: it is at least that time, however coarse the clock.
                self.call.tick(max(self.now(), when))
                self.flush()
            except Exception:
                self._fail("a deadline")

    def _fail(self, where: str) -> None:
        self.log.exception("call failed inside the bridge, handling %s", where)
        if not self.finished:
            self._spawn(functools.partial(self._abort, "internal error"))

    def _spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``job`` in the call's task group (see ``_spawner``)."""
        self._spawn_requests.put(job)

    # --- the call's own tasks ------------------------------------------------------------

    async def _spawner(self, tg: TaskGroup) -> None:
        async with self._spawn_requests:
            async for job in self._spawn_requests:
                tg.start_soon(job)

    async def _agent_loop(self) -> None:
        deps, call = self.deps, self.call
        async with self._connect_requests:
            async for attempt in self._connect_requests:
                self.log.info("connecting to the agent (attempt %d)", attempt)
                try:
                    with anyio.fail_after(call.limits.handshake_timeout_s):
                        conn = await deps.connector.connect(deps.agent_url, deps.agent_headers)
                except AgentConnectError as exc:
                    if exc.retryable:
                        call.agent_lost(self.now(), str(exc))
                    else:
                        call.agent_rejected(self.now(), str(exc), exc.status)
                    self.flush()
                    continue
                except TimeoutError:
                    call.agent_lost(self.now(), f"no answer from the agent at "
                                    f"{shown_url(deps.agent_url)} within "
                                    f"{call.limits.handshake_timeout_s:g} s")
                    self.flush()
                    continue
                if call.state is CallState.ENDED:
                    await conn.close()
                    break
                push = self.agent.attach(conn)
                # Closed by the call (lost to it, or silent): done with it at once, the
                # outlet's writer closes it meanwhile, and the next attempt may start.
                with anyio.CancelScope() as self._agent_scope:
                    call.agent_connected(self.now())
                    self.flush()
                    if push is not None:
                        reason = await self._listen_agent(push)
                    else:
                        reason = await self._read_agent(conn)
                self._agent_scope = None
                if self.agent.drop(conn):  # not closed on the call's own request
                    call.agent_lost(self.now(), reason)
                    self.flush()

    async def _read_agent(self, conn: AgentConnection) -> str:
        """An awaited connection: each message, then the flush."""
        while True:
            try:
                frame = await conn.recv()
            except AgentClosed as exc:
                return str(exc)
            self.agent_frame(frame)

    async def _listen_agent(self, conn: PushAgentConnection) -> str:
        """A pushing connection: each message is handled inside its data callback."""
        closed = Kick(self.scheduler.loop)
        why = "closed"

        def on_closed(reason: str) -> None:
            nonlocal why
            why = reason
            closed.set()

        conn.listen(self.agent_frame, on_closed)
        await closed.wait()
        return why

    async def _keep_loop(self, cluster: Cluster) -> None:
        """Share new history per turn and renew this instance's lease on the call."""
        while not self.finished:
            grew = self._history_grew
            assert grew is not None  # kept with a shared store
            with anyio.move_on_after(cluster.lease_ttl_s / 3):
                await grew.wait()
            self._history_grew = anyio.Event()
            if self.finished:
                return
            cid = self.call.conversation_id
            if not await cluster.keep(cid, self.unshared_history(), self.log,
                                      self.unshared_state()):
                self.log.warning("another instance owns this call now: letting it go")
                await self.command(lambda call, now: call.end(now, "migrated"))

    def unshared_history(self) -> list[dg.History]:
        entries = self.call.transcript.entries[self.persisted:]
        self.persisted += len(entries)
        return entries

    def unshared_state(self) -> CallShared | None:
        """The call's state beyond its history, if it changed since it was last shared."""
        call = self.call
        if call.shared_version == self.persisted_version:
            return None
        self.persisted_version = call.shared_version
        return call.shared()
