"""Profile one target under load with py-spy: where its CPU goes, by function and by file.

    .venv/bin/python benchmarks/profile.py --target acdg-serve --calls 100
    .venv/bin/python benchmarks/profile.py --target bridge --native   # C frames too

Starts the echo agent and the target the way ``run.py`` does (pinned, warmed up), loads
it with ``--calls`` calls, samples it with ``py-spy record`` while every call streams,
and prints the self time of the top functions and of each file, as shares of all
samples. ``--raw FILE`` keeps py-spy's collapsed stacks (for flame graph tools).
Needs ``py-spy`` (the ``bench`` extra) and permission to ptrace the target.
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


def short(where: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            return where.split(marker, 1)[1]
    return where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="acdg-serve", choices=sorted(run.TARGETS))
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to sample")
    ap.add_argument("--rate", type=int, default=200, help="samples per second")
    ap.add_argument("--native", action="store_true", help="include C frames")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--raw", type=Path, help="keep the collapsed stacks here")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cores = run.Cores.split()
    if cores.load is not None:
        os.sched_setaffinity(0, cores.load)
    with tempfile.TemporaryDirectory() as tmp:
        logdir, raw = Path(tmp), args.raw or Path(tmp) / "profile.raw"
        agent, agent_url = run.start_agent("echo", logdir, cores)
        child, port = run.start_target(args.target, agent_url, logdir, cores)
        try:
            run.wait_agent(agent)
            run.wait_listening(child, port)
            url = f"ws://127.0.0.1:{port}/"
            ramp = 2.0
            cfg = loadgen.LoadConfig(url=url, calls=args.calls, duration_s=args.seconds + ramp + 4,
                                     ramp_s=ramp, warmup_s=1.0, token=run.TOKEN)
            # Sample from the window's start: every call is streaming then.
            sampler: list[subprocess.Popen[bytes]] = []
            pids = run.process_tree(child.pid)
            command = [spy, "record", "--pid", str(pids[-1]), "--duration", str(int(args.seconds)),
                       "--rate", str(args.rate), "--format", "raw", "--output", str(raw),
                       *(["--native"] if args.native else ["--nonblocking"])]
            hooks = loadgen.Hooks(on_window_start=lambda: sampler.append(subprocess.Popen(
                command, stdout=subprocess.DEVNULL)))
            loadgen.run_blocking(cfg, hooks)
            if not sampler or sampler[0].wait() != 0:
                print("py-spy did not record a profile", file=sys.stderr)
                return 1
        finally:
            child.stop()
            agent.stop()
        by_function, by_file, total = self_times(raw)
    print(f"{args.target}, {args.calls} calls, {total} samples\n\nself time by function:")
    for leaf, n in by_function.most_common(args.top):
        name, _, where = leaf.partition(" (")
        print(f"{100 * n / total:6.1f}%  {name} ({short(where)}")
    print("\nself time by file:")
    for where, n in by_file.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {short(where)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
