"""The runtime of one call: the I/O around a :class:`~acdg_asgi.call.Call`.

One anyio task group per call holds the agent connection loop, the clock and the event
dispatcher. VAIC's socket is read by the ASGI task that owns it: the first socket's task
also owns the call (and so outlives its socket during a resume grace period); a resumed
socket's task reads its frames into the same call.

After every input, :meth:`CallRuntime._flush` drains the call's outboxes. It is the one
place that writes: a socket being written is not written again by a second flush, which
returns at once and leaves the messages to the first (it loops until the outbox is
empty). A failed write is a lost socket, reported to the call as such.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, cast

import anyio
from anyio.abc import TaskGroup

from .agent import AgentClosed, AgentConnection, PushAgentConnection
from .call import Call, CallState, CloseAgent, CloseVaic, ConnectAgent
from .cluster import Cluster
from .dispatch import EventDispatch
from .protocols import audiocodes as ac
from .protocols import deepgram as dg
from .readers import agent_loop, read_vaic
from .scheduler import Kick
from .services import CallLog, Services, logger
from .session import Session
from .transport import VaicClosed, VaicSocket

__all__ = ["CallRuntime"]

class CallRuntime:
    def __init__(self, call: Call, services: Services) -> None:
        self.call = call
        self.services = services
        self.session = Session(self)
        self.log = CallLog(
            logger, {"conversation_id": call.conversation_id, "session_id": call.session_id}
        )
        self.scheduler = services.scheduler
        self._vaic: VaicSocket | None = None
        self._vaic_close_pending = False
        self._vaic_close_code = 1000
        self.agent_conn: AgentConnection | None = None
        self.agent_push = False  # the connection writes without waiting (checked once)
        self._writing_vaic = False
        self._writing_agent = False
        self.kick = Kick(services.scheduler.loop)  # the clock task's wake-up
        self._scheduled = math.inf
        self._woken_for = 0.0
        self._due = False  # the scheduler woke the call: tick
        self._connect_send, self.connect_requests = anyio.create_memory_object_stream[int](8)
        self._tg: TaskGroup | None = None
        self._observers = services.observers
        self._events = EventDispatch(self, services.handlers, services.observers, self.log,
                                     queue=call.limits.event_queue)
        self.done = anyio.Event()
        self.finished = False  # set in the same step as observers hear of the end
        self._cluster = services.cluster if services.cluster and services.cluster.shared else None
        self._history_grew = anyio.Event()
        self.persisted = len(call.transcript.entries)  # history entries already shared

    def __repr__(self) -> str:
        return f"<CallRuntime {self.call!r}>"

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self, vaic: VaicSocket) -> None:
        """Run the call to its end. Called by the ASGI task of the socket that started it."""
        self._vaic = vaic
        self.log.info("call accepted: %s from %s", self.call.media_format.token, vaic.client)
        if self._observers:
            self._observers.call_started(self)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(agent_loop, self)
                tg.start_soon(self._clock_loop)
                tg.start_soon(self._events.run)
                if self._cluster is not None:
                    tg.start_soon(self._keep_loop, self._cluster)
                await self.flush()
                await read_vaic(self, vaic)
                await self.done.wait()
                with anyio.move_on_after(self.services.end_handler_timeout_s):
                    await self._events.finished.wait()
                tg.cancel_scope.cancel()
        except Exception:
            self.log.exception("call failed inside the bridge")
            await self._abort("internal error")
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._close_sockets()
            self.log.info("call finished: %s", self.call.end_reason)

    async def attach(self, vaic: VaicSocket) -> None:
        """``session.resume`` on a new socket: carry on with it, until it closes."""
        old, self._vaic = self._vaic, None
        if old is not None:
            await old.close(1000, "replaced by a resumed socket")
        self.call.vaic_resumed(self.scheduler.now())
        self._vaic = vaic
        self.log.info("call resumed from %s", vaic.client)
        await self.flush()
        await read_vaic(self, vaic)

    async def _abort(self, reason: str) -> None:
        """Our own failure: hang up politely if VAIC is there, and end the call."""
        now = self.scheduler.now()
        vaic = self._vaic
        if vaic is not None and not vaic.closed and self.call.state is CallState.ACTIVE:
            hangup = ac.OutboundActivities(activities=(ac.Activity(
                type="event", name="hangup", activity_params={"hangupReason": reason}),))
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(1),
                contextlib.suppress(VaicClosed),
            ):
                await vaic.send_text(ac.encode(hangup))
        self.call.end(now, "error", detail=reason)
        self._events.deliver(self.call.events, self._tg)
        self.call.events = []
        self._finished()

    async def _close_sockets(self) -> None:
        agent, self.agent_conn = self.agent_conn, None
        if agent is not None:
            await agent.close()
        if self._vaic is not None:
            await self._vaic.close(1000)

    # --- the call's own loops -----------------------------------------------------------

    async def _clock_loop(self) -> None:
        call = self.call
        while not self.done.is_set():
            await self.kick.wait()
            if self._due:
                # Woken for a deadline: it is at least that time, however coarse the clock.
                self._due = False
                call.tick(max(self.scheduler.now(), self._woken_for))
            elif call.to_vaic and not (call.events or call.actions or call.observations
                                       or call.to_agent or self._writing_vaic):
                await self._write_vaic()  # agent audio only (play_now): nothing else to do
                continue
            await self.flush()

    async def _keep_loop(self, cluster: Cluster) -> None:
        """Share new history per turn and renew this instance's lease on the call."""
        while not self.done.is_set():
            with anyio.move_on_after(cluster.lease_ttl_s / 3):
                await self._history_grew.wait()
            self._history_grew = anyio.Event()
            if self.done.is_set():
                return
            if not await cluster.keep(self, self.unshared_history()):
                self.log.warning("another instance owns this call now: letting it go")
                await self.command(lambda call, now: call.end(now, "migrated"))

    def unshared_history(self) -> list[dg.History]:
        entries = self.call.transcript.entries[self.persisted:]
        self.persisted += len(entries)
        return entries

    # --- commands from the Session -------------------------------------------------------

    async def command(self, fn: Callable[[Call, float], None]) -> None:
        fn(self.call, self.scheduler.now())
        await self.flush()

    async def to_agent(self, msg: dg.ClientMessage) -> None:
        await self.command(lambda call, now: call.send_to_agent(msg, now))

    # --- the single flush ----------------------------------------------------------------

    async def flush(self) -> None:
        if self.flush_now(in_task=True):
            return
        call = self.call
        if call.to_agent and not self._writing_agent:
            await self._write_agent()
        if (call.to_vaic or self._vaic_close_pending) and not self._writing_vaic:
            await self._write_vaic()

    def flush_now(self, *, in_task: bool = False) -> bool:
        """The part of a flush that needs no waiting: events, actions, the timer, and
        writes to sockets that take them without waiting. ``True`` if nothing is left.

        Outside a task (a socket callback) actions are left to the clock task, which
        flushes everything in order: they start tasks, and the call is ending anyway."""
        call = self.call
        if call.actions and not in_task:
            return False
        if call.events:
            events, call.events = call.events, []
            self._events.deliver(events, self._tg)
        if call.observations:
            observations, call.observations = call.observations, []
            self._events.observe(observations)
        if self._cluster is not None and len(call.transcript.entries) != self.persisted:
            self._history_grew.set()
        if call.actions:
            self._take_actions()
        self._reschedule()
        limit = call.limits.outbound_queue
        if len(call.to_agent) > limit:
            self._shed(call.to_agent, limit, "agent")
        if len(call.to_vaic) > limit:
            self._shed(call.to_vaic, limit, "VAIC")
        if call.to_agent and self.agent_push and not self._writing_agent:
            batch, call.to_agent = call.to_agent, []
            if self.agent_conn is not None:
                self._write_agent_now(cast(PushAgentConnection, self.agent_conn), batch)
        vaic = self._vaic
        if call.to_vaic and vaic is not None and vaic.direct and not self._writing_vaic \
                and not vaic.backed_up():
            batch_out, call.to_vaic = call.to_vaic, []
            self._write_vaic_now(vaic, batch_out)
        return not (call.to_agent or call.to_vaic or self._vaic_close_pending)

    def play_now(self, audio: bytes) -> bool:
        """The fast path for agent audio, 50 frames a second: into the playout and out,
        past the flush: written at once to a direct VAIC socket, else by the clock task.
        ``False`` (audio not taken) when the call is in any other state; then the general
        path takes it."""
        call, vaic = self.call, self._vaic
        if vaic is None or call.state is not CallState.ACTIVE or call.events or call.actions:
            return False
        now_ok = vaic.direct and not (call.to_vaic or self._writing_vaic or vaic.backed_up())
        call.agent_audio(audio, self.scheduler.now())
        if call.events or call.observations or call.actions:  # a warning, a turn's end
            if not self.flush_now():
                self.kick.set()
            return True
        if call.to_vaic:
            if now_ok:
                batch, call.to_vaic = call.to_vaic, []
                self._write_vaic_now(vaic, batch)
            else:
                if len(call.to_vaic) > call.limits.outbound_queue:  # VAIC reads too slowly
                    self._shed(call.to_vaic, call.limits.outbound_queue, "VAIC")
                self.kick.set()
        # Agent audio moves no deadline but the playout's: the rest need no look.
        self._wake_by(call.playout.next_deadline())
        return True

    def _write_vaic_now(self, vaic: VaicSocket, batch: list[ac.OutboundMessage]) -> None:
        for msg in batch:
            if not vaic.write_text(ac.encode(msg)):
                return  # its reader reads what VAIC sent before, then reports the loss
            if msg.__class__ is ac.PlayStreamStop and self.call.barge_in_at is not None:
                self._barge_in_written()

    def _reschedule(self) -> None:
        if not self.done.is_set():
            self._wake_by(self.call.next_deadline())

    def _wake_by(self, deadline: float | None) -> None:
        if deadline is not None and deadline < self._scheduled:
            self._scheduled = deadline
            self.scheduler.wake_at(deadline, self._wake)

    def _shed(self, queue: list[Any], limit: int, peer: str) -> None:
        """A peer reads slower than real time: drop the oldest audio, keep every control
        message, so memory stays bounded and what is sent stays current."""
        excess, kept = len(queue) - limit, []
        for item in queue:
            if excess > 0 and isinstance(item, bytes | ac.PlayStreamChunk):
                excess -= 1
            else:
                kept.append(item)
        dropped = len(queue) - len(kept)
        queue[:] = kept
        self.call.protocol_warning(
            self.scheduler.now(), "bridge", f"{peer} is slow: dropped {dropped} audio frames"
        )

    def _wake(self, when: float) -> None:
        self._scheduled = math.inf
        self._woken_for = max(self._woken_for, when)
        vaic = self._vaic
        if vaic is not None and vaic.direct and not self.done.is_set():
            # Both sockets take writes without waiting: do the tick right here.
            self.call.tick(max(self.scheduler.now(), self._woken_for))
            if self.flush_now():
                return
        else:
            self._due = True
        self.kick.set()

    async def _write_agent(self) -> None:
        """Writes to a connection that must be awaited (push connections are written in
        :meth:`flush_now` and never get here)."""
        call = self.call
        self._writing_agent = True
        try:
            while batch := call.to_agent:
                call.to_agent = []
                conn = self.agent_conn
                if conn is None:
                    continue  # reconnecting: the call re-sends what matters
                try:
                    for item in batch:
                        if isinstance(item, bytes):
                            await conn.send_audio(item)
                        else:
                            await conn.send_text(dg.encode(item))
                except AgentClosed:
                    pass  # the reader sees the same loss and reports it
        finally:
            self._writing_agent = False

    @staticmethod
    def _write_agent_now(conn: PushAgentConnection, batch: list[dg.ClientMessage | bytes]) -> None:
        try:
            for item in batch:
                if isinstance(item, bytes):
                    conn.write_audio(item)
                else:
                    conn.write_text(dg.encode(item))
        except AgentClosed:
            pass  # the connection reports its loss itself

    async def _write_vaic(self) -> None:
        call = self.call
        self._writing_vaic = True
        try:
            while batch := call.to_vaic:
                call.to_vaic = []
                vaic = self._vaic
                if vaic is None:
                    continue  # detached: the call keeps audio queued in its playout
                try:
                    for msg in batch:
                        await vaic.send_text(ac.encode(msg))
                        if msg.__class__ is ac.PlayStreamStop and call.barge_in_at is not None:
                            self._barge_in_written()
                except VaicClosed:
                    pass  # its reader reads what VAIC sent before, then reports the loss
            if self._vaic_close_pending and self._vaic is not None:
                self._vaic_close_pending = False
                await self._vaic.close(self._vaic_close_code)
        finally:
            self._writing_vaic = False

    def vaic_gone(self, vaic: VaicSocket) -> None:
        if self._vaic is vaic:
            self._vaic = None
            self.call.vaic_lost(self.scheduler.now())
            self.kick.set()  # let the clock loop flush what the loss produced

    def _take_actions(self) -> None:
        actions, self.call.actions = self.call.actions, []
        for action in actions:
            if isinstance(action, ConnectAgent):
                with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                    self._connect_send.send_nowait(action.attempt)
            elif isinstance(action, CloseAgent):
                agent, self.agent_conn = self.agent_conn, None
                if agent is not None and self._tg is not None:
                    self._tg.start_soon(agent.close)
            elif isinstance(action, CloseVaic):
                self._vaic_close_pending = True
                if action.reason == "migrated":  # no session.end: VAIC resumes elsewhere
                    self._vaic_close_code = 1012
                self._finished()

    def _finished(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._connect_send.close()
        self._events.close()
        self.done.set()
        self.kick.set()
        if self._observers:
            self._observers.call_finished(self)

    def _barge_in_written(self) -> None:
        at, self.call.barge_in_at = self.call.barge_in_at, None
        if self._observers and at is not None:
            reaction = self.scheduler.now() - at
            self._observers.call_observed(self, "barge_in_reaction_seconds", reaction)

    def peer_error(self, source: str, kind: str, description: str) -> None:
        self.call.protocol_warning(self.scheduler.now(), source, description)
        if self._observers:
            self._observers.protocol_error(source, kind)
