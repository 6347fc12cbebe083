"""The VAIC simulator and conformance checker against a bot that breaks rules on request.

The bot (tests/brokenbot.py) runs under a real uvicorn server on a loopback port; every
call is a real WebSocket. Scripts are short so the whole file stays fast.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import anyio
import brokenbot  # tests/ is on sys.path under pytest
import pytest
from msgspec.structs import replace

from acdg_asgi.audio import FORMATS, wav_header
from acdg_asgi.testing.conformance import CODES, END_CROSSING_MS, ConformanceChecker
from acdg_asgi.testing.rules import clip_frame, message_findings
from acdg_asgi.testing.signals import tone
from acdg_asgi.testing.vaic import (
    CallEvent,
    CallReport,
    CallScript,
    Utterance,
    read_wav,
    run_call,
    run_calls,
    validate_connection,
)

QUICK = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=1000),), max_duration_ms=5000)
TALK = CallScript(
    utterances=(
        Utterance(speech_ms=0, pause_ms=200),  # let the greeting play
        Utterance(speech_ms=300, pause_ms=700),
        Utterance(speech_ms=300, pause_ms=700),
    ),
    max_duration_ms=8000,
)


@pytest.fixture(scope="module")
def bot(broken_bot: str) -> str:
    return broken_bot


def call(url: str, script: CallScript = QUICK, **kwargs: Any) -> CallReport:
    return anyio.run(partial(run_call, url, script, **kwargs))


def codes(report: CallReport) -> set[str]:
    return {v.code for v in report.violations}


# --- the good bot ----------------------------------------------------------------------


def test_good_bot_has_no_violations(bot: str) -> None:
    events: list[CallEvent] = []
    report = call(f"{bot}/good?hangup_after=2", TALK, on_event=events.append)

    assert report.violations == [], report.to_json(indent=2)
    assert report.ended_by == "bot-hangup"
    assert report.hangup_reason == "done"
    assert report.media_format == "raw/lpcm16"
    assert [s.alt_text for s in report.play_streams] == ["Hello", "answer 1", "answer 2"]
    for stream in report.play_streams:
        assert stream.stopped_ms is not None and stream.chunks == len(stream.chunk_times_ms) > 0
        assert stream.audio_ms == pytest.approx(stream.chunks * 20)
    finals = [t.text for t in report.transcripts if t.final]
    assert finals == ["hello there", "hello there"]
    assert [lat.utterance for lat in report.latencies] == [1, 2]
    assert all(0 < lat.latency_ms < 1000 for lat in report.latencies)
    sent = [(e.type, e.summary) for e in report.timeline if e.direction == "sent"]
    assert sent[0][0] == "session.initiate"
    assert sent[-1] == ("session.end", "bot-disconnected (Bot Side)")
    assert "userStream.chunk" not in {e.type for e in report.timeline}
    assert events == report.timeline


def test_validate_first_and_connection_validate(bot: str) -> None:
    for query in ("hangup_after=0", "hangup_after=0&close_after_validate"):
        report = call(f"{bot}/good?{query}", replace(QUICK, validate_first=True))
        assert report.validated is True
        assert report.violations == []
        assert report.ended_by == "bot-hangup"

    alone = anyio.run(partial(validate_connection, f"{bot}/good"))
    assert alone.validated is True
    assert alone.ended_by == "validate"
    assert alone.violations == []


@pytest.mark.parametrize("fmt", ["raw/mulaw", "wav/lpcm16", "raw/lpcm16_8"])
def test_other_formats(bot: str, fmt: str) -> None:
    script = replace(TALK, formats=(fmt,), utterances=TALK.utterances[:2])
    report = call(f"{bot}/good", script)
    assert report.media_format == fmt
    assert report.violations == []
    assert len(report.latencies) == 1


def test_hangup_without_reason_is_a_note(bot: str) -> None:
    report = call(f"{bot}/hangup-no-reason?hangup_after=0")
    assert report.violations == []
    assert [n.code for n in report.notes] == ["hangup-without-reason"]


def test_refusal_is_reported_not_a_violation(bot: str) -> None:
    report = call(f"{bot}/refuse")
    assert report.refused_reason == "no thanks"
    assert report.ended_by == "refused"
    assert report.violations == []


def test_token_is_sent_as_bearer(bot: str) -> None:
    assert call(f"{bot}/good?hangup_after=0&token=s3cret", token="s3cret").ok
    refused = call(f"{bot}/good?hangup_after=0&token=s3cret")
    assert refused.connect_error == "HTTP 403"
    assert refused.ended_by == "connect-failed"


# --- each mistake is caught ------------------------------------------------------------

# mode -> (script, query); by default the quick script, and the bot hangs up after its greeting
SETUPS: dict[str, tuple[CallScript, str]] = {
    "resume-refused": (replace(QUICK, drop_and_resume_at_ms=100), ""),
    "silent": (replace(QUICK, utterances=(Utterance(speech_ms=100, pause_ms=3000),),
                       silence_timeout_ms=500), ""),
    "initiate-unanswered": (replace(QUICK, reply_timeout_ms=300), ""),
    "user-stream-unanswered": (
        replace(QUICK, utterances=(Utterance(speech_ms=200, pause_ms=600),), reply_timeout_ms=300),
        "",
    ),
}
# mode -> text the offending frame must contain (None: the violation has no frame)
FRAMES: dict[str, str | None] = {
    "session-end": '"session.end"',
    "binary": "<binary frame, 3 bytes>",
    "invalid-json": '{"type": "playStream.start", ',
    "chunk-outside-stream": '"playStream.chunk"',
    "stream-id-mismatch": '"g2"',
    "overlapping-streams": '"g2"',
    "unclosed-stream": '"g1"',
    "start-no-format": '"playStream.start"',
    "accept-no-format": '"session.accepted"',
    "start-unoffered": "raw/lpcm16_24",
    "accept-unoffered": "wav/lpcm16_24",
    "flat-recognition": '"text"',
    "send-dtmf-key": '"dtmf"',
    "send-dtmf-digits": "12x",
    "dtmf-lowercase": '"dtmf"',
    "resume-refused": '"session.error"',
    "duplicate-stream-id": '"g"',
    "bad-base64": "@@!",
    "before-accept": '"playStream.start"',
    "stop-outside-stream": '"nope"',
    "no-stream-id": '"playStream.start"',
    "validate-unanswered": None,
    "validated-no-success": '"connection.validated"',
    "silent": None,
    "close-socket": None,
    "initiate-unanswered": None,
    "user-stream-unanswered": None,
}
BAD_MODES = {mode: code for mode, code in brokenbot.MODES.items() if code is not None}


def test_every_bad_mode_is_covered() -> None:
    assert set(FRAMES) == set(BAD_MODES)
    assert set(BAD_MODES.values()) <= set(CODES)


@pytest.mark.parametrize("mode", sorted(BAD_MODES))
def test_bad_mode_is_caught(bot: str, mode: str) -> None:
    expected = BAD_MODES[mode]
    if mode.startswith("validate"):
        report = anyio.run(partial(validate_connection, f"{bot}/{mode}"))
    else:
        script, query = SETUPS.get(mode, (QUICK, "hangup_after=0"))
        report = call(f"{bot}/{mode}?{query}", script)

    assert codes(report) == {expected}, report.to_json(indent=2)
    violation = next(v for v in report.violations if v.code == expected)
    snippet = FRAMES[mode]
    if snippet is None:
        assert violation.frame is None
    else:
        assert violation.frame is not None and snippet in violation.frame
    assert violation.t_ms is not None and 0 < violation.t_ms <= report.duration_ms
    assert any(e.type == "violation" and e.summary.startswith(expected) for e in report.timeline)


def test_audio_is_cut_from_offending_frames() -> None:
    frame = '{"type":"playStream.chunk","streamId":"1","audioChunk":"' + "A" * 4000 + '"}'
    clipped = clip_frame(frame)
    assert len(clipped) < 100 and clipped.endswith('…"}')


# --- script features -------------------------------------------------------------------


def test_resume_after_a_dropped_socket(bot: str) -> None:
    script = replace(TALK, drop_and_resume_at_ms=100)
    report = call(f"{bot}/good?hangup_after=2", script)

    assert report.resumed is True
    assert report.violations == [], report.to_json(indent=2)
    assert report.ended_by == "bot-hangup"
    types = [e.type for e in report.timeline if e.direction != "received"]
    drop = types.index("socket.drop")
    assert "session.end" not in types[:drop]
    assert types[drop + 1 : drop + 5] == [
        "socket.closed", "socket.open", "session.resume", "userStream.start",
    ]
    got = [m["type"] for m in brokenbot.RECEIVED[report.conversation_id]]
    assert got.count("session.resume") == 1
    assert got.index("session.resume") < got.index("session.end")
    assert len(report.latencies) == 2  # the call went on after the resume


def test_dtmf_is_sent_as_DTMF_event(bot: str) -> None:
    script = replace(QUICK, utterances=(Utterance(speech_ms=200, pause_ms=500),))
    report = call(f"{bot}/good", replace(script, dtmf=((100, "12#"),)))
    received = brokenbot.RECEIVED[report.conversation_id]
    dtmf = [a for m in received if m["type"] == "activities" for a in m["activities"]
            if a.get("name") == "DTMF"]
    assert len(dtmf) == 1
    assert dtmf[0]["type"] == "event" and dtmf[0]["value"] == "12#"
    assert {"id", "timestamp"} <= set(dtmf[0])
    echoed = [a.activity for a in report.activities if a.activity.name == "sendDtmf"]
    assert echoed and echoed[0].activity_params == {"dtmfDigits": "12#"}
    assert report.violations == []


def test_caller_audio_is_paced_in_real_time(bot: str) -> None:
    script = replace(QUICK, utterances=(Utterance(speech_ms=400, pause_ms=400),))
    started = time.monotonic()
    report = call(f"{bot}/good?hangup_after=99", script)
    elapsed = time.monotonic() - started

    assert report.ended_by == "script-end"
    # The script is 800 ms: 40 frames of 20 ms. VAIC streams caller audio for as long as
    # the call is up, so the simulator ends the stream only once the bot's answer (200 ms,
    # from 600 ms on) has stopped playing; on a busy machine that answer can end after
    # the script does, and the frames sent meanwhile are silence sent while it played.
    frames = report.caller_frames
    assert frames >= 40
    assert report.caller_audio_ms == pytest.approx(20 * frames)
    assert report.first_frame_ms is not None and report.last_frame_ms is not None
    if frames > 40:
        answer = report.play_streams[-1]  # the answer, after any greeting
        assert answer.stopped_ms is None or report.last_frame_ms < answer.stopped_ms
    spread = report.last_frame_ms - report.first_frame_ms  # at least 39 frames of 20 ms
    assert spread > 600  # paced: a burst would take a few ms (lateness only adds to it)
    assert elapsed > 0.7
    assert report.violations == []


def test_barge_in(bot: str) -> None:
    script = replace(
        QUICK,
        utterances=(Utterance(speech_ms=300, pause_ms=3000), Utterance(speech_ms=300)),
        barge_in_after_ms=300,
    )
    report = call(f"{bot}/good?answer_ms=3000&hangup_after=1", script)

    assert report.violations == [], report.to_json(indent=2)
    assert len(report.barge_ins) == 1
    barge_in = report.barge_ins[0]
    answer = next(s for s in report.play_streams if s.stream_id == barge_in.stream_id)
    assert answer.alt_text == "answer 1"
    assert answer.first_chunk_ms is not None
    assert barge_in.talk_ms - answer.first_chunk_ms == pytest.approx(300, abs=60)
    assert barge_in.reaction_ms is not None and 0 < barge_in.reaction_ms < 500
    assert barge_in.agent_audio_after_ms < 500
    assert answer.audio_ms < 1500  # cut short


def test_caller_hangs_up(bot: str) -> None:
    report = call(f"{bot}/good", replace(TALK, hangup_after_ms=400))
    assert report.ended_by == "caller-hangup"
    end = [e.summary for e in report.timeline if e.type == "session.end"]
    assert end == ["client-disconnected (Client Side)"]
    assert report.violations == []


def test_caller_audio_from_a_wav_file(bot: str) -> None:
    fmt = FORMATS["raw/lpcm16_8"]
    speech = tone(fmt, 300)
    wav = wav_header(fmt, len(speech)) + speech
    read_fmt, samples = read_wav(wav)
    assert (read_fmt, samples) == (fmt, speech)

    script = CallScript(formats=(read_fmt.token,), caller_audio=samples, tail_ms=600)
    report = call(f"{bot}/good", script)
    assert report.violations == []
    assert report.ended_by == "bot-hangup"
    assert len(report.latencies) == 1


def test_report_round_trips_through_json(bot: str) -> None:
    report = call(f"{bot}/good", replace(TALK, utterances=TALK.utterances[:2]), record_audio=True)
    assert report.caller_audio is not None
    assert len(report.caller_audio) == report.caller_frames * 640
    for stream in report.play_streams:
        assert stream.audio is not None and len(stream.audio) == stream.audio_ms * 32
    assert CallReport.from_json(report.to_json()) == report
    assert CallReport.from_json(report.to_json(indent=2)) == report


def test_several_calls_at_once(bot: str) -> None:
    seen: set[str] = set()
    scripts = [replace(QUICK, conversation_id=f"call-{i}") for i in range(2)] + [QUICK]
    reports = anyio.run(
        partial(
            run_calls, f"{bot}/good?hangup_after=0", scripts, concurrency=3,
            on_event=lambda cid, _event: seen.add(cid),
        )
    )
    assert [r.conversation_id for r in reports][:2] == ["call-0", "call-1"]
    assert len({r.conversation_id for r in reports}) == 3 == len(seen)
    assert all(r.ok and r.ended_by == "bot-hangup" for r in reports)


# --- the checker on its own ------------------------------------------------------------


def test_checker_deadlines_are_judged_on_tick() -> None:
    checker = ConformanceChecker(silence_timeout_ms=1000, reply_timeout_ms=500)
    checker.socket_opened(0)
    checker.feed("vaic", 0, b'{"type":"session.initiate","conversationId":"c",'
                 b'"supportedMediaFormats":["raw/mulaw"]}', binary=False)
    assert checker.deadline() == 500
    assert checker.tick(499) == []
    checker.feed("bot", 100, '{"type":"session.accepted","mediaFormat":"raw/mulaw"}')
    assert checker.deadline() == 1100  # dead air since the answer
    assert [v.code for v in checker.tick(1100)] == ["silence-no-hangup"]
    assert checker.finish(2000) == checker.violations


def test_checker_flags_a_stream_left_open_at_the_end() -> None:
    checker = ConformanceChecker()
    checker.socket_opened(0)
    checker.feed("bot", 10, '{"type":"session.accepted","mediaFormat":"raw/lpcm16"}')
    checker.feed("bot", 20, '{"type":"playStream.start","streamId":"a","mediaFormat":"raw/lpcm16"}')
    checker.feed("bot", 40, '{"type":"playStream.chunk","streamId":"a","audioChunk":"AAAA"}')
    assert checker.finish(500) == []  # still playing when the call ended: not the bot's fault

    checker = ConformanceChecker()
    checker.feed("bot", 10, '{"type":"session.accepted","mediaFormat":"raw/lpcm16"}')
    checker.feed("bot", 20, '{"type":"playStream.start","streamId":"a","mediaFormat":"raw/lpcm16"}')
    assert [v.code for v in checker.finish(5000)] == ["unclosed-stream"]


START = '{"type":"playStream.start","streamId":"a","mediaFormat":"raw/lpcm16"}'
CHUNK = '{"type":"playStream.chunk","streamId":"a","audioChunk":"AAAA"}'
STOP = '{"type":"playStream.stop","streamId":"a"}'
SESSION_END = '{"type":"session.end","conversationId":"c","reasonCode":"client-disconnected"}'


def playing_checker() -> ConformanceChecker:
    """A call whose bot is playing stream ``a`` (last chunk at 40 ms)."""
    checker = ConformanceChecker()
    checker.socket_opened(0)
    checker.feed("bot", 10, '{"type":"session.accepted","mediaFormat":"raw/lpcm16"}')
    checker.feed("bot", 20, START)
    checker.feed("bot", 40, CHUNK)
    return checker


@pytest.mark.parametrize("late_ms", [0, 60, END_CROSSING_MS])
def test_checker_lets_the_stream_cross_vaics_session_end(late_ms: float) -> None:
    """The bot sent the rest of its stream before it could read VAIC's session.end."""
    checker = playing_checker()
    checker.feed("vaic", 50, SESSION_END)
    assert checker.feed("bot", 50 + late_ms / 2, CHUNK) == []
    assert checker.feed("bot", 50 + late_ms, STOP) == []
    assert checker.finish(50 + late_ms + 10) == []


