"""The ``acdg`` command: argument parsing only; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio

from .. import __version__
from ..asgi.mount import normalise_path
from ..errors import ConfigError
from . import values

__all__ = ["main", "serve_main"]

DESCRIPTION = """\
Bridge AudioCodes VoiceAI Connect (Bot API, streaming mode) to a Deepgram Voice Agent.

  acdg demo                  a whole call on this machine: no key, no network
  acdg demo --browser        the same bridge with a browser phone: you are the caller
  acdg serve [myapp:app]     run the bridge, or your app with its bridges in it
  acdg call ws://host/path   place a simulated VAIC call to any bot and check conformance
  acdg doctor                check the agent, the store, the address and TLS before serving
  acdg phone ws://host/path  the browser phone on its own, calling any bot
"""
VERSION = f"acdg-asgi {__version__}"
_typed = values.argument


class Parser(argparse.ArgumentParser):
    """argparse with every error on one line (``acdg serve: error: ...``), never the usage
    block first; ``--help`` is argparse's own. Subcommands are kept by name, so that an
    unknown flag is answered by its subcommand with the nearest flag it has."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, Parser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")

    def unrecognized(self, extras: list[str]) -> NoReturn:
        flags = [flag for action in self._actions for flag in action.option_strings]
        for extra in extras:
            if extra.startswith("-"):
                name = extra.split("=", 1)[0]
                near = difflib.get_close_matches(name, flags, n=1)
                self.error(f"unknown flag {name}" + (f" (did you mean {near[0]}?)" if near
                                                     else f"; {self.prog} --help lists them"))
        self.error(f"unexpected argument {extras[0]!r}; {self.prog} --help shows what it takes")


def _add_serve_arguments(serve: argparse.ArgumentParser, *, doctor: bool = False) -> None:
    serve.add_argument("app", nargs="?", metavar="APP",
                       help="your ASGI app (Starlette, FastAPI, Litestar) or BridgeApp as "
                       "module:attribute, e.g. myapp:app; without it, a bridge built from "
                       "the settings")
    serve.add_argument("--factory", action="store_true", default=None,
                       help="APP is a function that returns the app")
    serve.add_argument("--app-dir", help="look for APP's module here (default .)")
    serve.add_argument("--config", type=Path, metavar="FILE.toml",
                       help="TOML file with [server], [bridge], [playout], [limits], "
                       "[reconnect], [agent] (see --print-config)")
    if not doctor:
        serve.add_argument("--check", action="store_true",
                           help="check what would be served (the agent with one handshake, "
                           "the store, the addresses, the TLS files), print OK or the fix "
                           "for each and exit 0, or 1 if any failed, without serving: "
                           "a startup check (the same as acdg doctor)")
        serve.add_argument("--print-config", action="store_true",
                           help="print a sample acdg.toml with every key and its default, "
                           "then exit")
        serve.add_argument("--version", action="version", version=VERSION)
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 in "
                       "a container)")
    serve.add_argument("--port", type=_typed(values.port),
                       help="port to listen on (default 8000)")
    serve.add_argument("--ops-port", type=_typed(values.port), metavar="PORT",
                       help="serve /ready and /metrics on this port only, off the bot URL "
                       "(e.g. 9090, for probes and Prometheus)")
    serve.add_argument("--path", type=_typed(normalise_path),
                       help="URL path of the bridge when no APP is given (default /); "
                       "/audiocodes (or audiocodes) serves /audiocodes and /audiocodes/")
    serve.add_argument("--ssl-certfile", type=_typed(values.existing_file), metavar="FILE.pem",
                       help="serve wss:// with this certificate (chain); with --ssl-keyfile")
    serve.add_argument("--ssl-keyfile", type=_typed(values.existing_file), metavar="FILE.pem",
                       help="the certificate's key")
    serve.add_argument("--proxy-headers", action=argparse.BooleanOptionalAction,
                       help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips "
                       "(default on)")
    serve.add_argument("--forwarded-allow-ips", metavar="IPS",
                       help="proxies trusted for proxy headers, comma-separated or * "
                       "(default $FORWARDED_ALLOW_IPS or 127.0.0.1)")
    serve.add_argument("--drain", choices=("wait", "migrate"),
                       help="on SIGTERM: wait for calls, then hang up politely (default), "
                       "or migrate them to another instance (needs ACDG_REDIS_URL)")
    serve.add_argument("--drain-timeout", type=_typed(values.seconds), metavar="SECONDS",
                       help="how long calls may go on after SIGTERM before a polite hang-up "
                       "(default 20; keep it below the grace period, e.g. Kubernetes' 30 s)")
    serve.add_argument("--workers", type=_typed(values.count), metavar="N",
                       help="worker processes (default 1); each is an instance, so more "
                       "than one needs a shared store (ACDG_REDIS_URL)")
    serve.add_argument("--deepgram-url", metavar="URL",
                       help="agent endpoint (default Deepgram's public one)")
    serve.add_argument("--lead-ms", type=_typed(values.millis), metavar="MS",
                       help="how far agent audio may run ahead of real time (default 100)")
    serve.add_argument("--chunk-ms", type=_typed(values.chunk_millis), metavar="MS",
                       help="audio per playStream.chunk (default 20)")
    serve.add_argument("--max-calls", type=_typed(values.count), metavar="N",
                       help="refuse calls beyond this many (default 1000)")
    serve.add_argument("--caller-frame-ms", type=_typed(values.millis), metavar="MS",
                       help="send caller audio to the agent in frames of this many ms "
                       "(default 0: as VAIC sends it)")
    serve.add_argument("--log-format", choices=("text", "json"), help="log line format")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--records", metavar="FILE.jsonl",
                       help="append a JSON summary of every finished call to this file")
    serve.add_argument("--no-metrics", dest="metrics", action="store_false", default=None,
                       help="do not serve Prometheus metrics at <path>/metrics")


