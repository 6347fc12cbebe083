"""The knee of each setup: how many calls it carries before a call suffers.

The knee is the number of concurrent calls at which the added round-trip latency's p99
passes ``--p99-ms`` (20 ms) or a frame is lost (or a call fails). For each target, runs
of ``--from``, ``--from + --step``, ... calls (fresh processes each, pinned as in
``run.py``, targets interleaved at each level) climb until a level breaks a limit twice
in a row (a shared machine slows down for seconds at a time; ``--no-confirm`` takes the
first time); then ``--refine`` levels between the last good one and the first bad one
narrow it down. The load side is the compiled one (``loadside.c``), which one core runs
for well over 500 calls; ``--load python`` takes ``loadgen.py`` and ``echo_agent.py``. A
level whose load side fell behind (see ``run.load_saturation``) tells nothing about the
target: the search for that target stops there, and its knee is reported as "beyond" the
last good level. Except where the target's own core was full and the load side's only
sign was its timers running late, by less than the latency passed the limit
(:func:`target_bound`): that level is the target's knee.

    .venv/bin/python benchmarks/knee.py --targets acdg-serve,mounted-direct,bridge,floor
    .venv/bin/python benchmarks/knee.py --targets floor --from 300 --step 100 --max 800
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import run

HERE = Path(__file__).resolve().parent


@dataclass
class Search:
    """One target's climb: the levels run and what each showed."""

    target: str
    levels: dict[int, dict[str, Any]] = field(default_factory=dict)
    stopped: str | None = None  # why the climb stopped early: the load side, a failure

    def good(self) -> list[int]:
        return sorted(c for c, r in self.levels.items() if not r["over"] and not r["load_bound"])

    def bad(self) -> list[int]:
        return sorted(c for c, r in self.levels.items() if r["over"] and not r["load_bound"])

    def knee(self) -> tuple[int | None, bool]:
        """The first level over a limit (if found), and whether it was found: otherwise
        the knee lies beyond the last good level."""
        bad = self.bad()
        return (bad[0], True) if bad else ((self.good() or [None])[-1], False)


def verdict(r: dict[str, Any], p99_limit: float) -> list[str]:
    """The limits run ``r`` broke."""
    over = []
    p99 = r["latency_ms"]["p99"]
    if p99 is not None and p99 > p99_limit:
        over.append(f"p99 {p99:.1f} ms")
    if r["lost"]:
        over.append(f"{r['lost']} frames lost")
    if r["failed_calls"]:
        over.append(f"{r['failed_calls']} calls failed")
    return over


TARGET_FULL: Final = 0.95  # the target's CPU over the window's wall time: its core is full


def target_bound(r: dict[str, Any], p99_limit: float) -> str | None:
    """Why a level flagged load-bound still shows the target's knee, if it does.

    Only when the target's core was full and the load side had CPU to spare (its only sign
    is its timers running late): a late timer sends its frame late but stamps it when it
    goes, and an echo waits for the load side's loop about as long as a timer does, so all
    of the p99 but that lag is the target's, and if that still passes the limit, the
    target broke it. A saturated target sends its echoes in bursts, which is what makes
    the load side's timers late in the first place.
    """
    p99, lag = r["latency_ms"]["p99"], r["send_lag_ms"]["p99"]
    if (r["target_core_busy"] or 0.0) < TARGET_FULL or run.load_busy(r) or p99 is None \
            or lag is None or p99 - lag <= p99_limit:
        return None
    return (f"p99 {p99:.1f} ms with the target's core {r['target_core_busy']:.0%} busy; the "
            f"load side {r['load_core_busy']:.0%} busy, its timers {lag:.1f} ms late at p99")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="acdg-serve,bridge,floor",
                    help=f"comma-separated, of: {', '.join(run.TARGETS)}")
    ap.add_argument("--from", dest="start", type=int, default=100)
    ap.add_argument("--step", type=int, default=100)
    ap.add_argument("--max", type=int, default=1000)
    ap.add_argument("--refine", type=int, default=2, help="levels between good and bad")
    ap.add_argument("--p99-ms", type=float, default=20.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--ramp", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--load", choices=run.LOADS, default="c", help=run.LOAD_HELP)
    ap.add_argument("--no-confirm", dest="confirm", action="store_false",
                    help="take a level over a limit at once, without running it again")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = [t for t in targets if t not in run.TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}")
    run.check_load(ap, args.load)
    plan = run.Plan(targets=targets, concurrency=(), repeats=1, duration_s=args.duration,
                    ramp_s=args.ramp, warmup_s=args.warmup, barge_calls=0, barge_duration_s=0,
                    out=args.out, quick=False, line_calls=0, load=args.load)
    cores = run.Cores.split()
    if cores.load is not None:
        os.sched_setaffinity(0, cores.load)
    info = run.machine(cores)
    started = time.monotonic()
    searches = {t: Search(t) for t in targets}

    def attempt(suite: run.Suite, search: Search, calls: int) -> dict[str, Any] | None:
        print(f"{search.target:16} {calls:5} calls", end="", flush=True)
        try:
            r = suite.echo_run(search.target, calls, 0)
        except run.TargetFailed as exc:
            search.stopped = f"failed at {calls} calls: {str(exc).splitlines()[0]}"
            print(f"  FAILED: {exc}")
            return None
        over, load_bound = verdict(r, args.p99_ms), r["load_saturated"]
        if load_bound and (why := target_bound(r, args.p99_ms)) is not None:
            over, load_bound = [why], []
        print(f"  {r['cpu_ms_per_call_s']:.2f} ms/call-s, target core "
              f"{(r['target_core_busy'] or 0):.0%}, p99 {r['latency_ms']['p99']} ms, "
              f"lost {r['lost']}" + (f"; OVER: {', '.join(over)}" if over else "")
              + "".join(f"; LOAD-BOUND: {why}" for why in load_bound), flush=True)
        return {"over": over, "load_bound": load_bound, "run": r}

    def level(suite: run.Suite, search: Search, calls: int) -> None:
        entry = attempt(suite, search, calls)
        if entry is not None and entry["over"] and args.confirm:
            # A shared machine slows down for seconds at a time: a level breaks a limit
            # only if it breaks one again, in fresh processes.
            again = attempt(suite, search, calls)
            if again is not None and not again["over"]:
                entry = again | {"over_before": entry["over"]}
        if entry is None:
            return
        search.levels[calls] = entry
        if entry["load_bound"]:  # what broke, if anything, may be the load side's
            search.stopped = f"the load side fell behind at {calls} calls"

    with tempfile.TemporaryDirectory(prefix="acdg-knee-") as logdir:
        suite = run.Suite(plan, cores, Path(logdir))
        calls = args.start
        while calls <= args.max:
            climbing = [s for s in searches.values() if not s.bad() and s.stopped is None]
            if not climbing:
                break
            for search in climbing:  # interleaved at each level
                level(suite, search, calls)
            calls += args.step
        for search in searches.values():
            good, bad = search.good(), search.bad()
            if not bad or search.stopped:
                continue
            low = max([c for c in good if c < bad[0]], default=0)
            step = (bad[0] - low) / (args.refine + 1)
            for i in range(1, args.refine + 1):
                c = round(low + i * step)
                if c not in search.levels and c > 0:
                    level(suite, search, c)
                    if search.stopped or c in search.bad():
                        break
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "created": stamp, "elapsed_s": round(time.monotonic() - started, 1), "machine": info,
        "limits": {"p99_ms": args.p99_ms, "lost_frames": 0},
        "plan": {"duration_s": args.duration, "ramp_s": args.ramp, "warmup_s": args.warmup,
                 "from": args.start, "step": args.step, "max": args.max, "load": args.load,
                 "confirm": args.confirm},
        "knees": [summary(s) for s in searches.values()],
        "errors": suite.errors,
    }
    run.write_results(doc, args.out, f"knee-{stamp}.json", markdown(doc))
    return 0