def test_checker_flags_the_stream_long_after_vaics_session_end() -> None:
    checker = playing_checker()
    checker.feed("vaic", 50, SESSION_END)
    late = 50 + END_CROSSING_MS + 1
    assert [v.code for v in checker.feed("bot", late, CHUNK)] == ["chunk-outside-stream"]
    assert [v.code for v in checker.feed("bot", late, STOP)] == ["stop-outside-stream"]


def test_checker_lets_only_the_open_stream_cross_and_stop_once() -> None:
    checker = playing_checker()
    checker.feed("vaic", 50, SESSION_END)
    other = '{"type":"playStream.stop","streamId":"b"}'
    assert [v.code for v in checker.feed("bot", 60, other)] == ["stop-outside-stream"]
    assert checker.feed("bot", 70, STOP) == []
    assert checker.feed("bot", 80, STOP) == []  # the same finding again: counted on the first
    assert [(v.code, v.count) for v in checker.violations] == [("stop-outside-stream", 2)]


@pytest.mark.parametrize(
    ("activity", "expected"),
    [
        ({"name": "sendDtmf", "activityParams": {"dtmfDigits": "0123456789*#"}}, []),
        ({"name": "sendDtmf", "activityParams": {"dtmfDigits": "12A"}}, ["bad-send-dtmf"]),
        ({"name": "sendDtmf", "activityParams": {"dtmfDigits": "1" * 21}}, ["bad-send-dtmf"]),
        ({"name": "sendDtmf", "activityParams": {"dtmfDigits": ""}}, ["bad-send-dtmf"]),
        ({"name": "sendDTMF", "activityParams": {"dtmfDigits": "1"}}, ["bad-send-dtmf"]),
        ({"name": "Dtmf", "value": "1"}, ["dtmf-event-name"]),
        ({"name": "transfer", "activityParams": {}}, ["bad-transfer"]),
        ({"name": "hangup"}, ["hangup-without-reason"]),
    ],
)
def test_activity_rules(activity: dict[str, Any], expected: list[str]) -> None:
    found = message_findings("activities", {"activities": [{"type": "event", **activity}]})
    assert [f.code for f in found] == expected


def test_giving_up_after_max_duration(bot: str) -> None:
    script = replace(QUICK, wait_for_hangup=True, max_duration_ms=800)
    report = call(f"{bot}/good?hangup_after=99", script)
    assert report.ended_by == "max-duration"
    assert [e.summary for e in report.timeline if e.type == "session.end"] == [
        "client-disconnected (Client Side)"
    ]
    assert report.violations == []
