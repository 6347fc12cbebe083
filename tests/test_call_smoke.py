"""``acdg call`` as a deployment smoke test, against bots that fail and against the bridge.

Each behaviour is checked twice where it can be: against tests/brokenbot.py, which
breaks one thing on request, and against the real bridge with the stand-in agent. The
command runs as a user types it (``main([...])``) wherever the output or the exit status
is what matters.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import brokenbot
import pytest
import trustme
from msgspec.structs import replace
from rig import standin

from acdg_asgi import AgentSettings, BridgeApp, Reconnect
from acdg_asgi.cli import main
from acdg_asgi.cli.call import summary
from acdg_asgi.testing.agent import AgentScript, Turn
from acdg_asgi.testing.report import CallReport
from acdg_asgi.testing.rules import Violation
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

QUICK = AgentScript(turns=(Turn("Sure thing", heard="help me"),) * 3, ms_per_word=60,
                    end_of_turn_ms=250)
SHORT = ["--utterances", "1", "--max-duration", "15000"]


async def acdg(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``acdg ARGV`` in a thread (it runs its own event loop); its status and stdout."""
    status = await anyio.to_thread.run_sync(main, list(argv))
    return status, capsys.readouterr().out


@asynccontextmanager
async def bridge(script: AgentScript = QUICK, **kwargs: Any) -> AsyncIterator[str]:
    """The bridge, with the stand-in agent, at ``ws://host/``."""
    api_key = kwargs.pop("agent_api_key", None)
    async with standin(script, api_key=api_key) as agent:
        app = BridgeApp(deepgram_url=agent.url, agent=AgentSettings(greeting="Hello there"),
                        **kwargs)
        async with serve(app) as host:
            yield f"ws://{host}/"


# --- the functional verdict: exits 1 when the call did not work ----------------------------


