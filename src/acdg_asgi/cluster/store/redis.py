"""The Redis store (``pip install acdg-asgi[redis]``): call state shared by many instances.

Keys, for each conversation::

    acdg:call:{cid}      hash: snapshot (JSON), owner, epoch, shared (JSON)
    acdg:history:{cid}   list of History entries (JSON), one push per turn

and ``acdg:instances`` (instance -> "calls timestamp") for the cluster view. Ownership
changes in Lua scripts, so compare-and-set on ``epoch`` is atomic. Commands for a call
travel on the owner's pub/sub channel ``acdg:instance:{id}``; replies on the requester's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import msgspec
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ...errors import StoreUnavailable
from ...protocols import deepgram as dg
from .base import CallShared, CallSnapshot, Message, Stored

__all__ = ["RedisStore"]

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

_history_decoder: Final = msgspec.json.Decoder(dg.History)
_message_decoder: Final = msgspec.json.Decoder(Message)
_snapshot_decoder: Final = msgspec.json.Decoder(CallSnapshot)
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
                await pubsub.aclose()  # type: ignore[no-untyped-call]

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

    async def close(self) -> None:
        await self._redis.aclose()
