"""The Redis store (``pip install acdg-asgi[redis]``): call state shared by many instances.

Keys, for each conversation::

    acdg:call:{cid}      hash: snapshot (JSON), owner, epoch, shared (JSON)
    acdg:history:{cid}   list of History entries (JSON), one push per turn

and ``acdg:instances`` (instance -> "calls timestamp") for the cluster view. Ownership
changes in Lua scripts, so compare-and-set on ``epoch`` is atomic. Commands for a call
travel on the owner's pub/sub channel ``acdg:instance:{id}``; replies on the requester's.

Live events (for pages that watch calls, :class:`~.base.LiveStore`)::

    acdg:live:{cid}      stream (fields e: event name, s: seq, d: the JSON), capped near
                         LIVE_PER_CALL entries; expires LIVE_ENDED_TTL_S after the call
                         ends (LIVE_TTL_S after its last event, if its owner died)
    acdg:live:all        stream of every call's events, capped near LIVE_ALL entries
    acdg:live:calls      hash: cid -> the call in progress (LiveCall JSON)

Followers read with ``XREAD BLOCK``, so a page on any instance follows any call.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, Final

import msgspec
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ...errors import StoreUnavailable
from ...observability.live import LiveCall, LiveEvent, LiveItem, handed_over
from ...protocols import deepgram as dg
from .base import CallShared, CallSnapshot, Message, Stored

__all__ = ["LIVE_ALL", "LIVE_ENDED_TTL_S", "LIVE_PER_CALL", "LIVE_TTL_S", "RedisStore"]

LIVE_PER_CALL: Final = 500
LIVE_ALL: Final = 2000
LIVE_TTL_S: Final = 3600
LIVE_ENDED_TTL_S: Final = 300
_LIVE_CALLS: Final = "acdg:live:calls"
_LIVE_ALL_KEY: Final = "acdg:live:all"
_LIVE_BLOCK_MS: Final = 1000  # below the socket timeout, so a quiet stream is no error
_STREAM_ID: Final = re.compile(r"\d+-\d+")

_TAKE_OVER: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch or epoch ~= ARGV[2] then return nil end
local new = tostring(tonumber(epoch) + 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', new)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return new
"""
_RENEW: Final = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""
_DISOWN: Final = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '')
return 1
"""
_RELEASE: Final = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

_LIVE_ENDED: Final = """
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known and cjson.decode(known)['owner'] == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

_history_decoder: Final = msgspec.json.Decoder(dg.History)
_message_decoder: Final = msgspec.json.Decoder(Message)
_snapshot_decoder: Final = msgspec.json.Decoder(CallSnapshot)
_live_call_decoder: Final = msgspec.json.Decoder(LiveCall)
_shared_decoder: Final = msgspec.json.Decoder(CallShared)
_encoder: Final = msgspec.json.Encoder()


