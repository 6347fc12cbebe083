"""``acdg call URL``: VAIC's side of a call, against any bot, as a smoke test.

Each call gets two verdicts: conformance (did the bot keep to the Bot API?) and whether
the call worked for its caller (did the agent speak, answer, hang up without an error?).
The exit status is 0 only when every call passed both.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec

from ..protocols.audiocodes import Activity
from ..testing.conformance import DEFAULT_REPLY_TIMEOUT_MS
from ..testing.report import CallEvent, CallReport
from ..testing.script import DEFAULT_FORMATS, CallScript, Utterance, read_wav
from ..testing.vaic import run_calls, validate_connection

_DTMF: Final = re.compile(r"(\d+):([0-9*#]{1,20})")

# How each call ended, in words (CallReport.ended_by).
ENDINGS: Final = {
    "script-end": "the caller finished its script and hung up",
    "bot-hangup": "the bot hung up",
    "transfer": "the bot transferred the call",
    "caller-hangup": "the caller hung up (--hangup-after)",
    "silence-timeout": "the caller hung up after dead air",
    "max-duration": "the caller gave up at --max-duration",
    "socket-closed": "the bot closed the socket",
    "resume-refused": "the bot refused the resume",
    "no-answer": "the bot never answered session.initiate",
    "refused": "the bot refused the call",
    "connect-failed": "the bot could not be reached",
}


def dtmf_argument(value: str) -> tuple[int, str]:
    """``--dtmf MS:DIGITS``, e.g. ``1500:12#``."""
    match = _DTMF.fullmatch(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected MS:DIGITS, e.g. 1500:12# (1-20 of 0-9 * #), not {value!r}")
    return int(match[1]), match[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the bot's WebSocket URL, e.g. ws://localhost:8000/")
    parser.add_argument("--token", help="bearer token (default: $ACDG_TOKEN)")
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                        help="supportedMediaFormats to offer, in order (comma-separated)")
    parser.add_argument("--wav", type=Path, metavar="FILE.wav",
                        help="caller audio from a WAV file instead of generated speech")
    parser.add_argument("--utterances", type=int, default=2,
                        help="generated caller utterances (default 2)")
    parser.add_argument("--dtmf", action="append", default=[], metavar="MS:DIGITS",
                        type=dtmf_argument,
                        help="press DIGITS at MS after caller audio starts (repeatable)")
    parser.add_argument("--barge-in-after", type=int, metavar="MS",
                        help="talk over each agent turn this long after it starts")
    parser.add_argument("--barge-in", choices=("on", "off"), default="on",
                        help="VAIC's barge-in setting: off withholds caller audio while the "
                        "bot's audio plays and stops the user stream after each recognition "
                        "(default on)")
    parser.add_argument("--talk-over", action="store_true",
                        help="talk on the script's schedule, over the greeting and the "
                        "answers, instead of waiting for the agent to finish")
    parser.add_argument("--drop-and-resume-at", type=int, metavar="MS",
                        help="drop the socket at MS, reconnect and send session.resume")
    parser.add_argument("--hangup-after", type=int, metavar="MS",
                        help="the caller hangs up at MS")
    parser.add_argument("--no-start", action="store_true",
                        help="send no start activity after session.accepted")
    parser.add_argument("--start-param", action="append", default=[], metavar="NAME=VALUE",
                        help="add a parameter to the start activity, as VAIC does for SIP "
                             "headers mapped with sipHeadersToBot (repeatable)")
    parser.add_argument("--participants", metavar="A,B",
                        help="an agent-assist call: these participants, one user stream "
                             "each (the first has the caller's number)")
    parser.add_argument("--transfer-status", metavar="STATUS",
                        help="answer the bot's transfer with transferStatus: answered, "
                             "failed or failed:REASON (busy, no-answer, declined, error)")
    parser.add_argument("--activity", action="append", default=[], metavar="MS:JSON",
                        help="send this activity at MS, e.g. "
                             "'3000:{\"type\":\"event\",\"name\":\"noUserInput\",\"value\":1}'")
    parser.add_argument("--validate", action="store_true",
                        help="first send connection.validate on its own socket")
    parser.add_argument("--validate-only", action="store_true",
                        help="only check connection.validate, place no call")
    parser.add_argument("--calls", type=int, default=1, help="number of calls (default 1)")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="calls at once when --calls > 1 (default 10)")
    parser.add_argument("--reply-timeout", type=int, default=DEFAULT_REPLY_TIMEOUT_MS,
                        metavar="MS", help="how long the bot may take to answer: "
                        "session.initiate, userStream.start/stop, the greeting and each "
                        f"utterance (default {DEFAULT_REPLY_TIMEOUT_MS})")
    parser.add_argument("--max-duration", type=int, default=30_000, metavar="MS",
                        help="give up on a call after MS (default 30000)")
    parser.add_argument("--cafile", type=Path, metavar="FILE.pem",
                        help="trust the CA (or self-signed certificate) in FILE for wss://")
    parser.add_argument("--insecure", action="store_true",
                        help="for wss://, do not check the bot's certificate")
    parser.add_argument("--save-audio", type=Path, metavar="FILE.wav",
                        help="save the first call's audio, caller left and agent right")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every message as it happens")


