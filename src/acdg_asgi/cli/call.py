"""``acdg call URL``: VAIC's side of a call, against any bot, with a conformance report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec

from ..protocols.audiocodes import Activity
from ..testing.report import CallEvent, CallReport
from ..testing.script import DEFAULT_FORMATS, CallScript, Utterance, read_wav
from ..testing.vaic import run_calls, validate_connection


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
                        help="press DIGITS at MS after caller audio starts (repeatable)")
    parser.add_argument("--barge-in-after", type=int, metavar="MS",
                        help="talk over each agent turn this long after it starts")
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
    parser.add_argument("--max-duration", type=int, default=30_000, metavar="MS",
                        help="give up on a call after MS (default 30000)")
    parser.add_argument("--save-audio", type=Path, metavar="FILE.wav",
                        help="save the first call's audio, caller left and agent right")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every message as it happens")


def _script(args: argparse.Namespace) -> CallScript:
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    audio: bytes | None = None
    if args.wav is not None:
        fmt_token, audio = read_wav(args.wav)
        formats = (fmt_token,)
    dtmf = []
    for item in args.dtmf:
        at, _, digits = item.partition(":")
        dtmf.append((int(at), digits))
    activities = []
    for item in args.activity:
        at, _, text = item.partition(":")
        try:
            activities.append((int(at), msgspec.json.decode(text, type=Activity)))
        except (ValueError, msgspec.DecodeError) as exc:
            raise SystemExit(
                f"--activity {item!r}: MS:JSON with a Bot API activity ({exc})") from None
    start_params = {}
    for item in args.start_param:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--start-param {item!r}: NAME=VALUE")
        start_params[name] = value
    participants = tuple(p.strip() for p in (args.participants or "").split(",") if p.strip())
    return CallScript(
        formats=formats,
        caller_audio=audio,
        utterances=tuple(Utterance() for _ in range(max(args.utterances, 0))),
        dtmf=tuple(dtmf),
        barge_in_after_ms=args.barge_in_after,
        drop_and_resume_at_ms=args.drop_and_resume_at,
        hangup_after_ms=args.hangup_after,
        validate_first=args.validate,
        max_duration_ms=args.max_duration,
        start=not args.no_start,
        start_parameters=start_params,
        participants=participants,
        transfer_status=args.transfer_status,
        activities=tuple(activities),
        wait_for_hangup=args.transfer_status is not None,
    )


def _print_report(report: CallReport, out: Any) -> None:
    status = "OK" if report.ok else "PROBLEMS"
    out.write(f"\n{status}  conversation {report.conversation_id}\n")
    if report.connect_error:
        out.write(f"  could not connect: {report.connect_error}\n")
    if report.refused_reason:
        out.write(f"  refused: {report.refused_reason}\n")
    if report.media_format:
        out.write(f"  accepted {report.media_format}; {len(report.play_streams)} play streams; "
                  f"ended by {report.ended_by}" +
                  (f" (hangupReason {report.hangup_reason!r})" if report.hangup_reason else "")
                  + "\n")
    for lat in report.latencies:
        out.write(f"  reply latency after utterance {lat.utterance}: {lat.latency_ms:.0f} ms\n")
    for b in report.barge_ins:
        stop = f"{b.stopped_ms - b.talk_ms:.0f} ms" if b.stopped_ms is not None else "never"
        out.write(f"  barge-in: stream {b.stream_id} stopped after {stop}, "
                  f"{b.agent_audio_after_ms:.0f} ms of audio after the caller spoke\n")
    for x in report.transfers:
        status = f"{x.status} ({x.reason_code})" if x.reason_code else (x.status or "no status")
        after = x.back_to_caller_ms
        spoke = (f"; the bot spoke again {after:.0f} ms later" if after is not None else
                 "; the bot did not speak again" if x.status == "failed" else "")
        out.write(f"  transfer to {x.target} at {x.t_ms:.0f} ms: {status}{spoke}\n")
    for note in report.notes:
        out.write(f"  note: {note.message}\n")
    for v in report.violations:
        out.write(f"  VIOLATION {v.code}: {v.message}\n")
        if v.frame:
            out.write(f"    offending message: {v.frame}\n")


async def _run(args: argparse.Namespace) -> list[CallReport]:
    token = args.token or os.environ.get("ACDG_TOKEN") or None
    if args.validate_only:
        return [await validate_connection(args.url, token=token)]
    script = _script(args)
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
                              record_audio=args.save_audio is not None)
    if args.calls > 1:
        sys.stderr.write("\n")
    return reports


def run(args: argparse.Namespace) -> int:
    reports = anyio.run(_run, args)
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(reports)).decode() + "\n")
    else:
        for report in reports:
            _print_report(report, sys.stdout)
    if args.save_audio is not None and reports and reports[0].caller_audio is not None:
        from .demo import save_audio

        save_audio(reports[0], args.save_audio)
    if any(r.connect_error for r in reports):
        return 2
    return 0 if all(r.ok for r in reports) else 1