def summary(search: Search) -> dict[str, Any]:
    knee, found = search.knee()
    good = search.good()
    last_good = search.levels[good[-1]]["run"] if good else None
    first_bad = search.levels[knee]["run"] if found and knee is not None else None
    return {
        "target": search.target,
        "knee_calls": knee,
        "found": found,
        "stopped": search.stopped,
        "last_good": _brief(last_good),
        "first_over": _brief(first_bad) | {"over": search.levels[knee]["over"]}
        if first_bad is not None and knee is not None else None,
        "levels": {c: _brief(e["run"]) | {"over": e["over"], "load_bound": e["load_bound"],
                                          "over_before": e.get("over_before")}
                   for c, e in sorted(search.levels.items())},
    }


def _brief(r: dict[str, Any] | None) -> dict[str, Any]:
    if r is None:
        return {}
    return {"calls": r["calls"], "cpu_ms_per_call_s": r["cpu_ms_per_call_s"],
            "target_core_busy": r["target_core_busy"], "latency_ms": r["latency_ms"],
            "lost": r["lost"], "sent": r["sent"], "failed_calls": r["failed_calls"],
            "load_core_busy": r["load_core_busy"],
            "load_cpu_total_busy": r.get("load_cpu_total_busy"),
            "send_lag_ms": r["send_lag_ms"]}


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Knee: the calls at which p99 added latency passes {doc['limits']['p99_ms']:g} ms or a "
        f"frame is lost; {doc['plan']['duration_s']:g} s of audio per call, calls started "
        f"over {doc['plan']['ramp_s']:g} s. Code {doc['machine'].get('code')}, run "
        f"{doc['created']}.",
        "",
        "| target | knee (calls) | last level within the limits: calls, p99 ms, target core "
        "busy, CPU ms per call-s | first level over: calls, what broke, target core busy |",
        "|---|---:|---:|---:|",
    ]
    for k in doc["knees"]:
        good, bad = k["last_good"], k["first_over"]
        knee = "-" if k["knee_calls"] is None else (
            str(k["knee_calls"]) if k["found"] else f"> {k['knee_calls']}")
        p99 = good["latency_ms"]["p99"] if good else None  # None: no echo in the window
        good_text = "-" if not good else (
            f"{good['calls']}, {'-' if p99 is None else f'{p99:.1f}'}, "
            f"{(good['target_core_busy'] or 0):.0%}, {good['cpu_ms_per_call_s']:.2f}")
        if bad:
            bad_text = (f"{bad['calls']}, {', '.join(bad['over'])}, "
                        f"{(bad['target_core_busy'] or 0):.0%}")
        else:
            bad_text = k["stopped"] or "none up to the largest level tried"
        lines.append(f"| {k['target']} | {knee} | {good_text} | {bad_text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
