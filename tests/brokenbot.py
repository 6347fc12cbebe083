"""A small Bot API bot that can be told to break the protocol in one chosen way.

The path picks the mode: ``/good`` behaves; ``/<mode>`` commits the mistake named in
:data:`MODES`. Query parameters tune the good behaviour: ``answer_ms`` (length of each
answer, default 200), ``greet_ms`` (length of the greeting, default 100), ``one_chunk``
(send the greeting's audio in one chunk and stop the stream at once, as bots with
pre-rendered prompts do), ``hangup_after`` (answers before hanging up, default 1; 0 hangs
up right after the greeting), ``reason`` (the hangupReason, default "done"), ``token``
(require this bearer token), ``close_after_validate`` (close the socket after answering
``connection.validate``).

Some modes keep to the protocol but fail the caller (:data:`FAILS`): ``mute`` never plays
any audio. ``cross-end`` keeps to the protocol too: the stream it is playing when VAIC's
``session.end`` comes gets one more chunk and its stop, as if sent before it was read.

The bot greets on the ``start`` activity, detects caller speech with a tone detector,
answers each utterance with a recognition and a paced play stream, stops playing when
the caller talks over it, and hangs up with a reason. Conversations are kept by id so
that ``session.resume`` works on a new socket.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import msgspec
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from acdg_asgi.audio import FORMATS, MediaFormat, strip_wav_header
from acdg_asgi.testing.signals import is_voiced, tone

FRAME_MS = 20
HANGOVER_MS = 200  # silence that ends a caller utterance

# mode -> the violation code it should produce (None: no violation)
MODES: dict[str, str | None] = {
    "good": None,
    "hangup-no-reason": None,
    "refuse": None,
    "session-end": "unknown-message-type",
    "binary": "binary-frame",
    "invalid-json": "invalid-json",
    "chunk-outside-stream": "chunk-outside-stream",
    "stream-id-mismatch": "stream-id-mismatch",
    "overlapping-streams": "overlapping-streams",
    "unclosed-stream": "unclosed-stream",
    "start-no-format": "missing-media-format",
    "accept-no-format": "missing-media-format",
    "start-unoffered": "format-not-offered",
    "accept-unoffered": "format-not-offered",
    "flat-recognition": "flat-recognition",
    "send-dtmf-key": "bad-send-dtmf",
    "send-dtmf-digits": "bad-send-dtmf",
    "dtmf-lowercase": "dtmf-event-name",
    "validate-unanswered": "validate-unanswered",
    "validated-no-success": "validated-without-success",
    "resume-refused": "resume-refused",
    "silent": "silence-no-hangup",
    "duplicate-stream-id": "duplicate-stream-id",
    "bad-base64": "bad-base64",
    "close-socket": "closed-without-hangup",
    "before-accept": "before-accept",
    "stop-outside-stream": "stop-outside-stream",
    "no-stream-id": "malformed-message",
    "initiate-unanswered": "session-unanswered",
    "user-stream-unanswered": "user-stream-unanswered",
    "mute": None,
    "cross-end": None,
    "double-hangup": None,
}

# modes that keep to the protocol but fail the caller, with the failure they cause
FAILS: dict[str, str] = {"mute": "never-heard-agent"}
CHUNKS_WHILE_PLAYING: dict[str, int] = {}  # caller audio that arrived while the bot played

# modes that carry on like "good" after their flaw instead of hanging up at once
CARRY_ON = {"good", "hangup-no-reason", "resume-refused", "user-stream-unanswered", "mute",
            "cross-end", "double-hangup"}

KNOWN_CONVERSATIONS: set[str] = set()
STREAMS: dict[str, int] = {}  # play streams so far, per conversation: ids stay unique on resume
RECEIVED: dict[str, list[dict[str, Any]]] = {}  # what each conversation got, audio left out


def _json(obj: Any) -> str:
    return msgspec.json.encode(obj).decode()


class BotCall:
    def __init__(self, ws: WebSocket, mode: str) -> None:
        self.ws = ws
        self.mode = mode
        self.answer_ms = int(ws.query_params.get("answer_ms", 200))
        self.greet_ms = int(ws.query_params.get("greet_ms", 100))
        self.one_chunk = "one_chunk" in ws.query_params
        self.hangup_after = int(ws.query_params.get("hangup_after", 1))
        self.reason = ws.query_params.get("reason", "done")
        self.playing = False
        self.open_stream_id: str | None = None
        self.cid = ""
        self.fmt: MediaFormat = FORMATS["raw/lpcm16"]
        self.offered: list[str] = []
        self.lock = anyio.Lock()
        self.answers = 0
        self.speaking = False
        self.quiet_ms = 0.0
        self.barge_in = anyio.Event()
        self.play_lock = anyio.Lock()
        self.closed = False
        self.tg: anyio.abc.TaskGroup | None = None

    async def send(self, obj: Any) -> None:
        async with self.lock:
            if self.closed:
                return
            try:
                if isinstance(obj, bytes):
                    await self.ws.send_bytes(obj)
                else:
                    await self.ws.send_text(obj if isinstance(obj, str) else _json(obj))
            except (RuntimeError, OSError, WebSocketDisconnect):
                self.closed = True  # the caller is gone; nothing left to say

    async def close(self) -> None:
        async with self.lock:
            if not self.closed:
                self.closed = True
                await self.ws.close()
        raise _Closed

    async def run(self) -> None:
        token = self.ws.query_params.get("token")
        if token and self.ws.headers.get("authorization") != f"Bearer {token}":
            await self.ws.close(code=1008)
            return
        await self.ws.accept()
        async with anyio.create_task_group() as tg:
            self.tg = tg
            try:
                while True:
                    await self.on_message(await self.ws.receive_text())
            except (WebSocketDisconnect, _Closed):
                self.closed = True
            tg.cancel_scope.cancel()

    async def on_message(self, text: str) -> None:
        msg = msgspec.json.decode(text)
        kind = msg["type"]
        if self.cid:
            logged = {k: v for k, v in msg.items() if k != "audioChunk"}
            RECEIVED.setdefault(self.cid, []).append(logged)
        match kind:
            case "connection.validate":
                if self.mode == "validated-no-success":
                    await self.send({"type": "connection.validated"})
                elif self.mode != "validate-unanswered":
                    await self.send({"type": "connection.validated", "success": True})
                if "close_after_validate" in self.ws.query_params:
                    await self.close()
            case "session.initiate":
                self.cid = msg["conversationId"]
                RECEIVED.setdefault(self.cid, []).append(msg)
                self.offered = msg["supportedMediaFormats"]
                await self.initiate()
            case "session.resume":
                self.cid = msg["conversationId"]
                RECEIVED.setdefault(self.cid, []).append(msg)
                if self.mode == "resume-refused" or self.cid not in KNOWN_CONVERSATIONS:
                    await self.send({"type": "session.error", "reason": "conversation not found"})
                else:
                    await self.send({"type": "session.accepted"})
            case "activities":
                for activity in msg["activities"]:
                    await self.on_activity(activity)
            case "userStream.start":
                if self.mode != "user-stream-unanswered":
                    await self.send({"type": "userStream.started"})
            case "userStream.stop":
                await self.send({"type": "userStream.stopped"})
            case "userStream.chunk":
                await self.on_audio(msgspec.json.decode(text, type=_Chunk).audio_chunk)
            case "session.end":
                stream = self.open_stream_id
                if self.mode == "cross-end" and stream:  # as if sent before it was read
                    await self.send({"type": "playStream.chunk", "streamId": stream,
                                     "audioChunk": _b64(tone(self.fmt, FRAME_MS))})
                    await self.send({"type": "playStream.stop", "streamId": stream})
                await self.close()

    async def initiate(self) -> None:
        chosen = next((f for f in self.offered if f in FORMATS), None)
        if chosen is None or self.mode == "refuse":
            await self.send({"type": "session.error", "reason": "no thanks"})
            return
        self.fmt = FORMATS[chosen]
        KNOWN_CONVERSATIONS.add(self.cid)
        match self.mode:
            case "initiate-unanswered":
                return
            case "accept-no-format":
                await self.send({"type": "session.accepted"})
                return
            case "accept-unoffered":
                await self.send({"type": "session.accepted", "mediaFormat": "wav/lpcm16_24"})
                return
            case "before-accept":
                fmt = chosen
                await self.send({"type": "playStream.start", "streamId": "x", "mediaFormat": fmt})
                await self.send({"type": "playStream.stop", "streamId": "x"})
        await self.send({"type": "session.accepted", "mediaFormat": chosen})

    async def on_activity(self, activity: dict[str, Any]) -> None:
        if activity.get("name") == "DTMF":
            digits = activity["value"]
            await self.send_activity("sendDtmf", {"dtmfDigits": digits})
        elif activity.get("name") == "start":
            await self.greet()

    async def greet(self) -> None:
        mode = self.mode
        fmt = self.fmt.token
        audio = _b64(tone(self.fmt, FRAME_MS))
        if mode == "silent":
            return
        if mode == "chunk-outside-stream":  # three times: one cause, one violation
            for _ in range(3):
                await self.send({"type": "playStream.chunk", "streamId": "g", "audioChunk": audio})
        elif mode == "stream-id-mismatch":
            await self.send({"type": "playStream.start", "streamId": "g1", "mediaFormat": fmt})
            await self.send({"type": "playStream.chunk", "streamId": "g2", "audioChunk": audio})
            await self.send({"type": "playStream.stop", "streamId": "g1"})
        elif mode == "overlapping-streams":
            await self.send({"type": "playStream.start", "streamId": "g1", "mediaFormat": fmt})
            await self.send({"type": "playStream.start", "streamId": "g2", "mediaFormat": fmt})
            await self.send({"type": "playStream.stop", "streamId": "g2"})
        elif mode == "unclosed-stream":
            await self.send({"type": "playStream.start", "streamId": "g1", "mediaFormat": fmt})
            await self.send({"type": "playStream.chunk", "streamId": "g1", "audioChunk": audio})
        elif mode == "start-no-format":
            await self.send({"type": "playStream.start", "streamId": "g1"})
            await self.send({"type": "playStream.stop", "streamId": "g1"})
        elif mode == "start-unoffered":
            await self.send(
                {"type": "playStream.start", "streamId": "g1", "mediaFormat": "raw/lpcm16_24"}
            )
            await self.send({"type": "playStream.stop", "streamId": "g1"})
        elif mode == "duplicate-stream-id":
            for _ in range(2):
                await self.send({"type": "playStream.start", "streamId": "g", "mediaFormat": fmt})
                await self.send({"type": "playStream.stop", "streamId": "g"})
        elif mode == "bad-base64":
            await self.send({"type": "playStream.start", "streamId": "g1", "mediaFormat": fmt})
            await self.send({"type": "playStream.chunk", "streamId": "g1", "audioChunk": "@@!"})
            await self.send({"type": "playStream.stop", "streamId": "g1"})
        elif mode == "stop-outside-stream":
            await self.send({"type": "playStream.stop", "streamId": "nope"})
        elif mode == "no-stream-id":
            await self.send({"type": "playStream.start", "mediaFormat": fmt})
        elif mode != "mute":
            await self.play(self.greet_ms, "Hello", one_chunk=self.one_chunk)
        extra: dict[str, Any] = {
            "session-end": {"type": "session.end", "reasonCode": "normal"},
            "binary": b"\x00\x01\x02",
            "invalid-json": '{"type": "playStream.start", ',
            "flat-recognition": {
                "type": "userStream.speech.recognition", "text": "hello", "confidence": 0.9,
            },
            "send-dtmf-key": _activities("sendDtmf", {"dtmf": "12"}),
            "send-dtmf-digits": _activities("sendDtmf", {"dtmfDigits": "12x"}),
            "dtmf-lowercase": {
                "type": "activities",
                "activities": [{"type": "event", "name": "dtmf", "value": "1"}],
            },
        }
        if mode in extra:
            await self.send(extra[mode])
        if mode == "close-socket":
            await self.close()
        if mode not in CARRY_ON or self.hangup_after == 0:
            await self.hang_up()

    async def hang_up(self) -> None:
        reason = None if self.mode == "hangup-no-reason" else {"hangupReason": self.reason}
        await self.send_activity("hangup", reason)
        if self.mode == "double-hangup":
            await self.send_activity("hangup", {"hangupReason": "and again"})

    async def send_activity(self, name: str, params: dict[str, Any] | None) -> None:
        await self.send(_activities(name, params))

    async def play(self, ms: int, text: str, *, one_chunk: bool = False) -> None:
        """A paced play stream of ``ms`` of tone; the caller talking stops it."""
        if self.mode == "mute":
            return
        async with self.play_lock:  # one play stream at a time
            self.playing = True
            try:
                await self._play(ms, text, one_chunk)
            finally:
                self.playing = False

    async def _play(self, ms: int, text: str, one_chunk: bool) -> None:
        STREAMS[self.cid] = STREAMS.get(self.cid, 0) + 1
        stream_id = str(STREAMS[self.cid])
        self.barge_in = anyio.Event()
        start = {"type": "playStream.start", "streamId": stream_id, "mediaFormat": self.fmt.token}
        await self.send({**start, "altText": text})
        self.open_stream_id = stream_id
        if one_chunk:  # all of it at once: it plays on at VAIC after the stop
            await self.send({"type": "playStream.chunk", "streamId": stream_id,
                             "audioChunk": _b64(tone(self.fmt, ms))})
            await self.send({"type": "playStream.stop", "streamId": stream_id})
            self.open_stream_id = None
            return
        frame = _b64(tone(self.fmt, FRAME_MS))
        chunk = {"type": "playStream.chunk", "streamId": stream_id}
        for _ in range(ms // FRAME_MS):
            await self.send({**chunk, "audioChunk": frame})
            with anyio.move_on_after(FRAME_MS / 1000):
                await self.barge_in.wait()
            if self.barge_in.is_set():
                break
        await self.send({"type": "playStream.stop", "streamId": stream_id})
        self.open_stream_id = None

    async def on_audio(self, audio: bytes) -> None:
        if self.playing:
            CHUNKS_WHILE_PLAYING[self.cid] = CHUNKS_WHILE_PLAYING.get(self.cid, 0) + 1
        if self.mode == "silent":
            return
        frame_ms = self.fmt.duration_ms(len(strip_wav_header(audio)))
        if is_voiced(strip_wav_header(audio), self.fmt):
            self.quiet_ms = 0
            if not self.speaking:
                self.speaking = True
                await self.send({"type": "userStream.speech.started"})
                self.barge_in.set()
        elif self.speaking:
            self.quiet_ms += frame_ms
            if self.quiet_ms >= HANGOVER_MS:
                self.speaking = False
                self.answers += 1
                await self.send({"type": "userStream.speech.stopped"})
                hypothesis = {"alternatives": [{"text": "hello"}]}
                await self.send({"type": "userStream.speech.hypothesis", **hypothesis})
                recognition = {"alternatives": [{"text": "hello there", "confidence": 0.9}]}
                await self.send({"type": "userStream.speech.recognition", **recognition})
                await self.send({"type": "userStream.speech.committed"})
                assert self.tg is not None
                self.tg.start_soon(self.answer, self.answers)

    async def answer(self, number: int) -> None:
        await self.play(self.answer_ms, f"answer {number}")
        if number >= self.hangup_after > 0:
            await self.hang_up()


class _Closed(Exception):
    pass


class _Chunk(msgspec.Struct, rename="camel"):
    audio_chunk: bytes


def _b64(data: bytes) -> str:
    return msgspec.json.encode(data).decode()[1:-1]


def _activities(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    activity: dict[str, Any] = {"type": "event", "name": name}
    if params is not None:
        activity["activityParams"] = params
    return {"type": "activities", "activities": [activity]}


async def _endpoint(ws: WebSocket) -> None:
    await BotCall(ws, ws.path_params["mode"]).run()


app = Starlette(routes=[WebSocketRoute("/{mode}", _endpoint)])
