"""The ``acdg`` command: argument parsing only; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from ..errors import ConfigError

DESCRIPTION = """\
Bridge AudioCodes VoiceAI Connect (Bot API, streaming mode) to a Deepgram Voice Agent.

  acdg demo                  a whole call on this machine: no key, no network
  acdg serve                 run the bridge (configure with a TOML file and env vars)
  acdg call ws://host/path   place a simulated VAIC call to any bot and check conformance
  acdg doctor                check the agent, the store, the address and TLS before serving
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acdg", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="run a simulated call through the bridge and a stand-in agent",
        description="Start the stand-in Deepgram agent, the bridge and a simulated VAIC on "
        "loopback, place one call and show it as it happens: greeting, transcripts, play "
        "streams, a function call, DTMF, a barge-in and the hang-up, then the measured "
        "latencies. Needs no API key and no network; takes about 15 seconds.",
    )
    demo.add_argument("--save-audio", type=Path, metavar="FILE.wav",
                      help="write both sides of the call to a stereo WAV file")

    serve = sub.add_parser(
        "serve", help="run the bridge under uvicorn",
        description="Run the bridge. Settings come from a TOML file (see --config), then "
        "ACDG_HOST, ACDG_PORT, DEEPGRAM_URL, then these flags. Secrets come only from the "
        "environment: DEEPGRAM_API_KEY, and ACDG_TOKEN for the bearer token that VAIC / "
        "Live Hub sends (without it, every upgrade is accepted).",
    )
    serve.add_argument("--config", type=Path, metavar="FILE.toml",
                       help="TOML file with [server], [bridge], [playout], [limits], [agent]")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--path", help="URL path of the bridge (default /)")
    serve.add_argument("--deepgram-url", help="agent endpoint (default Deepgram's public one)")
    serve.add_argument("--lead-ms", type=int,
                       help="how far agent audio may run ahead of real time (default 100)")
    serve.add_argument("--chunk-ms", type=int, help="audio per playStream.chunk (default 20)")
    serve.add_argument("--max-calls", type=int, help="refuse calls beyond this many")
    serve.add_argument("--caller-frame-ms", type=int,
                       help="send caller audio to the agent in frames of this many ms "
                       "(default 0: as VAIC sends it)")
    serve.add_argument("--log-format", choices=("text", "json"), help="log line format")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--records", metavar="FILE.jsonl",
                       help="append a JSON summary of every finished call to this file")
    serve.add_argument("--no-metrics", dest="metrics", action="store_false", default=None,
                       help="do not serve Prometheus metrics at <path>/metrics")

    doctor = sub.add_parser(
        "doctor", help="check a deployment: agent handshake, store, address, TLS files",
        description="With the settings acdg serve would use: one real handshake with the "
        "agent (URL, DEEPGRAM_API_KEY, the [agent] settings), the shared store "
        "(ACDG_REDIS_URL), the listening address and the TLS files. Each is reported OK or "
        "with what to fix; exit status 1 if any failed (a Kubernetes startup check).",
    )
    doctor.add_argument("--config", type=Path, metavar="FILE.toml", help="as for acdg serve")
    doctor.add_argument("--host", help="interface acdg serve will listen on")
    doctor.add_argument("--port", type=int, help="port acdg serve will listen on")
    doctor.add_argument("--deepgram-url", help="agent endpoint")
    doctor.add_argument("--ssl-certfile", metavar="FILE.pem", help="certificate to check")
    doctor.add_argument("--ssl-keyfile", metavar="FILE.pem", help="its private key")

    from .call import add_arguments as add_call_arguments

    call = sub.add_parser(
        "call", help="simulate VAIC calling a bot and report protocol violations",
        description="Place simulated VAIC calls to URL, exactly as VoiceAI Connect would, "
        "and report what the bot did wrong. Exit status 1 when the bot broke the protocol, "
        "2 when it could not be reached.",
    )
    add_call_arguments(call)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import demo

            return anyio.run(demo, args.save_audio)
        if args.command == "serve":
            from .serve import run
            from .settings import load_settings

            overrides = {
                "server": {"host": args.host, "port": args.port, "path": args.path,
                           "log_format": args.log_format, "log_level": args.log_level,
                           "records": args.records, "metrics": args.metrics},
                "bridge": {"deepgram_url": args.deepgram_url},
                "playout": {"lead_ms": args.lead_ms, "chunk_ms": args.chunk_ms},
                "limits": {"max_calls": args.max_calls,
                           "caller_frame_ms": args.caller_frame_ms},
            }
            return run(load_settings(args.config, overrides))
        if args.command == "doctor":
            from .doctor import run as run_doctor
            from .settings import load_settings

            overrides = {"server": {"host": args.host, "port": args.port},
                         "bridge": {"deepgram_url": args.deepgram_url}}
            return run_doctor(load_settings(args.config, overrides), args.ssl_certfile,
                              args.ssl_keyfile)
        from .call import run as run_call_command

        return run_call_command(args)
    except ConfigError as exc:
        print(f"acdg: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
