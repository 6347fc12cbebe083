"""Cache lines a round trip reads from memory: the bridge's against the floor relay's,
counted by a simulated cache (Valgrind's callgrind) rather than timed.

    .venv/bin/python benchmarks/footprint.py                 # 100 calls
    .venv/bin/python benchmarks/footprint.py --base 4d98973  # and the sources of a commit

With many calls, a call's objects have left the caches by its next frame: the kernel's
work and the other calls' frames in between evict them. What a round trip then costs
beyond its instructions is one trip to memory for each cache line of its own it
touches (an object's header, the slots it reads, a number it replaces), and on this
project's machines that, not the instruction count, is most of what separates the
bridge from the floor relay under load (``benchmarks/README.md``, "Where the rest of
the gap is"). A timing run sees it through the noise of the machine's neighbours; a
simulated cache counts it exactly, so a change of one or two lines shows.

It runs :mod:`hotpath`'s rounds (the same calls, the same frames fed to the same
protocols, writes counted instead of sent) under ``callgrind`` with a 1 MiB
last-level cache, reading a fresh 64 KiB of a large buffer between round trips, as
the kernel's work does: what every round trip reads (the interpreter, the code) stays
in the cache, what one call left there does not. The setup runs uninstrumented; only
the rounds are counted. Reported per round trip: instructions, and the cache lines
read (``DLmr``) and written (``DLmw``) from memory, less the reads of the buffer.

Needs ``valgrind`` (``apt-get install valgrind``); about ten seconds per count.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "targets")]

LL_BYTES = 1 << 20
EVICT_KB = 64
EVENTS = ("Ir", "DLmr", "DLmw")


def child(which: str, calls: int, periods: int, ready: Path, go: Path) -> None:
    """In the process callgrind runs: set the calls up, wait to be instrumented, then
    run ``periods`` frame periods of ``which`` inside ``functools.reduce``, the one
    function whose events are collected."""
    import asyncio

    import hotpath
    import loadgen

    async def setup() -> hotpath.Rounds:
        rounds = hotpath.Rounds(await hotpath.start_bridge(calls),
                                [hotpath.floor_pair() for _ in range(calls)], EVICT_KB)
        rounds.bridge_round(2)  # both warm, as in a call that has streamed a while
        rounds.floor_round(2)
        return rounds

    with asyncio.Runner(loop_factory=loadgen.new_loop_factory()) as runner:
        rounds = runner.run(setup())  # the loop stays open: the calls stay up
        one = rounds.bridge_round if which == "bridge" else rounds.floor_round
        ready.write_text(str(os.getpid()))
        while not go.exists():
            time.sleep(0.1)
        functools.reduce(lambda _a, _b: one(periods), [0, 0])  # one call of the lambda
        print("counted", flush=True)
        os._exit(0)  # the server and the sockets go with the process


def count(which: str, calls: int, periods: int, src: Path | None, tmp: Path) -> dict[str, float]:
    """Run one count under callgrind: the events per round trip."""
    tag = f"{which}-{src.name if src else 'here'}"
    ready, go, out = tmp / f"{tag}.ready", tmp / f"{tag}.go", tmp / f"{tag}.callgrind"
    env = dict(os.environ, PYTHONHASHSEED="0")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--cache-sim=yes", "--I1=32768,8,64",
         "--D1=32768,8,64", f"--LL={LL_BYTES},16,64", "--instr-atstart=no",
         "--collect-atstart=no", "--toggle-collect=functools_reduce",
         f"--callgrind-out-file={out}", sys.executable, __file__, "--child", which,
         "--calls", str(calls), "--periods", str(periods), "--ready", str(ready),
         "--go", str(go)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not ready.exists():
        if proc.poll() is not None:
            sys.exit(f"footprint: the {which} did not start:\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    subprocess.run(["callgrind_control", "--instr=on", ready.read_text()], check=True,
                   capture_output=True)
    go.touch()
    stdout, stderr = proc.communicate()
    if proc.returncode or "counted" not in stdout:
        sys.exit(f"footprint: the {which} failed:\n{stderr[-2000:]}")
    return per_trip(out, periods * calls)


def per_trip(out: Path, trips: int) -> dict[str, float]:
    events: list[str] = []
    for line in out.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            totals = dict(zip(events, map(int, line.split()[1:]), strict=True))
            row = {name: totals.get(name, 0) / trips for name in EVENTS}
            row["DLmr"] -= EVICT_KB * 1024 / 64  # the buffer's own reads, one per line
            return row
    raise SystemExit(f"footprint: no totals in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100, help="calls at once")
    ap.add_argument("--periods", type=int, default=10, help="frame periods counted")
    ap.add_argument("--base", metavar="REF", help="also count the sources of commit REF")
    ap.add_argument("--child", choices=("bridge", "floor"), help=argparse.SUPPRESS)
    ap.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--go", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.calls, args.periods, args.ready, args.go)
        return
    import run

    with tempfile.TemporaryDirectory(prefix="footprint-") as name:
        tmp = Path(name)
        rows = [("floor", count("floor", args.calls, args.periods, None, tmp))]
        if args.base:
            short = run.export_base(args.base, tmp / "base")
            rows.append((f"bridge @{short}",
                         count("bridge", args.calls, args.periods, tmp / "base" / "src", tmp)))
        rows.append(("bridge", count("bridge", args.calls, args.periods, None, tmp)))
    print(f"{args.calls} calls, {args.periods * args.calls} round trips counted; "
          f"per round trip, with a {LL_BYTES >> 20} MiB last-level cache:")
    print("| code | instructions | lines read from memory | written | in all |")
    print("|---|---:|---:|---:|---:|")
    for label, row in rows:
        print(f"| {label} | {row['Ir']:,.0f} | {row['DLmr']:.1f} | {row['DLmw']:.1f} "
              f"| {row['DLmr'] + row['DLmw']:.1f} |")


if __name__ == "__main__":
    main()
