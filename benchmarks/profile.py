"""Profile one target under load: where its CPU goes (py-spy), or how many Python lines
it runs per round trip (``--lines``).

    .venv/bin/python benchmarks/profile.py --target acdg-serve --calls 100
    .venv/bin/python benchmarks/profile.py --target bridge --native    # C frames too
    .venv/bin/python benchmarks/profile.py --target acdg-serve --lines # 10 calls
    .venv/bin/python benchmarks/profile.py --calls 450 --load c        # the compiled load side

Starts the echo agent and the target the way ``run.py`` does (pinned), loads it with
``--calls`` calls and measures while every call streams:

- by default, ``py-spy record`` samples the target and the report gives the self time
  of the top functions and files as shares of all samples. ``--raw FILE`` keeps the
  collapsed stacks for flame graph tools. Needs ``py-spy`` (the ``bench`` extra) and
  permission to ptrace the target. On Python 3.11 py-spy's line and caller attribution
  inside inlined calls is unreliable; trust self time per function, not the stacks.
- with ``--lines``, the target runs under ``linecount.py`` and the report gives the
  Python lines each function runs per round trip (one caller frame in, its echo out).
  That count does not move with the load on a shared machine, so it shows what a
  change to a hot path bought before any timing run. Tracing slows the target about
  tenfold: keep ``--calls`` small (default 10).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import loadgen
import run

HERE = Path(__file__).resolve().parent


def self_times(raw: Path) -> tuple[Counter[str], Counter[str], int]:
    """Self samples by ``function (file)`` and by file, from collapsed stacks."""
    by_function: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        leaf = stack.rsplit(";", 1)[-1]
        name, _, where = leaf.partition(" (")
        where = where.rstrip(")")
        path = where.rsplit(":", 1)[0] if ":" in where else where
        by_function[f"{name} ({path})"] += n
        by_file[path or name] += n
    return by_function, by_file, total


short = run.short_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="acdg-serve", choices=sorted(run.TARGETS))
    ap.add_argument("--calls", type=int, help="concurrent calls (100; 10 with --lines)")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to measure")
    ap.add_argument("--lines", action="store_true", help="count Python lines per round trip")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--native", action="store_true", help="py-spy: include C frames")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--raw", type=Path, help="py-spy: keep the collapsed stacks here")
    ap.add_argument("--load", choices=run.LOADS, default="python", help=run.LOAD_HELP)
    args = ap.parse_args()
    run.check_load(ap, args.load)
    calls = args.calls or (10 if args.lines else 100)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cores = run.Cores.split()
    if cores.load is not None:
        os.sched_setaffinity(0, cores.load)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        raw = args.raw or logdir / "profile.raw"
        load = "python" if args.lines else args.load  # lines are counted under Python load
        agent, agent_url = run.start_agent(run.echo_agent_mode(load), logdir, cores)
        try:
            run.wait_agent(agent)
            child, port = run.ready_target(args.target, agent_url, logdir, cores)
        except run.TargetFailed:
            agent.stop()
            raise
        url = run.target_url(args.target, port)
        sampler: list[subprocess.Popen[bytes]] = []

        def on_start() -> None:
            pid = run.process_tree(child.pid)[-1]  # granian's worker, else the target
            sampler.append(subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                 "--rate", str(args.rate), "--format", "raw", "--output", str(raw),
                 *(["--native"] if args.native else ["--nonblocking"])],
                stdout=subprocess.DEVNULL))

        try:
            if args.lines:
                counted = run.count_lines(child, url, calls=calls, window_s=args.seconds,
                                          ramp_s=2.0, warmup_s=1.0)
                if counted is None:
                    print(f"{args.target} wrote no line counts", file=sys.stderr)
                    return 1
            else:
                ramp, warmup = 2.0, 1.0
                cfg = loadgen.LoadConfig(
                    url=url, calls=calls, ramp_s=ramp, warmup_s=warmup,
                    duration_s=ramp + warmup + args.seconds + 1, token=run.TOKEN)
                hooks = loadgen.Hooks(on_window_start=on_start)
                result = run.run_echo_calls(agent, cfg, hooks)
                summary = result.summary()
                # Whether the target kept up while it was sampled: a profile of one that
                # fell behind is another profile.
                print(f"while sampled: p99 {summary['latency_ms']['p99']} ms, "
                      f"{summary['lost']} of {summary['sent']} frames lost", file=sys.stderr)
                if not sampler or sampler[0].wait() != 0:
                    print("py-spy did not record a profile", file=sys.stderr)
                    return 1
        finally:
            run.stop_all(child, agent)
        if args.lines:
            report_lines(counted, args.target, calls, args.top)
        else:
            report_samples(raw, args.target, calls, args.top)
    return 0


def report_lines(counted: run.LineCount, target: str, calls: int, top: int) -> None:
    print(f"{target}, {calls} calls, ~{counted.round_trips:.0f} round trips: "
          f"{counted.per_round_trip:.1f} Python lines per round trip"
          + ("" if counted.steady else f" (approximate: the traced target fell behind, "
                                       f"p99 {counted.p99_ms} ms; try again on a quieter "
                                       "machine or with fewer --calls)") + "\n")
    for n, function, filename in counted.top[:top]:
        print(f"{n:7.1f}  {function} ({short(filename)})")


def report_samples(raw: Path, target: str, calls: int, top: int) -> None:
    by_function, by_file, total = self_times(raw)
    print(f"{target}, {calls} calls, {total} samples\n\nself time by function:")
    for leaf, n in by_function.most_common(top):
        name, _, where = leaf.partition(" (")
        print(f"{100 * n / total:6.1f}%  {name} ({short(where)}")
    print("\nself time by file:")
    for where, n in by_file.most_common(top):
        print(f"{100 * n / total:6.1f}%  {short(where)}")


if __name__ == "__main__":
    raise SystemExit(main())