async def test_a_bot_that_never_plays_audio_fails(
    broken_bot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = await acdg(capsys, "call", f"{broken_bot}/mute?hangup_after=5", *SHORT,
                             "--reply-timeout", "1500")
    assert status == 1, out
    assert "FAILED never-heard-agent: the caller never heard the agent" in out
    assert "FAILED no-answer: no answer to utterance 1 within 1500 ms" in out
    assert "conformance: clean; the call: 2 failures" in out
    assert "note: no greeting within 1500 ms" in out
    status, out = await acdg(capsys, "call", f"{broken_bot}/mute?hangup_after=5", *SHORT,
                             "--reply-timeout", "1500", "--calls", "2")
    assert status == 1
    assert out.strip().splitlines()[-1] == (
        "2 calls: 0 OK, 0 broke the protocol, 2 did not work, 0 unreachable")


async def test_a_bridge_whose_agent_refuses_the_key_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with bridge(agent_api_key="the-right-key", deepgram_api_key="a-wrong-key",
                      reconnect=Reconnect(attempts=2, initial_backoff_s=0.05)) as url:
        status, out = await acdg(capsys, "call", url, *SHORT)
    assert status == 1, out
    assert "FAILED never-heard-agent" in out
    assert re.search(r"FAILED error-hangup: the bot hung up with an error reason: '.+'", out)


async def test_a_bridge_whose_agent_rejects_the_settings_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = replace(QUICK, fail_settings=("INVALID_SETTINGS", "no such voice"))
    async with bridge(script) as url:
        status, out = await acdg(capsys, "call", url, *SHORT)
    assert status == 1, out
    assert "FAILED error-hangup: the bot hung up with an error reason: 'agent error " in out


async def test_a_bot_that_hangs_up_with_an_error_fails_and_the_first_reason_counts(
    broken_bot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = await acdg(capsys, "call", f"{broken_bot}/double-hangup?reason=internal+error",
                             *SHORT)
    assert status == 1, out
    assert "(hangupReason 'internal error')" in out  # not the later "and again"
    assert "FAILED error-hangup: the bot hung up with an error reason: 'internal error'" in out
    clean, out = await acdg(capsys, "call", f"{broken_bot}/double-hangup", *SHORT)
    assert clean == 0 and "(hangupReason 'done')" in out, out


async def test_the_bridge_stays_clean_over_twenty_calls_with_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with bridge() as url:
        status, out = await acdg(capsys, "call", url, "--calls", "20", "--concurrency", "5",
                                 "--max-duration", "20000")
    assert status == 0, out
    lines = out.strip().splitlines()
    assert sum(line.startswith("OK  ") for line in lines) == 20
    assert re.fullmatch(r"20 calls: 20 OK, 0 broke the protocol, 0 did not work, 0 unreachable; "
                        r"reply latency p50 \d+ ms, p95 \d+ ms, max \d+ ms \(40 replies\)",
                        lines[-1]), lines[-1]


async def test_one_call_to_the_bridge_reads_as_clean_and_working(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with bridge(replace(QUICK, ms_per_word=300)) as url:  # answers longer than a pause
        status, out = await acdg(capsys, "call", url)
        asked, barged = await acdg(capsys, "call", url, "--barge-in-after", "300")
    assert status == 0, out
    assert "conformance: clean; the call: it works" in out
    assert "reply latency after utterance 1:" in out and "after utterance 2:" in out
    assert "the caller finished its script and hung up" in out
    assert "utterance 0" not in out
    assert "barge-in" not in out  # it let the agent finish each answer
    assert asked == 0 and "barge-in: stream" in barged, barged


def test_the_summary_counts_each_kind_of_outcome() -> None:
    ok = CallReport(url="u", conversation_id="a", media_format="raw/lpcm16")
    broke = replace(ok, conversation_id="b",
                    violations=[Violation("binary-frame", "JSON text frames only")])
    unreachable = CallReport(url="u", conversation_id="c", connect_error="refused")
    line = summary([ok, broke, unreachable])
    assert line == "3 calls: 1 OK, 1 broke the protocol, 0 did not work, 1 unreachable"


# --- what the simulated VAIC does, as VAIC does it ----------------------------------------


async def test_it_waits_for_the_greeting_by_default(broken_bot: str) -> None:
    script = CallScript(wait_for_greeting=True, utterances=(Utterance(speech_ms=300),),
                        max_duration_ms=8000)
    report = await run_call(f"{broken_bot}/good?greet_ms=1200", script)
    greeting = report.play_streams[0]
    assert report.ok, report.to_json(indent=2)
    assert greeting.played_until_ms is not None
    assert report.caller_speech[0].start_ms >= greeting.played_until_ms
    assert report.barge_ins == []

    script = replace(script, utterances=(Utterance(speech_ms=0, pause_ms=200),
                                         Utterance(speech_ms=300)))
    async with bridge(replace(QUICK, ms_per_word=400)) as url:  # a greeting of 0.8 s
        waited = await run_call(url, script)
        talking = await run_call(url, replace(script, wait_for_greeting=False))
    greeting = waited.play_streams[0]
    assert greeting.played_until_ms is not None
    assert waited.caller_speech[0].start_ms >= greeting.played_until_ms
    assert waited.barge_ins == [] and waited.ok
    assert [b.stream_id for b in talking.barge_ins] == [talking.play_streams[0].stream_id]


async def test_a_prompt_sent_in_one_chunk_plays_on_after_its_stop(broken_bot: str) -> None:
    """Talking is judged at playback speed: the stop on the wire does not end the prompt."""
    url = f"{broken_bot}/good?greet_ms=2000&one_chunk=1"
    waited = await run_call(url, CallScript(wait_for_greeting=True, max_duration_ms=10_000,
                                            utterances=(Utterance(speech_ms=300),)))
    prompt = waited.play_streams[0]
    assert prompt.stopped_ms is not None and prompt.first_chunk_ms is not None
    assert prompt.stopped_ms - prompt.first_chunk_ms < 100  # stopped on the wire at once
    assert waited.caller_speech[0].start_ms - prompt.first_chunk_ms >= 1900  # heard it out

    over = await run_call(url, CallScript(utterances=(Utterance(speech_ms=300, pause_ms=600),),
                                          max_duration_ms=8000))
    [barge_in] = over.barge_ins
    assert barge_in.stream_id == prompt.stream_id == over.play_streams[0].stream_id
    assert barge_in.cut_by == "userStream.speech.started"  # the stop had come long before
    assert barge_in.reaction_ms is not None and barge_in.reaction_ms < 500
    assert over.ok, over.to_json(indent=2)


async def test_barge_in_off_withholds_audio_and_stops_the_user_stream_after_recognition(
    broken_bot: str,
) -> None:
    url = f"{broken_bot}/good?answer_ms=1500&hangup_after=2"
    script = CallScript(barge_in=False, max_duration_ms=15_000, wait_for_greeting=True,
                        utterances=(Utterance(speech_ms=300, pause_ms=300),) * 2)
    off = await run_call(url, script)
    on = await run_call(url, replace(script, barge_in=True))

    assert off.ok, off.to_json(indent=2)
    sent = [e.type for e in off.timeline if e.direction == "sent"]
    # stopped after each recognition, started again after the first answer; the bot hangs
    # up after the second
    assert sent.count("userStream.stop") == 2 and sent.count("userStream.start") == 2
    received = [m["type"] for m in brokenbot.RECEIVED[off.conversation_id]]
    for stop in (i for i, kind in enumerate(received) if kind == "userStream.stop"):
        after = received[stop + 1:]
        restart = after.index("userStream.start") if "userStream.start" in after else len(after)
        assert "userStream.chunk" not in after[:restart]  # nothing while the stream is stopped
    assert brokenbot.CHUNKS_WHILE_PLAYING.get(off.conversation_id, 0) <= 2  # in flight only
    assert brokenbot.CHUNKS_WHILE_PLAYING[on.conversation_id] > 20
    assert off.barge_ins == [] and len(off.latencies) == 2


async def test_barge_in_off_against_the_bridge_stays_clean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with bridge() as url:
        status, out = await acdg(capsys, "call", url, "--barge-in", "off")
    assert status == 0, out
    assert "conformance: clean; the call: it works" in out


async def test_session_initiate_says_it_expects_audio(broken_bot: str) -> None:
    report = await run_call(f"{broken_bot}/good", CallScript(max_duration_ms=5000))
    initiate = brokenbot.RECEIVED[report.conversation_id][0]
    assert initiate["type"] == "session.initiate"
    assert initiate["expectAudioMessages"] is True


async def test_audio_crossing_session_end_is_no_violation(broken_bot: str) -> None:
    """The caller hangs up while the bot plays; its chunk and stop cross session.end."""
    script = CallScript(wait_for_greeting=True, utterances=(Utterance(speech_ms=300),),
                        hangup_after_ms=1000, max_duration_ms=8000)
    report = await run_call(f"{broken_bot}/cross-end?answer_ms=3000&hangup_after=5", script)
    assert report.ended_by == "caller-hangup"
    end = next(e.t_ms for e in report.timeline if e.type == "session.end")
    late = [e for e in report.timeline if e.type == "playStream.stop" and e.t_ms > end]
    assert late, "the bot's stop crossed session.end"
    assert report.violations == [], report.to_json(indent=2)


async def test_one_cause_is_one_violation_with_a_count(broken_bot: str) -> None:
    report = await run_call(f"{broken_bot}/chunk-outside-stream", CallScript(max_duration_ms=5000))
    [violation] = [v for v in report.violations if v.code == "chunk-outside-stream"]
    assert violation.count == 3


async def test_utterances_are_numbered_from_one(broken_bot: str) -> None:
    script = CallScript(wait_for_greeting=True, max_duration_ms=10_000,
                        utterances=(Utterance(speech_ms=300, pause_ms=800),) * 2)
    report = await run_call(f"{broken_bot}/good?hangup_after=2", script)
    assert [s.utterance for s in report.caller_speech] == [1, 2]
    assert [lat.utterance for lat in report.latencies] == [1, 2]


async def test_the_reply_timeout_is_the_users_to_set(
    broken_bot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with anyio.fail_after(10):  # well under the default 5 s per request times the retries
        status, out = await acdg(capsys, "call", f"{broken_bot}/initiate-unanswered",
                                 "--reply-timeout", "700")
    assert status == 1
    assert "VIOLATION session-unanswered" in out


def test_bad_dtmf_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["call", "ws://127.0.0.1:9/", "--dtmf", "abc"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.strip().splitlines()[-1] == (
        "acdg call: error: argument --dtmf: expected MS:DIGITS, e.g. 1500:12# (1-20 of 0-9 * #), "
        "not 'abc'")
    assert "Traceback" not in err


# --- TLS ------------------------------------------------------------------------------------


def certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA's certificate, and a server certificate for 127.0.0.1 with its key."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    server.cert_chain_pems[0].write_to_path(str(paths[1]))
    server.private_key_pem.write_to_path(str(paths[2]))
    return paths


async def test_wss_with_a_private_ca_or_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca, cert, key = certificate(tmp_path)
    async with standin(QUICK) as agent:
        app = BridgeApp(deepgram_url=agent.url, agent=AgentSettings(greeting="Hello"))
        async with serve(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as host:
            url = f"wss://{host}/"
            untrusted, out = await acdg(capsys, "call", url, *SHORT)
            assert "not trusted" in out and "--cafile" in out, out
            trusted, out = await acdg(capsys, "call", url, *SHORT, "--cafile", str(ca))
            assert "conformance: clean; the call: it works" in out, out
            insecure, out = await acdg(capsys, "call", url, *SHORT, "--insecure")
    assert (untrusted, trusted, insecure) == (2, 0, 0)
