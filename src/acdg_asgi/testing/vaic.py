"""A scripted VAIC: drive any Bot API streaming-mode bot as AudioCodes would.

A call is one script driver (the only writer) and one receiver per socket, in one anyio
task group. Caller audio is paced against a monotonic start time, frame ``i`` going out
at ``start + i * frame_ms``, so lateness never accumulates. Every frame both ways is
recorded and judged by :class:`~._observer.CallObserver`::

    report = await run_call("ws://localhost:8000/audiocodes", CallScript(), token="s3cret")
    print(report.to_json(indent=2))
    assert not report.violations
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from ssl import SSLContext
from typing import Final

import anyio
import msgspec
from anyio.abc import TaskGroup

from ..audio import FORMATS, MediaFormat, wav_header
from ..protocols.audiocodes import (
    Activities,
    Activity,
    ConnectionValidate,
    InboundMessage,
    SessionAccepted,
    SessionEnd,
    SessionError,
    SessionInitiate,
    SessionResume,
    UserStreamChunk,
    UserStreamStart,
    UserStreamStop,
)
from ._observer import CallObserver, EventHook
from ._socket import VaicSocket
from .conformance import VALIDATE_TIMEOUT_MS, Note, Violation
from .report import CallEvent, CallReport
from .script import CallerTape, CallScript, Utterance, read_wav
from .signals import silence

__all__ = [
    "CallEvent",
    "CallReport",
    "CallScript",
    "EventHook",
    "Note",
    "Utterance",
    "Violation",
    "read_wav",
    "run_call",
    "run_calls",
    "validate_connection",
]

BOT_CLOSE_WAIT_MS: Final = 1000
"""After session.end, how long the bot may take to close the socket before VAIC does."""

# What VAIC says in session.end, by why the call ended; the other endings send none.
_SESSION_END: Final = {
    "bot-hangup": ("bot-disconnected", "Bot Side"),
    "transfer": ("transferred", "Transferred"),
    "script-end": ("client-disconnected", "Client Side"),
    "caller-hangup": ("client-disconnected", "Client Side"),
    "silence-timeout": ("client-disconnected", "Client Side"),
    "max-duration": ("client-disconnected", "Client Side"),
}


async def run_call(
    url: str,
    script: CallScript | None = None,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    on_event: EventHook | None = None,
    record_audio: bool = False,
    ssl: SSLContext | None = None,
) -> CallReport:
    """Place one call. Never raises for anything the bot or the network does.

    ``ssl``: the TLS context for ``wss://`` URLs (a private CA, or no verification).
    """
    call = _Call(url, script or CallScript(), token, headers, on_event, record_audio, ssl)
    return await call.run()


async def run_calls(
    url: str,
    scripts: Sequence[CallScript],
    *,
    concurrency: int = 10,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    on_event: Callable[[str, CallEvent], None] | None = None,
    record_audio: bool = False,
    ssl: SSLContext | None = None,
) -> list[CallReport]:
    """Place several calls, at most ``concurrency`` at a time; reports in script order.

    ``on_event`` gets the conversation id with each event.
    """
    limiter = anyio.CapacityLimiter(concurrency)
    reports: dict[int, CallReport] = {}

    async def one(index: int, script: CallScript) -> None:
        cid = script.conversation_id or str(uuid.uuid4())
        script = msgspec.structs.replace(script, conversation_id=cid)
        hook = partial(on_event, cid) if on_event else None
        async with limiter:
            reports[index] = await run_call(
                url, script, token=token, headers=headers, on_event=hook,
                record_audio=record_audio, ssl=ssl,
            )

    async with anyio.create_task_group() as tg:
        for index, script in enumerate(scripts):
            tg.start_soon(one, index, script)
    return [reports[i] for i in range(len(scripts))]


async def validate_connection(
    url: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    on_event: EventHook | None = None,
    ssl: SSLContext | None = None,
) -> CallReport:
    """Just ``connection.validate``, as Live Hub does when a bot connection is saved."""
    call = _Call(url, CallScript(), token, headers, on_event, False, ssl)
    return await call.run(validate_only=True)


class _Call:
    def __init__(
        self,
        url: str,
        script: CallScript,
        token: str | None,
        headers: Mapping[str, str] | None,
        on_event: EventHook | None,
        record_audio: bool,
        ssl: SSLContext | None = None,
    ) -> None:
        self.url = url
        self._ssl = ssl
        self.script = script
        self.cid = script.conversation_id or str(uuid.uuid4())
        self.headers = dict(headers or {})
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.seen = CallObserver(
            url, script, self.cid, on_event=on_event, record_audio=record_audio
        )
        self._tg: TaskGroup | None = None
        self._sock: VaicSocket | None = None
        self._fmt: MediaFormat = FORMATS["raw/lpcm16"]
        self._audio_t0 = 0.0  # call time at which the script's caller audio started
        self._paused_ms = 0  # script time lost to audio withheld (barge-in off)
        self._recognitions_seen = 0
        self._stopped_at = 0.0  # when the user stream was last stopped (barge-in off)
        self._user_stream_open = False
        self._wav_header_due = False
        self._resumes = 0

    async def run(self, *, validate_only: bool = False) -> CallReport:
        s = self.script
        # A backstop only: the script itself ends the call by max_duration_ms.
        hard_limit = (s.max_duration_ms + s.reply_timeout_ms + VALIDATE_TIMEOUT_MS) / 1000 + 10
        async with anyio.create_task_group() as tg:
            self._tg = tg
            with anyio.move_on_after(hard_limit) as scope:
                if validate_only or s.validate_first:
                    await self._validate()
                if not validate_only and self.seen.report.connect_error is None:
                    await self._session()
            if scope.cancelled_caught:
                self.seen.ending = self.seen.ending or "max-duration"
            if self._sock is not None and not self._sock.gone.is_set():  # after a hard stop
                self._sock.abort()
        return self.seen.finish("validate" if validate_only else self.seen.ending or "unknown")

    # --- the call ------------------------------------------------------------------------

    async def _validate(self) -> None:
        seen, sock = self.seen, await self._connect()
        if sock is None:
            return
        seen.report.validated = False
        await self._send(ConnectionValidate())
        await seen.until(lambda: bool(seen.report.validated) or sock.gone.is_set(),
                         VALIDATE_TIMEOUT_MS)
        seen.tick()
        await self._close()
        seen.ending = None  # however that socket ended, it was not the call

    async def _session(self) -> None:
        s, seen = self.script, self.seen
        if await self._connect() is None:
            seen.ending = "connect-failed"
            return
        await self._send(
            SessionInitiate(
                conversation_id=self.cid, bot_name=s.bot_name, caller=s.caller,
                expect_audio_messages=True, supported_media_formats=s.formats,
            )
        )
        answer = await self._await_answer()
        if isinstance(answer, SessionError):
            seen.report.refused_reason = answer.reason
            seen.ending = "refused"
        if not isinstance(answer, SessionAccepted):
            await self._close()
            return
        seen.report.media_format = answer.media_format
        self._fmt = FORMATS.get(answer.media_format or "") or _first_known(s.formats)
        if s.start:
            start = Activity(
                type="event", name="start", id=str(uuid.uuid4()), timestamp=_timestamp(),
                language=s.language, parameters=s.start_activity_parameters(),
            )
            await self._send_activity(start)
        await self._start_user_stream()
        if seen.ending is None:
            await self._stream()
        await self._end()

    async def _end(self) -> None:
        seen = self.seen
        if seen.ending == "script-end" and self._user_stream_open:
            seen.replies.discard("userStream.stopped")
            for participant in self._participants:
                await self._send(UserStreamStop(conversation_id=self.cid,
                                                participant=participant))
            self._user_stream_open = False
            await seen.until(
                lambda: "userStream.stopped" in seen.replies or seen.ending != "script-end",
                self.script.reply_timeout_ms,
            )
            seen.tick()
        if seen.ending in _SESSION_END:
            code, reason = _SESSION_END[seen.ending]
            await self._send(SessionEnd(conversation_id=self.cid, reason_code=code, reason=reason))
            sock = self._sock
            if sock is not None:  # as VAIC does, leave the closing to the bot, for a moment;
                # what it sent before it saw session.end arrives meanwhile
                await seen.until(sock.gone.is_set, BOT_CLOSE_WAIT_MS)
        await self._close()

    async def _stream(self) -> None:
        """Send caller audio in real time and act on the script until the call ends."""
        s, seen = self.script, self.seen
        if s.wait_for_greeting:
            await self._greeting()
        tape = CallerTape(s, self._fmt)
        if s.barge_in_after_ms is not None:
            barge_in_after = s.barge_in_after_ms
            seen.on_agent_turn = lambda t: tape.interrupt(self._script_ms(t) + barge_in_after)
        actions = self._actions()
        start = anyio.current_time()
        self._audio_t0 = seen.now()
        i = 0  # frames of real time since the script started
        while True:
            due = start + i * s.frame_ms / 1000
            await seen.until(lambda: seen.ending is not None, (due - anyio.current_time()) * 1000)
            seen.tick()
            if seen.status_due is not None and seen.now() >= seen.status_due:
                await self._send_transfer_status()
            at = i * s.frame_ms - self._paused_ms  # the script's own time
            while seen.ending is None and actions and actions[0][0] <= at:
                if await actions.pop(0)[1]():  # time was lost: skip the audio meanwhile
                    i = max(i, math.ceil((anyio.current_time() - start) * 1000 / s.frame_ms))
            if seen.ending == "socket-closed" and s.resume_on_close:
                seen.ending = None
                await self._drop_and_resume()
                i = max(i, math.ceil((anyio.current_time() - start) * 1000 / s.frame_ms))
                continue
            if seen.ending is None and seen.now() >= s.max_duration_ms:
                seen.ending = "max-duration"
            if seen.ending is not None:
                return
            if not s.barge_in and await self._withheld():
                self._paused_ms += s.frame_ms  # VAIC sends nothing, and the caller waits
                i += 1
                continue
            at = i * s.frame_ms - self._paused_ms
            if s.wait_for_answers and tape.speech_due(at) and (
                    seen.agent_talking() or seen.waiting_for_answer(s.reply_timeout_ms)):
                self._paused_ms += s.frame_ms  # the caller lets the agent finish
                await self._send_chunk(tape.silence)
                i += 1
                continue
            produced = tape.frame(at)
            if produced is None and not (s.wait_for_hangup or seen.agent_talking()
                                         or seen.waiting_for_answer(s.reply_timeout_ms)):
                seen.ending = "script-end"
                return
            chunk, marks = produced or (tape.silence, [])
            seen.caller_marks(marks, self._audio_t0 + self._paused_ms)
            await self._send_chunk(chunk)
            i += 1

    def _script_ms(self, t: float) -> float:
        """Call time ``t`` on the script's clock."""
        return t - self._audio_t0 - self._paused_ms

    async def _greeting(self) -> None:
        """Silence on the line until the first play stream has played out, or none came."""
        s, seen = self.script, self.seen
        quiet = silence(self._fmt, s.frame_ms)
        start, since = anyio.current_time(), seen.now()
        i = 0
        while seen.ending is None:
            if seen.report.play_streams:
                if not seen.agent_talking():
                    return
            elif seen.now() - since >= s.reply_timeout_ms:
                seen.notes.append(Note("no-greeting", f"no greeting within "
                                       f"{s.reply_timeout_ms} ms; the caller spoke anyway",
                                       None, seen.now()))
                return
            due = start + i * s.frame_ms / 1000
            await seen.until(lambda: seen.ending is not None, (due - anyio.current_time()) * 1000)
            seen.tick()
            await self._send_chunk(quiet)
            i += 1

    async def _withheld(self) -> bool:
        """VAIC with barge-in off: whether this frame is withheld from the bot.

        No audio while the agent's audio plays; after a recognition the user stream is
        stopped, and started again once the answer has played (or none came in time).
        """
        seen = self.seen
        if self._user_stream_open and seen.recognitions > self._recognitions_seen:
            self._recognitions_seen = seen.recognitions
            seen.replies.discard("userStream.stopped")
            for participant in self._participants:
                await self._send(UserStreamStop(conversation_id=self.cid,
                                                participant=participant))
            self._user_stream_open = False
            self._stopped_at = seen.now()
            await seen.until(lambda: "userStream.stopped" in seen.replies
                             or seen.ending is not None, self.script.reply_timeout_ms)
            seen.tick()
            return True
        if not self._user_stream_open:
            answered = any(p.started_ms > self._stopped_at for p in seen.report.play_streams)
            waited = seen.now() - self._stopped_at >= self.script.reply_timeout_ms
            if (answered or waited) and not seen.agent_talking():
                self._recognitions_seen = seen.recognitions  # what came meanwhile is stale
                await self._start_user_stream()
            return True
        return seen.agent_talking()

    async def _send_chunk(self, chunk: bytes) -> None:
        payload = wav_header(self._fmt) + chunk if self._wav_header_due else chunk
        self._wav_header_due = False
        self.seen.caller_frame(chunk, self._fmt)
        for participant in self._participants:
            await self._send(UserStreamChunk(conversation_id=self.cid, audio_chunk=payload,
                                             participant=participant))

    @property
    def _participants(self) -> tuple[str | None, ...]:
        """One user stream per participant (agent assist), or one without a name."""
        return self.script.participants or (None,)

    async def _send_transfer_status(self) -> None:
        """What VAIC reports after the bot's transfer, as the script says."""
        seen = self.seen
        seen.status_due = None
        status, _, code = (self.script.transfer_status or "answered").partition(":")
        value: dict[str, str] = {"status": status}
        if status == "failed":
            value["reasonCode"] = code or "error"
            value["reason"] = f"transfer failed: {value['reasonCode']}"
        attempt = seen.report.transfers[-1]
        attempt.status, attempt.reason_code, attempt.status_ms = status, value.get(
            "reasonCode"), seen.now()
        await self._send_activity(Activity(type="event", name="transferStatus", value=value,
                                           id=str(uuid.uuid4()), timestamp=_timestamp()))
        if status == "answered":
            seen.ending = seen.ending or "transfer"

    # --- scripted actions: each returns whether time was lost ----------------------------

    def _actions(self) -> list[tuple[int, Callable[[], Awaitable[bool]]]]:
        s = self.script
        actions: list[tuple[int, Callable[[], Awaitable[bool]]]] = []
        for at, digits in s.dtmf:
            actions.append((at, partial(self._send_dtmf, digits)))
        for at, activity in s.activities:
            actions.append((at, partial(self._send_activity, activity)))
        if s.drop_and_resume_at_ms is not None:
            actions.append((s.drop_and_resume_at_ms, self._drop_and_resume))
        if s.hangup_after_ms is not None:
            actions.append((s.hangup_after_ms, self._caller_hangs_up))
        return sorted(actions, key=lambda action: action[0])

    async def _send_dtmf(self, digits: str) -> bool:
        dtmf = Activity(
            type="event", name="DTMF", value=digits, id=str(uuid.uuid4()), timestamp=_timestamp()
        )
        return await self._send_activity(dtmf)

    async def _send_activity(self, activity: Activity) -> bool:
        activities = (msgspec.to_builtins(activity),)
        await self._send(Activities(conversation_id=self.cid, activities=activities))
        return False

    async def _caller_hangs_up(self) -> bool:
        self.seen.ending = "caller-hangup"
        return False

    async def _drop_and_resume(self) -> bool:
        """Lose the socket without session.end, reconnect and resume, as VAIC does."""
        seen, sock = self.seen, self._sock
        if sock is not None and not sock.gone.is_set():
            seen.event("local", "socket.drop", "abrupt close, no session.end")
            sock.abort()
            await sock.gone.wait()
        lost_at = seen.now()
        urls = self.script.resume_urls
        url = urls[self._resumes % len(urls)] if urls else self.url
        self._resumes += 1
        if await self._connect(url) is None:
            seen.report.resumed = False
            seen.ending = "socket-closed"
            return True
        await self._send(SessionResume(conversation_id=self.cid))
        answer = await self._await_answer()
        seen.report.resumed = isinstance(answer, SessionAccepted)
        if seen.report.resumed:
            seen.report.resume_gaps_ms.append(seen.now() - lost_at)
        if not seen.report.resumed:
            seen.ending = seen.ending or "resume-refused"
        elif self._user_stream_open:
            await self._start_user_stream()
        return True

    async def _start_user_stream(self) -> None:
        seen = self.seen
        seen.replies.discard("userStream.started")
        for participant in self._participants:
            await self._send(UserStreamStart(conversation_id=self.cid, participant=participant))
        self._user_stream_open = True
        self._wav_header_due = self._fmt.wav
        await seen.until(
            lambda: "userStream.started" in seen.replies or seen.ending is not None,
            self.script.reply_timeout_ms,
        )
        seen.tick()

    async def _await_answer(self) -> SessionAccepted | SessionError | None:
        seen = self.seen
        seen.answer = None
        await seen.until(
            lambda: seen.answer is not None or seen.ending is not None,
            self.script.reply_timeout_ms,
        )
        seen.tick()
        if seen.answer is None and seen.ending is None:
            seen.ending = "no-answer"
        return seen.answer

    # --- sockets -------------------------------------------------------------------------

    async def _connect(self, url: str | None = None) -> VaicSocket | None:
        assert self._tg is not None
        self._sock = await VaicSocket.open(url or self.url, self.headers, self.seen, self._tg,
                                           ssl=self._ssl)
        return self._sock

    async def _close(self) -> None:
        if self._sock is not None:
            await self._sock.close()

    async def _send(self, message: InboundMessage) -> None:
        if self._sock is not None:
            await self._sock.send(message)


def _first_known(formats: Sequence[str]) -> MediaFormat:
    return next((FORMATS[f] for f in formats if f in FORMATS), FORMATS["raw/lpcm16"])


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
