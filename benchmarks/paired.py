"""Side by side: each target and a reference relay on one core, under the same calls at once.

On a shared machine the suite's figures move with the neighbours: the floor relay alone
has cost 1.6 to 2.2 ms per call-second on the same machine in one evening, and a ratio
taken between two runs a minute apart carries both runs' luck. Here each pairing starts
the target and the reference (``--against``, the floor relay by default) pinned to the
same core, drives both with the same number of calls over the same window (two load
generators in this process, on the other cores, against one echo agent), and divides
the target's CPU per call-second by the reference's: whatever slows the machine in that
window slows both.

What it measures is not quite the suite's ratio. Each process shares the core's caches
with the other, and when both are ready at once one waits: figures per call-second run
higher than alone. It answers a narrower question more steadily: is this target's cost
above or below a given multiple of the reference's. Pairings whose core was saturated
are reported and left out of the medians (a saturated core batches frames, which
flatters whoever is slower).

    .venv/bin/python benchmarks/paired.py                     # the bridge's setups vs floor
    .venv/bin/python benchmarks/paired.py --targets predecessor --against bridge
    .venv/bin/python benchmarks/paired.py --targets mounted-acdg --calls 50,100,200 --repeats 8
    .venv/bin/python benchmarks/paired.py --targets acdg-serve --base main   # a change's worth

With ``--base REF`` each target is paired with itself on the package's sources as of
commit ``REF``: the ratio is what the change since then costs (below 1: what it saved).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import loadgen
import run

HERE: Final = Path(__file__).resolve().parent
DEFAULT_TARGETS: Final = "acdg-serve,mounted-acdg,mounted-direct,bridge"
SATURATED: Final = 0.95  # the shared core this busy (with anything): the pairing is left out


def pairing(target: str, against: str, calls: int, repeat: int, plan: argparse.Namespace,
            cores: run.Cores, logdir: Path) -> dict[str, Any]:
    agent, agent_url = run.start_agent("echo", logdir, cores)
    children: list[run.Child] = []
    try:
        run.wait_agent(agent)
        urls = []
        # Started in turn, the first alternately: neither always has the warmer start.
        for name in (target, against) if repeat % 2 == 0 else (against, target):
            child, port = run.ready_target(name, agent_url, logdir, cores)
            children.append(child)
            urls.append((name, child, run.target_url(name, port)))
        for _, _, url in urls:
            loadgen.run_blocking(loadgen.LoadConfig(
                url=url, calls=2, duration_s=1.0, ramp_s=0.0, warmup_s=0.0, token=run.TOKEN,
                drain_s=0.3))
        time.sleep(0.3)
        snaps: dict[str, tuple[float, dict[str, float], dict[int, tuple[int, int]]]] = {}

        def snap(when: str) -> None:
            snaps[when] = (time.monotonic(), {name: run.cpu_seconds(child.pid)
                                              for name, child, _ in urls}, run.core_ticks())

        hooks = loadgen.Hooks(on_window_start=lambda: snap("start"),
                              on_window_end=lambda: snap("end"))

        async def both() -> list[loadgen.LoadResult]:
            return list(await asyncio.gather(*(
                loadgen.run(loadgen.LoadConfig(
                    url=url, calls=calls, duration_s=plan.duration, ramp_s=plan.ramp,
                    warmup_s=plan.warmup, token=run.TOKEN), hooks if i == 0 else None)
                for i, (_, _, url) in enumerate(urls))))

        with asyncio.Runner(loop_factory=loadgen.new_loop_factory()) as runner:
            results = dict(zip((name for name, _, _ in urls), runner.run(both()), strict=True))
        for name, child, _ in urls:
            if not child.alive():
                raise run.TargetFailed(f"{name} died during the pairing:\n{child.log_tail()}")
    finally:
        run.stop_all(*children, agent)
    if "start" not in snaps or "end" not in snaps:
        raise run.TargetFailed("the measurement window never opened: a longer --duration")
    (t0, cpu0, ticks0), (t1, cpu1, ticks1) = snaps["start"], snaps["end"]
    window = t1 - t0
    ms = {name: (cpu1[name] - cpu0[name]) * 1000 / results[name].call_seconds
          for name in (target, against)}
    core = run.core_busy(ticks0, ticks1, cores.target)
    load = run.core_busy(ticks0, ticks1, cores.load)
    return {
        "target": target, "against": against, "calls": calls, "repeat": repeat,
        "window_s": round(window, 3),
        "cpu_ms_per_call_s": {name: round(value, 3) for name, value in ms.items()},
        "ratio": round(ms[target] / ms[against], 3),
        "shared_core_busy": core,
        "load_core_busy": load,
        "saturated": core is not None and core > SATURATED,
        "load_bound": load is not None and load > run.CORE_LIMIT,  # CPU still counts
        "lost": {name: r.lost for name, r in results.items()},
        "failed_calls": {name: len(r.failures) for name, r in results.items()},
        "latency_p50_ms": {name: r.summary()["latency_ms"]["p50"] for name, r in results.items()},
    }


def summarise(pairings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key in dict.fromkeys((p["target"], p["against"], p["calls"]) for p in pairings):
        mine = [p for p in pairings if (p["target"], p["against"], p["calls"]) == key]
        kept = [p["ratio"] for p in mine if not p["saturated"]]
        rows.append({
            "target": key[0], "against": key[1], "calls": key[2], "pairings": len(mine),
            "saturated": len(mine) - len(kept),
            "ratio": None if not kept else {
                "median": round(statistics.median(kept), 3), "min": min(kept), "max": max(kept)},
            "shared_core_busy_max": max((p["shared_core_busy"] or 0.0) for p in mine),
            "lost": sum(sum(p["lost"].values()) for p in mine),
        })
    return rows


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Side by side on one core, {doc['plan']['duration_s']:g} s of audio per call: the "
        f"target's CPU per call-second over the reference's in the same window. Code "
        f"{doc['machine'].get('code')}, run {doc['created']}.",
        "",
        "| target | against | calls | ratio, median (min-max) | pairings (saturated) | "
        "shared core busy, max | lost frames |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["summary"]:
        ratio = "-" if r["ratio"] is None else (
            f"{r['ratio']['median']:.2f} ({r['ratio']['min']:.2f}-{r['ratio']['max']:.2f})")
        lines.append(f"| {r['target']} | {r['against']} | {r['calls']} | {ratio} | "
                     f"{r['pairings']} ({r['saturated']}) | {r['shared_core_busy_max']:.0%} | "
                     f"{r['lost']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=DEFAULT_TARGETS,
                    help=f"comma-separated, of: {', '.join(run.TARGETS)}")
    ap.add_argument("--against", default="floor", help="the reference each target is paired with")
    ap.add_argument("--base", metavar="REF",
                    help="pair each target with itself on the sources of commit REF instead")
    ap.add_argument("--calls", default="50,100", help="calls to each, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of audio per call")
    ap.add_argument("--ramp", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=HERE / "results", help="a directory")
    args = ap.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = [t for t in (*targets, args.against) if t not in run.TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; known: {', '.join(run.TARGETS)}")
    if not args.base and args.against in targets:
        ap.error(f"{args.against} cannot be paired with itself (--base pairs a target with "
                 "an older commit of itself)")
    if args.base and set(targets) & run.YARDSTICKS:
        ap.error("--base pairs the bridge's own targets: a yardstick has no older sources")
    concurrency = tuple(int(c) for c in args.calls.split(",") if c)
    cores = run.Cores.split()
    if cores.load is not None:
        os.sched_setaffinity(0, cores.load)
    info = run.machine(cores)
    started = time.monotonic()
    pairings: list[dict[str, Any]] = []
    errors: list[str] = []
    total, done = args.repeats * len(concurrency) * len(targets), 0
    with tempfile.TemporaryDirectory(prefix="acdg-paired-") as logdir:
        base = None if not args.base else run.export_base(args.base, Path(logdir) / "base")
        info["base"] = base
        for repeat in range(args.repeats):
            for calls in concurrency:
                for target in targets:
                    done += 1
                    against = args.against if base is None else f"{target}@{base}"
                    print(f"[{done}/{total}] {target:15} with {against}, {calls} calls "
                          f"each, repeat {repeat + 1}", end="", flush=True)
                    try:
                        p = pairing(target, against, calls, repeat, args, cores, Path(logdir))
                    except run.TargetFailed as exc:
                        errors.append(str(exc))
                        print(f"  FAILED: {exc}")
                        continue
                    pairings.append(p)
                    print(f"  ratio {p['ratio']:.3f} ({p['cpu_ms_per_call_s'][target]:.2f} / "
                          f"{p['cpu_ms_per_call_s'][against]:.2f} ms/call-s), core "
                          f"{(p['shared_core_busy'] or 0):.0%}"
                          + (" SATURATED" if p["saturated"] else "")
                          + (" (load core busy)" if p["load_bound"] else ""), flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "created": stamp, "elapsed_s": round(time.monotonic() - started, 1), "machine": info,
        "plan": {"duration_s": args.duration, "ramp_s": args.ramp, "warmup_s": args.warmup,
                 "repeats": args.repeats, "calls": concurrency,
                 "against": args.against if base is None else f"each target @{base}"},
        "summary": summarise(pairings), "pairings": pairings, "errors": errors,
    }
    run.write_results(doc, args.out, f"paired-{stamp}.json", markdown(doc))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