def _keys(cid: str) -> list[str]:
    return [f"acdg:call:{cid}", f"acdg:history:{cid}"]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore:
    """Call state in Redis, for many bridge instances behind one load balancer."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.url = url
        self._redis: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._take_over = self._redis.register_script(_TAKE_OVER)
        self._renew = self._redis.register_script(_RENEW)
        self._disown = self._redis.register_script(_DISOWN)
        self._release = self._redis.register_script(_RELEASE)
        self._live_ended = self._redis.register_script(_LIVE_ENDED)
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        host = self.url.rpartition("@")[2]  # never show a password
        return f"RedisStore({host!r})"

    async def _run(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from None

    async def create(self, snapshot: CallSnapshot, ttl_s: float) -> None:
        key, history = _keys(snapshot.conversation_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(key, history)
        pipe.hset(key, mapping={"snapshot": _encoder.encode(snapshot),
                                "owner": snapshot.owner, "epoch": snapshot.epoch})
        pipe.pexpire(key, _ms(ttl_s))
        await self._run(pipe.execute())

    async def load(self, cid: str) -> Stored | None:
        key, history = _keys(cid)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.lrange(history, 0, -1)
        fields, entries = await self._run(pipe.execute())
        if not fields or b"snapshot" not in fields:
            return None
        snapshot = msgspec.structs.replace(
            _snapshot_decoder.decode(fields[b"snapshot"]),
            owner=fields.get(b"owner", b"").decode(),
            epoch=int(fields.get(b"epoch", b"0")),
        )
        shared = CallShared()
        # written by another version: the call goes on without it
        with contextlib.suppress(msgspec.DecodeError):
            shared = _shared_decoder.decode(fields.get(b"shared", b"{}"))
        return snapshot, [_history_decoder.decode(e) for e in entries], shared

    async def save(self, cid: str, shared: CallShared) -> None:
        key = _keys(cid)[0]
        await self._run(self._redis.hset(key, "shared", _encoder.encode(shared)))

    async def take_over(
        self, cid: str, instance: str, expected_epoch: int, ttl_s: float
    ) -> CallSnapshot | None:
        epoch = await self._run(
            self._take_over(keys=_keys(cid), args=[instance, str(expected_epoch), _ms(ttl_s)])
        )
        if epoch is None:
            return None
        loaded = await self.load(cid)
        return None if loaded is None else loaded[0]

    async def renew(self, cid: str, instance: str, ttl_s: float) -> bool:
        return bool(await self._run(self._renew(keys=_keys(cid), args=[instance, _ms(ttl_s)])))

    async def append(self, cid: str, entries: Sequence[dg.History], ttl_s: float) -> None:
        if not entries:
            return
        history = _keys(cid)[1]
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(history, *(_encoder.encode(e) for e in entries))
        pipe.pexpire(history, _ms(ttl_s))
        await self._run(pipe.execute())

    async def disown(self, cid: str, instance: str) -> None:
        await self._run(self._disown(keys=_keys(cid), args=[instance]))

    async def release(self, cid: str, instance: str) -> None:
        await self._run(self._release(keys=_keys(cid), args=[instance]))

    async def publish(self, instance: str, message: Message) -> bool:
        receivers = await self._run(
            self._redis.publish(f"acdg:instance:{instance}", _encoder.encode(message))
        )
        return bool(receivers)

    async def listen(self, instance: str) -> AsyncIterator[Message]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await self._run(pubsub.subscribe(f"acdg:instance:{instance}"))
            try:
                async for raw in pubsub.listen():
                    try:
                        yield _message_decoder.decode(raw["data"])
                    except msgspec.DecodeError:
                        continue
            except (RedisError, OSError) as exc:  # Redis went away while we listened
                raise StoreUnavailable(f"redis: {exc}") from None
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2

    async def heartbeat(self, instance: str, active_calls: int, ttl_s: float) -> None:
        await self._run(self._redis.hset("acdg:instances", instance,
                                         f"{active_calls} {time.time():.3f}"))

    async def cluster_calls(self) -> int:
        entries = await self._run(self._redis.hgetall("acdg:instances"))
        fresh_after = time.time() - 15
        total = 0
        for value in entries.values():
            calls, _, stamp = value.decode().partition(" ")
            if float(stamp or 0) >= fresh_after:
                total += int(calls)
        return total

    # --- live events -----------------------------------------------------------------

    async def live_publish(self, items: Sequence[LiveItem]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        latest: dict[str, LiveCall] = {}
        for call, event in items:
            cid = call.conversation_id
            latest.pop(cid, None)
            latest[cid] = call  # in the order calls last changed
            if event is None:
                continue
            fields = {"e": event.event, "s": event.seq, "d": event.data}
            pipe.xadd(f"acdg:live:{cid}", fields,  # type: ignore[arg-type]
                      maxlen=LIVE_PER_CALL, approximate=True)
            pipe.xadd(_LIVE_ALL_KEY, fields,  # type: ignore[arg-type]
                      maxlen=LIVE_ALL, approximate=True)
        for cid, call in latest.items():
            if call.state == "ended":
                await self._live_ended(keys=[_LIVE_CALLS, f"acdg:live:{cid}"],
                                 args=[cid, call.owner, LIVE_ENDED_TTL_S], client=pipe)
            else:
                pipe.hset(_LIVE_CALLS, cid, _encoder.encode(call))
                pipe.expire(f"acdg:live:{cid}", LIVE_TTL_S)
        await self._run(pipe.execute())

    async def live_calls(self) -> list[LiveCall]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(_LIVE_CALLS)
        pipe.hgetall("acdg:instances")
        entries, instances = await self._run(pipe.execute())
        fresh_after = time.time() - 15
        alive = {name.decode() for name, value in instances.items()
                 if float(value.decode().partition(" ")[2] or 0) >= fresh_after}
        calls: list[LiveCall] = []
        gone: list[bytes] = []
        for cid, raw in entries.items():
            try:
                call = _live_call_decoder.decode(raw)
            except msgspec.DecodeError:
                gone.append(cid)
                continue
            if call.owner in alive:
                calls.append(call)
            else:
                gone.append(cid)
        if gone:  # an instance died with these calls: nobody else will end them
            await self._run(self._redis.hdel(_LIVE_CALLS, *gone))
        return sorted(calls, key=lambda call: call.started)

    async def live_last(self, conversation_id: str) -> LiveEvent | None:
        newest = await self._run(
            self._redis.xrevrange(f"acdg:live:{conversation_id}", count=1))
        return _live_event(*newest[0], sse_id=False) if newest else None

    def live_follow(
        self, conversation_id: str | None, after: str, *, wait_s: float,
        until: Callable[[], bool] = bool,
    ) -> AsyncGenerator[LiveEvent, None]:
        if conversation_id is None:
            if after and not _STREAM_ID.fullmatch(after):
                raise ValueError("Last-Event-ID and ?after= take an id this stream sent")
            return self._follow_all(after, until)
        if after and not after.isdigit():
            raise ValueError("Last-Event-ID and ?after= take an id this stream sent")
        return self._follow_call(conversation_id, int(after or 0), wait_s, until)

    async def _follow_call(
        self, cid: str, seq: int, wait_s: float, until: Callable[[], bool]
    ) -> AsyncGenerator[LiveEvent, None]:
        """Waits ``wait_s`` for the call's first event, and as long again after its old
        owner handed it over (:func:`handed_over`) for the next owner's."""
        key, last, started = f"acdg:live:{cid}", "0-0", False
        deadline = time.monotonic() + wait_s
        while (started or time.monotonic() < deadline) and not until():
            for stream_id, event in await self._read(key, last, sse_id=False):
                last, started = stream_id, True
                if event.seq > seq:  # and never one twice, or out of order
                    seq = event.seq
                    yield event
                if handed_over(event):
                    started, deadline = False, time.monotonic() + wait_s
                elif event.event == "session_end":
                    return

    async def _follow_all(
        self, after: str, until: Callable[[], bool]
    ) -> AsyncGenerator[LiveEvent, None]:
        last = after
        if not last:
            newest = await self._run(self._redis.xrevrange(_LIVE_ALL_KEY, count=1))
            last = newest[0][0].decode() if newest else "0-0"
        while not until():
            for stream_id, event in await self._read(_LIVE_ALL_KEY, last, sse_id=True):
                last = stream_id
                yield event

    async def _read(
        self, key: str, last: str, *, sse_id: bool
    ) -> list[tuple[str, LiveEvent]]:
        """The entries after ``last``, waiting a moment for some: (stream id, event), the
        event's SSE id the stream id where ``sse_id`` (else its ``seq``)."""
        found = await self._run(self._redis.xread({key: last}, count=200,
                                                  block=_LIVE_BLOCK_MS))
        return [(raw_id.decode(), _live_event(raw_id, fields, sse_id=sse_id))
                for _, entries in found or () for raw_id, fields in entries]

    async def close(self) -> None:
        await self._redis.aclose()


def _live_event(raw_id: bytes, fields: dict[bytes, bytes], *, sse_id: bool) -> LiveEvent:
    """A stream entry as the event it holds; its SSE id the stream id where ``sse_id``."""
    return LiveEvent(int(fields[b"s"]), fields[b"e"].decode(), fields[b"d"],
                     raw_id.decode() if sse_id else "")
