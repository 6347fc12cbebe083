"""The compiled load side: ``loadside.c`` built, started and given calls to run.

One process, pinned to the load core, is both the echo agent (what ``echo_agent.py`` does)
and the load generator (``loadgen.py``'s echo mode), in one epoll loop with no interpreter:
it drives about twice the calls one core of Python load does, which is what finding the
knee of the leanest setups needs. Python still does the arithmetic: the process reports
the raw figures and :func:`run_calls` returns them as a :class:`loadgen.LoadResult`.

``run.py --load c`` and ``knee.py`` (by default) use it; building needs a C compiler
(``$CC``, else ``cc``). The build is kept next to the source, keyed by the source's hash.

    .venv/bin/python benchmarks/loadside.py --url ws://127.0.0.1:8000/ --calls 300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import loadgen
import msgspec

HERE = Path(__file__).resolve().parent
SOURCE: Final = HERE / "loadside.c"
BUILD_DIR: Final = HERE / ".build"
RESULT_MARGIN_S: Final = 60.0  # past a run's own length, before its result counts as lost


class LoadSideUnavailable(RuntimeError):
    """The compiled load side could not be built or did not start."""


def build() -> Path:
    """The executable for the current ``loadside.c``, compiled if not yet."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    exe = BUILD_DIR / f"loadside-{digest}"
    if exe.exists():
        return exe
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise LoadSideUnavailable("no C compiler found: install gcc, set $CC, or use --load python")
    BUILD_DIR.mkdir(exist_ok=True)
    partial = exe.with_suffix(".partial")
    try:
        done = subprocess.run([cc, "-O2", "-Wall", "-o", str(partial), str(SOURCE), "-lm"],
                              capture_output=True, text=True)
    except OSError as exc:
        raise LoadSideUnavailable(f"cannot run the C compiler {cc!r}: {exc}") from None
    if done.returncode:
        raise LoadSideUnavailable(f"{cc} could not build {SOURCE.name}:\n{done.stderr.strip()}")
    partial.replace(exe)
    return exe


class _Result(msgspec.Struct):
    calls: int
    window: tuple[float, float]
    failures: list[str]
    ok_calls: int
    sent: int
    echoed: int
    duplicates: int
    garbled: int
    call_seconds: float
    latencies_ms: list[float]
    setup_ms: list[float]
    send_lag_ms: list[float]


def run_calls(proc: subprocess.Popen[str], cfg: loadgen.LoadConfig,
              hooks: loadgen.Hooks | None = None) -> loadgen.LoadResult:
    """Run ``cfg``'s calls from the started load side ``proc``: the agent it serves is the
    one the target calls. Echo calls only; the window's hooks run as it says the window
    opens and closes."""
    if cfg.barge_in:
        raise ValueError("the compiled load side runs echo calls only: barge-in needs loadgen.py")
    if not cfg.url.startswith("ws://"):
        raise ValueError(f"only ws:// URLs are supported: {cfg.url!r}")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"run {cfg.url} {cfg.calls} {cfg.duration_s} {cfg.ramp_s} {cfg.warmup_s} "
                     f"{cfg.drain_s} {cfg.token or '-'}\n")
    proc.stdin.flush()
    hooks = hooks or loadgen.Hooks()
    limit = cfg.ramp_s + cfg.duration_s + cfg.setup_timeout_s + RESULT_MARGIN_S
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], limit)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise LoadSideUnavailable(
                "the compiled load side stopped before it reported the run"
                if ready else f"the compiled load side reported nothing in {limit:.0f} s")
        if line.startswith("window start"):
            if hooks.on_window_start is not None:
                hooks.on_window_start()
        elif line.startswith("window end"):
            if hooks.on_window_end is not None:
                hooks.on_window_end()
        elif line.startswith("{"):
            break
    r = msgspec.json.decode(line, type=_Result)
    return loadgen.LoadResult(
        calls=r.calls, window=r.window, failures=r.failures, ok_calls=r.ok_calls, sent=r.sent,
        echoed=r.echoed, duplicates=r.duplicates, garbled=r.garbled,
        latencies_ms=r.latencies_ms, setup_ms=r.setup_ms, send_lag_ms=r.send_lag_ms,
        call_seconds=r.call_seconds,
    )


def command(port: int = 0) -> list[str]:
    """The load side's command line: it serves the agent on ``port`` (0: a free one)."""
    return [str(build()), str(port)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    loadgen.call_arguments(ap)
    ap.add_argument("--agent-port", type=int, default=0,
                    help="where the echo agent listens: the target's agent URL names it")
    args = ap.parse_args(argv)
    cfg = loadgen.LoadConfig(url=args.url, calls=args.calls, duration_s=args.duration,
                             ramp_s=args.ramp, warmup_s=args.warmup, token=args.token)
    with subprocess.Popen(command(args.agent_port), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        print(f"agent: {proc.stdout.readline().strip()}", file=sys.stderr)
        result = run_calls(proc, cfg)
        proc.stdin.close()
    json.dump(result.summary(), sys.stdout, indent=2)
    print()
    return 0 if result.ok_calls else 1


if __name__ == "__main__":
    sys.exit(main())