def _serve_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    return {
        "server": {"app": args.app, "factory": args.factory, "app_dir": args.app_dir,
                   "host": args.host, "port": args.port, "ops_port": args.ops_port,
                   "path": args.path,
                   "ssl_certfile": args.ssl_certfile, "ssl_keyfile": args.ssl_keyfile,
                   "proxy_headers": args.proxy_headers,
                   "forwarded_allow_ips": args.forwarded_allow_ips, "drain": args.drain,
                   "drain_timeout_s": args.drain_timeout, "workers": args.workers,
                   "log_format": args.log_format, "log_level": args.log_level,
                   "records": args.records, "metrics": args.metrics},
        "bridge": {"deepgram_url": args.deepgram_url},
        "playout": {"lead_ms": args.lead_ms, "chunk_ms": args.chunk_ms},
        "limits": {"max_calls": args.max_calls, "caller_frame_ms": args.caller_frame_ms},
    }


def _parser() -> Parser:
    parser = Parser(
        prog="acdg", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=VERSION)
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
    demo.add_argument("--port", type=_typed(values.port), default=None,
                      help="the bridge on this port and the stand-in agent on the next "
                      "(default: free ports; with --browser, 8000)")
    demo.add_argument("--browser", action="store_true",
                      help="serve the bridge with its browser phone at /phone and wait for "
                      "you to call (Deepgram's agent with DEEPGRAM_API_KEY, else the stand-in)")
    demo.add_argument("--host", default="127.0.0.1",
                      help="with --browser: interface to listen on (default 127.0.0.1)")

    serve = sub.add_parser(
        "serve", help="run the bridge, or your app with its bridges, under uvicorn",
        description="Run the bridge under uvicorn with the fast WebSocket path, a drain on "
        "SIGTERM and optional TLS. With APP (module:attribute, as uvicorn takes it) it "
        "serves your own app and finds the bridges in it. Settings come from a TOML file "
        "(see --config, --print-config), then ACDG_HOST, ACDG_PORT, ACDG_PATH, DEEPGRAM_URL, "
        "then these flags. Secrets come only from the environment: DEEPGRAM_API_KEY, "
        "ACDG_TOKEN for the bearer token that VAIC / Live Hub sends (without it, every "
        "upgrade is accepted) and ACDG_REDIS_URL for the shared store. A bad value exits "
        "with status 2 and one line naming it.",
    )
    _add_serve_arguments(serve)

    doctor = sub.add_parser(
        "doctor", help="check a deployment: agent handshake, store, address, TLS files",
        description="acdg serve --check: with what acdg serve would serve (APP, or the "
        "bridge from the settings; the same flags): one real handshake with each bridge's "
        "agent (URL, DEEPGRAM_API_KEY, the agent settings), the shared store "
        "(ACDG_REDIS_URL), the listening addresses and the TLS files. Each is reported OK "
        "or with what to fix; exit status 1 if any failed (a Kubernetes startup check), 2 "
        "for settings that acdg serve would refuse.",
    )
    _add_serve_arguments(doctor, doctor=True)

    from .call import add_arguments as add_call_arguments

    call = sub.add_parser(
        "call", help="simulate VAIC calling a bot: a smoke test and conformance check",
        description="Place simulated VAIC calls to URL, exactly as VoiceAI Connect would, "
        "and report whether each call worked (the caller heard the agent, every utterance "
        "was answered, no error hangup) and what the bot did against the protocol. Exit "
        "status 0 when every call passed both, 1 otherwise, 2 when the bot could not be "
        "reached.",
    )
    add_call_arguments(call)

    from .agent import add_arguments as add_agent_arguments

    agent = sub.add_parser(
        "agent", help="run the stand-in Deepgram agent, scripted from a file",
        description="Run the stand-in Deepgram Voice Agent (API v1) on a local port: the "
        "bridge, the examples and Deepgram's own SDK can talk to it. It answers from a "
        "script (TOML or JSON: turns, function calls, failures, drops, an API key) instead "
        "of a language model. Point the bridge at it with DEEPGRAM_URL.",
    )
    add_agent_arguments(agent)

    from .phone import add_arguments as add_phone_arguments

    phone = sub.add_parser(
        "phone", help="serve the browser phone, calling any bot",
        description="Serve the browser phone (a VAIC in a web page: microphone in, the "
        "bot's play streams out, transcripts, DTMF keys and a protocol verdict) on a "
        "local port, set to call URL.",
    )
    add_phone_arguments(phone)
    parser.commands = {"demo": demo, "serve": serve, "doctor": doctor, "call": call,
                       "agent": agent, "phone": phone}
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.commands[args.command].unrecognized(extras)
    try:
        if args.command == "demo":
            from .demo import browser_demo, demo

            if args.browser:
                return anyio.run(browser_demo, args.host,
                                 8000 if args.port is None else args.port)
            return anyio.run(demo, args.save_audio, sys.stdout, args.port or 0)
        if args.command == "agent":
            from .agent import serve_agent

            return anyio.run(serve_agent, args)
        if args.command == "phone":
            from .phone import run as run_phone

            return run_phone(args)
        if args.command in ("serve", "doctor"):
            from .settings import load_settings, sample_config

            if getattr(args, "print_config", False):
                sys.stdout.write(sample_config())
                return 0
            settings = load_settings(args.config, _serve_overrides(args))
            if args.command == "doctor" or args.check:
                from .doctor import run as run_doctor

                return run_doctor(settings)
            from .serve import run

            return run(settings)
        from .call import run as run_call_command

        return run_call_command(args)
    except ConfigError as exc:
        print(f"acdg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def serve_main(app: Any, *, factory: bool = False, argv: Sequence[str] | None = None) -> int:
    """``acdg serve`` for an app object: ``python myapp.py --port 8000`` runs
    ``serve_main(app)`` from the module's ``__main__``, with the flags of ``acdg serve``
    (``argv``, else ``sys.argv[1:]``). ``factory``: ``app`` is a function returning it."""
    name = "_acdg_serve_app"
    setattr(sys.modules["__main__"], name, app() if factory else app)
    args = sys.argv[1:] if argv is None else list(argv)
    return main(["serve", f"__main__:{name}", *args])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
