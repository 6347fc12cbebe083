"""This instance among others: call ownership, shared history, commands between instances.

Without a shared store (the default) this is a no-op: the instance is alone. With a shared store
(Redis) every call is registered under its ``conversationId`` with this instance as owner;
its history is appended per turn; its lease is renewed while it lives. A ``session.resume``
for a call this instance does not have takes it over from the store, and a command for a
call owned elsewhere travels to the owner and back.

The store's state (:attr:`Cluster.store_state`: ``"up"``, ``"down"`` or ``"unknown"``)
follows every answer and failure of the store, and each change is logged once: one
WARNING when it goes down, one INFO when it is back. The control channel retries with
backoff (1 s doubling to 30 s) in between.

A resume takes a call over only from an owner whose VAIC socket is dead: the owner is
asked first (a :class:`~.store.base.Probe`), answers once it has pinged its socket,
and a call whose socket is alive stays where it is. An owner that does not answer (it
died) loses the call.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any, Final, Protocol

import anyio

from ..call import Call
from ..call.commands import Command
from ..call.state import CallShared
from ..errors import CallNotFound, CommandFailed, ControlError, ControlTimeout, StoreUnavailable
from ..observability.logs import for_call, get_logger
from ..protocols import deepgram as dg
from .store.base import CallSnapshot, CallStore, Probe, Release, RemoteCommand, Reply

__all__ = ["LIVE_ELSEWHERE", "Cluster", "LocalCalls"]

log = get_logger("acdg_asgi.cluster")

LIVE_ELSEWHERE: Final = "conversation is live on another socket"  # its owner's socket
_PROBE_MARGIN_S: Final = 1.0  # on top of the owner's own probe: the round trip via the store

_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 30.0


class LocalCalls(Protocol):
    """The calls of this instance, as the cluster serves them to the others."""

    def __len__(self) -> int: ...

    async def run_command(self, cid: str, command: Command) -> None:
        """Run ``command`` on call ``cid``; CallNotFound if it is not here."""
        ...

    async def let_go(self, cid: str) -> None:
        """Another instance took call ``cid`` over: end it here, without a hangup."""
        ...

    async def vaic_alive(self, cid: str, probe_s: float) -> bool:
        """Whether call ``cid`` is here with a VAIC socket that proves alive within
        ``probe_s`` (a pong, any frame)."""
        ...


class Cluster:
    def __init__(
        self, store: CallStore | None, *, instance_id: str | None = None,
        lease_ttl_s: float = 30.0,
    ) -> None:
        self.store = store  # None: this instance is alone, and the rest is never called
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.lease_ttl_s = lease_ttl_s
        self.shared = store is not None
        self._pending: dict[str, anyio.Event] = {}
        self._replies: dict[str, Reply] = {}
        self.last_cluster_calls: int | None = None  # refreshed with each heartbeat
        self.store_state = "unknown"  # "up" or "down" once the store has answered or failed
        self.store_error: str | None = None
        self._store_back = anyio.Event()  # wakes the control channel's retry

    def __repr__(self) -> str:
        return f"Cluster({self.instance_id!r}, {self.store!r})"

    def describe_store(self) -> dict[str, str]:
        """The store and its state, for ``/ready``: ``name``, ``state`` (``up``, ``down``,
        ``unknown``, or ``none`` without a store) and, while down, ``error``."""
        if self.store is None:
            return {"name": "none", "state": "none"}
        found = {"name": repr(self.store), "state": self.store_state}
        if self.store_state == "down" and self.store_error:
            found["error"] = self.store_error
        return found

    def store_answered(self) -> None:
        if self.store_state != "up":
            if self.store_state == "down":
                log.info("call state store %r is back", self.store)
            self.store_state, self.store_error = "up", None
            self._store_back.set()

    def store_failed(self, exc: StoreUnavailable) -> None:
        self.store_error = str(exc)
        if self.store_state != "down":
            self.store_state = "down"
            self._store_back = anyio.Event()
            log.warning("call state store %r unreachable (%s): calls go on here, but resumes "
                        "on other instances and commands between instances fail until it is "
                        "back", self.store, exc)

    async def announce(self) -> None:
        """At startup: which store, and whether it answered (a store that is down says so
        itself, once)."""
        if self.store is None:
            log.info("call state store: none, this instance keeps its calls to itself (set "
                     "ACDG_REDIS_URL or store= to run several)")
            return
        await self.check_store()
        if self.store_state == "up":
            log.info("call state store: %r, reachable", self.store)

    async def check_store(self) -> None:
        """Ask the store once (at startup): its state is known, and logged, from then on."""
        if self.store is None:
            return
        try:
            self.last_cluster_calls = await self.store.cluster_calls()
        except StoreUnavailable as exc:
            self.store_failed(exc)
        else:
            self.store_answered()

    @property
    def _store(self) -> CallStore:
        if self.store is None:
            raise ControlError("no shared store: this instance is alone")
        return self.store

    # --- the calls of this instance ------------------------------------------------------

    async def register(self, call: Call, path: str, log: logging.LoggerAdapter[Any]) -> None:
        snapshot = CallSnapshot(
            conversation_id=call.conversation_id, session_id=call.session_id,
            owner=self.instance_id, epoch=call.epoch, media_format=call.media_format.token,
            initiate=call.initiate, path=path, started_wall=call.started_wall,
        )
        try:
            await self._store.create(snapshot, self.lease_ttl_s)
        except StoreUnavailable as exc:
            self.store_failed(exc)
            log.warning("call state not shared (%s): a resume elsewhere will fail", exc)
        else:
            self.store_answered()

    async def keep(
        self, cid: str, entries: list[dg.History], log: logging.LoggerAdapter[Any],
        shared: CallShared | None = None,
    ) -> bool:
        """Append new history, replace the call's state if it changed (``shared``) and
        renew the lease; ``False`` if another instance owns the call."""
        try:
            await self._store.append(cid, entries, self.lease_ttl_s)
            if shared is not None:
                await self._store.save(cid, shared)
            owned = await self._store.renew(cid, self.instance_id, self.lease_ttl_s)
        except StoreUnavailable as exc:
            self.store_failed(exc)
            log.warning("call state not saved (%s); the call goes on here", exc)
            return True
        self.store_answered()
        return owned

    async def unregister(self, call: Call, log: logging.LoggerAdapter[Any]) -> None:
        try:
            if call.end_reason and call.end_reason[0] == "migrated":
                await self._store.disown(call.conversation_id, self.instance_id)
            else:
                await self._store.release(call.conversation_id, self.instance_id)
        except StoreUnavailable as exc:
            log.warning("call state not released (%s); it expires by itself", exc)

    # --- resume on this instance ---------------------------------------------------------

    async def take_over(
        self, cid: str, *, probe_s: float = 2.0
    ) -> tuple[CallSnapshot, list[dg.History], CallShared, str] | str:
        """Claim a call another instance had: the snapshot (now ours), the history, the
        call's state beyond it and the previous owner ("" after a migrating drain), or why
        not (:data:`LIVE_ELSEWHERE` if its owner's VAIC socket is alive)."""
        try:
            loaded = await self._store.load(cid)
            if loaded is None:
                return "conversation not found"
            snapshot, history, shared = loaded
            if snapshot.owner and snapshot.owner != self.instance_id \
                    and await self._owner_has_socket(snapshot.owner, cid, probe_s):
                return LIVE_ELSEWHERE
            claimed = await self._store.take_over(
                cid, self.instance_id, snapshot.epoch, self.lease_ttl_s
            )
        except StoreUnavailable as exc:
            for_call(cid, base=log).warning("resume refused: %s", exc)
            return "call state unavailable"
        if claimed is None:
            return "conversation was resumed elsewhere"
        if snapshot.owner and snapshot.owner != self.instance_id:
            # If this does not reach it, its next lease renewal will tell it.
            with anyio.move_on_after(1), contextlib.suppress(StoreUnavailable):
                await self._store.publish(snapshot.owner, Release(cid, self.instance_id))
        return claimed, history, shared, snapshot.owner

    async def _owner_has_socket(self, owner: str, cid: str, probe_s: float) -> bool:
        """Ask ``owner`` whether its VAIC socket for ``cid`` is alive; no answer (or
        nobody listening) means no."""
        message = Probe(uuid.uuid4().hex, cid, self.instance_id, probe_s)
        done = self._pending[message.id] = anyio.Event()
        try:
            if not await self._store.publish(owner, message):
                return False  # the owner is gone
            with anyio.move_on_after(probe_s + _PROBE_MARGIN_S):
                await done.wait()
            reply = self._replies.pop(message.id, None)
        finally:
            self._pending.pop(message.id, None)
        return reply is not None and reply.ok

    async def _answer_probe(self, calls: LocalCalls, message: Probe) -> None:
        alive = await calls.vaic_alive(message.conversation_id, message.probe_s)
        with contextlib.suppress(StoreUnavailable):
            await self._store.publish(message.reply_to, Reply(message.id, ok=alive))

    # --- commands between instances ------------------------------------------------------

    async def remote(self, cid: str, command: Command, timeout_s: float = 5.0) -> None:
        """Run ``command`` on the instance that owns call ``cid``."""
        if not self.shared:
            raise CallNotFound(f"no call {cid!r} on this instance")
        try:
            loaded = await self._store.load(cid)
        except StoreUnavailable as exc:
            raise ControlError(f"call state unavailable: {exc}") from None
        if loaded is None or not loaded[0].owner:
            raise CallNotFound(f"no live instance owns call {cid!r}")
        message = RemoteCommand(uuid.uuid4().hex, cid, command,  # type: ignore[arg-type]
                                self.instance_id)
        done = self._pending[message.id] = anyio.Event()
        try:
            if not await self._store.publish(loaded[0].owner, message):
                raise CallNotFound(f"the instance that owns call {cid!r} is gone")
            with anyio.move_on_after(timeout_s):
                await done.wait()
            reply = self._replies.pop(message.id, None)
        except StoreUnavailable as exc:
            raise ControlError(f"call state unavailable: {exc}") from None
        finally:
            self._pending.pop(message.id, None)
        if reply is None:
            raise ControlTimeout(f"no answer about call {cid!r} within {timeout_s} s")
        if not reply.ok:
            raise CommandFailed(reply.error or "failed")

    async def serve(self, calls: LocalCalls) -> None:
        """Answer commands for our calls and collect replies; heartbeat. Runs until cancelled.

        While the store is down the control channel is retried with backoff; the state
        change is logged once, not each retry."""
        if self.store is None:
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat, calls)
            delay = _RETRY_FIRST_S
            while True:
                try:
                    async for message in self._store.listen(self.instance_id):
                        delay = _RETRY_FIRST_S
                        if isinstance(message, Reply):
                            self._reply(message)
                        elif isinstance(message, Release):
                            tg.start_soon(calls.let_go, message.conversation_id)
                        elif isinstance(message, Probe):
                            tg.start_soon(self._answer_probe, calls, message)
                        else:
                            tg.start_soon(self._execute, calls, message)
                except StoreUnavailable as exc:
                    self.store_failed(exc)
                    with anyio.move_on_after(delay):  # or sooner, once the store is back
                        await self._store_back.wait()
                    delay = _RETRY_FIRST_S if self.store_state == "up" else min(
                        _RETRY_MAX_S, delay * 2)
                else:  # the subscription ended without a fault: renew it
                    await anyio.sleep(_RETRY_FIRST_S)

    def _reply(self, reply: Reply) -> None:
        done = self._pending.get(reply.id)
        if done is not None:
            self._replies[reply.id] = reply
            done.set()

    async def _execute(self, calls: LocalCalls, message: RemoteCommand) -> None:
        reply = Reply(message.id, ok=True)
        try:
            await calls.run_command(message.conversation_id, message.command)
        except CallNotFound:
            reply = Reply(message.id, ok=False, error="call is not on this instance")
        except Exception as exc:
            reply = Reply(message.id, ok=False, error=f"{type(exc).__name__}: {exc}")
        try:
            await self._store.publish(message.reply_to, reply)
        except StoreUnavailable as exc:
            for_call(message.conversation_id, base=log).warning(
                "reply to %s lost: %s", message.reply_to, exc)

    async def _heartbeat(self, calls: LocalCalls) -> None:
        while True:
            try:
                await self._store.heartbeat(self.instance_id, len(calls), self.lease_ttl_s)
                self.last_cluster_calls = await self._store.cluster_calls()
            except StoreUnavailable as exc:
                self.store_failed(exc)
            else:
                self.store_answered()
            await anyio.sleep(5)

    async def cluster_calls(self, local: int) -> int:
        """Active calls on every instance; ``local`` without a store, or while it is down
        (a readiness probe must not wait for a store that does not answer)."""
        if not self.shared or self.store_state == "down":
            return local
        try:
            return await self._store.cluster_calls()
        except StoreUnavailable as exc:
            self.store_failed(exc)
            return local