def _script(args: argparse.Namespace) -> CallScript:
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    audio: bytes | None = None
    if args.wav is not None:
        fmt, audio = read_wav(args.wav.read_bytes())
        formats = (fmt.token,)
    activities = []
    for item in args.activity:
        at, _, text = item.partition(":")
        try:
            activities.append((int(at), msgspec.json.decode(text, type=Activity)))
        except (ValueError, msgspec.DecodeError) as exc:
            raise ValueError(f"--activity {item!r}: MS:JSON with a Bot API activity ({exc})"
                             ) from None
    start_params = {}
    for item in args.start_param:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--start-param {item!r}: NAME=VALUE")
        start_params[name] = value
    participants = tuple(p.strip() for p in (args.participants or "").split(",") if p.strip())
    return CallScript(
        formats=formats,
        caller_audio=audio,
        utterances=tuple(Utterance() for _ in range(max(args.utterances, 0))),
        dtmf=tuple(args.dtmf),
        barge_in_after_ms=args.barge_in_after,
        barge_in=args.barge_in == "on",
        wait_for_greeting=not args.talk_over,
        wait_for_answers=not args.talk_over and args.barge_in_after is None,
        drop_and_resume_at_ms=args.drop_and_resume_at,
        hangup_after_ms=args.hangup_after,
        validate_first=args.validate,
        max_duration_ms=args.max_duration,
        reply_timeout_ms=args.reply_timeout,
        start=not args.no_start,
        start_parameters=start_params,
        participants=participants,
        transfer_status=args.transfer_status,
        activities=tuple(activities),
        wait_for_hangup=args.transfer_status is not None,
    )


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.cafile is None and not args.insecure:
        return None
    if not args.url.startswith("wss://"):
        raise ValueError("--cafile and --insecure are for wss:// URLs")
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--cafile {args.cafile}: {exc}") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _status(report: CallReport) -> str:
    return "OK" if report.ok else "PROBLEMS"


def _print_report(report: CallReport, out: Any) -> None:
    out.write(f"\n{_status(report)}  conversation {report.conversation_id}\n")
    if report.connect_error:
        out.write(f"  could not connect: {report.connect_error}\n")
    if report.refused_reason:
        out.write(f"  refused: {report.refused_reason}\n")
    if report.media_format:
        ending = ENDINGS.get(report.ended_by, report.ended_by)
        reason = f" (hangupReason {report.hangup_reason!r})" if report.hangup_reason else ""
        heard = sum(s.audio_ms for s in report.play_streams) / 1000
        out.write(f"  accepted {report.media_format}; {len(report.play_streams)} play streams, "
                  f"{heard:.1f} s of agent audio; {ending}{reason}\n")
    for lat in report.latencies:
        out.write(f"  reply latency after utterance {lat.utterance}: {lat.latency_ms:.0f} ms\n")
    for b in report.barge_ins:
        if b.stopped_ms is None:
            out.write(f"  barge-in: stream {b.stream_id} was not cut off; it played on\n")
        else:
            out.write(f"  barge-in: stream {b.stream_id} cut by {b.cut_by} "
                      f"{b.stopped_ms - b.talk_ms:.0f} ms after the caller spoke, "
                      f"{b.agent_audio_after_ms:.0f} ms of audio after the caller spoke\n")
    for x in report.transfers:
        status = f"{x.status} ({x.reason_code})" if x.reason_code else (x.status or "no status")
        after = x.back_to_caller_ms
        spoke = (f"; the bot spoke again {after:.0f} ms later" if after is not None else
                 "; the bot did not speak again" if x.status == "failed" else "")
        out.write(f"  transfer to {x.target} at {x.t_ms:.0f} ms: {status}{spoke}\n")
    for note in report.notes:
        out.write(f"  note: {note.message}\n")
    for f in report.failures:
        out.write(f"  FAILED {f.code}: {f.message}\n")
    for v in report.violations:
        times = f" ({v.count} times)" if v.count > 1 else ""
        out.write(f"  VIOLATION {v.code}: {v.message}{times}\n")
        if v.frame:
            out.write(f"    offending message: {v.frame}\n")
    if report.media_format:
        protocol = _count(len(report.violations), "violation") or "clean"
        works = _count(len(report.failures), "failure") or "it works"
        out.write(f"  conformance: {protocol}; the call: {works}\n")


def _count(n: int, what: str) -> str:
    return "" if n == 0 else f"1 {what}" if n == 1 else f"{n} {what}s"


def _percentiles(values: Sequence[float]) -> str:
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered) + 0.5) - 1))]

    return f"p50 {rank(0.5):.0f} ms, p95 {rank(0.95):.0f} ms, max {ordered[-1]:.0f} ms"


def summary(reports: Sequence[CallReport]) -> str:
    """One line for many calls: how many passed, and the latencies they measured."""
    unreachable = sum(1 for r in reports if r.connect_error)
    broke = sum(1 for r in reports if not r.conformant and not r.connect_error)
    failed = sum(1 for r in reports if r.failures)
    line = (f"{len(reports)} calls: {sum(r.ok for r in reports)} OK, {broke} broke the "
            f"protocol, {failed} did not work, {unreachable} unreachable")
    replies = [lat.latency_ms for r in reports for lat in r.latencies]
    if replies:
        line += f"; reply latency {_percentiles(replies)} ({len(replies)} replies)"
    cuts = [b.stopped_ms - b.talk_ms for r in reports for b in r.barge_ins
            if b.stopped_ms is not None]
    if cuts:
        line += f"; barge-in cut {_percentiles(cuts)} ({len(cuts)})"
    return line


async def _run(args: argparse.Namespace, script: CallScript,
               tls: ssl.SSLContext | None) -> list[CallReport]:
    token = args.token or os.environ.get("ACDG_TOKEN") or None
    if args.validate_only:
        return [await validate_connection(args.url, token=token, ssl=tls)]
    verbose, done = args.verbose, [0]

    def progress(cid: str, event: CallEvent) -> None:
        if verbose and not event.type.endswith(".chunk"):
            sys.stderr.write(f"{cid[:8]} {event.t_ms:8.0f} ms {event.direction:>8} "
                             f"{event.type} {event.summary}\n")
        if event.type == "call.ended" and args.calls > 1:
            done[0] += 1
            sys.stderr.write(f"\r{done[0]}/{args.calls} calls done")

    reports = await run_calls(args.url, [script] * args.calls, concurrency=args.concurrency,
                              token=token, on_event=progress,
                              record_audio=args.save_audio is not None, ssl=tls)
    if args.calls > 1:
        sys.stderr.write("\n")
    return reports


def run(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    try:
        tls = _tls(args)
        script = _script(args)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"acdg call: {exc}\n")
        return 2
    reports = anyio.run(_run, args, script, tls)
    if args.json:
        out.write(msgspec.json.format(msgspec.json.encode(reports)).decode() + "\n")
    elif len(reports) == 1:
        _print_report(reports[0], out)
    else:
        for report in reports:
            if report.ok:
                lat = ", ".join(f"{x.latency_ms:.0f}" for x in report.latencies) or "-"
                out.write(f"OK  {report.conversation_id}  reply latency {lat} ms\n")
            else:
                _print_report(report, out)
    if len(reports) > 1 and not args.json:
        out.write("\n" + summary(reports) + "\n")
    if args.save_audio is not None and reports and reports[0].caller_audio is not None:
        from .demo import save_audio

        save_audio(reports[0], args.save_audio)
    if any(r.connect_error for r in reports):
        return 2
    return 0 if all(r.ok for r in reports) else 1
