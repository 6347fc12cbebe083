"""The suite's results as a markdown table and a PNG plot.

Usage (re-render from a results file; with several, the runs side by side and the range
they span)::

    python benchmarks/report.py benchmarks/results/latest.json [--plot out.png]
    python benchmarks/report.py benchmarks/results/A.json benchmarks/results/B.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BUSY_WARNING = 0.85  # a core busier than this is saturated: latency and loss suffer
OTHERS_WARNING = 0.10  # other jobs' share of the target's core worth a mention


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(s: dict[str, float] | None, digits: int = 2) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def _median(s: dict[str, float] | None) -> float | None:
    return s["median"] if s else None


def machine_line(doc: dict[str, Any]) -> str:
    m, plan = doc["machine"], doc["plan"]
    return (
        f"{m['cpu']}, {m['cores']} cores ({m['pinning']}); Python {m['python']}, "
        f"Linux {m['kernel']}; load average at start {m['loadavg_at_start'][0]}. "
        f"Code {m.get('code', '?')}, run {doc['created']}, {plan['repeats']} repeats, "
        f"{plan['duration_s']:g} s of audio per call, calls started over {plan['ramp_s']:g} s; "
        f"took {doc['elapsed_s']:.0f} s."
    )


def _latency(row: dict[str, Any]) -> str:
    """p50 / p99 / max of the repeats whose load side kept up, and how many did not."""
    bound, repeats = row.get("load_bound_repeats", 0), row["repeats"]
    if bound == repeats:
        return "load-bound"
    text = (f"{_num(_median(row['latency_p50_ms']))} / {_num(_median(row['latency_p99_ms']))}"
            f" / {_num(row['latency_max_ms'])}")
    return text + (f" ({bound} of {repeats} load-bound)" if bound else "")


def _lines(row: dict[str, Any]) -> str:
    """Lines per round trip; "≈" when the traced target fell behind (see run.LineCount)."""
    text = _num(row.get("lines_per_round_trip"))
    return text if row.get("lines_steady", True) or text == "-" else f"≈{text}"


def _lost(row: dict[str, Any]) -> str:
    if row.get("load_bound_repeats", 0) == row["repeats"]:
        return "load-bound"
    lost = f"{row['lost_frames']} / {row['sent_frames']}"
    if row["failed_calls"]:
        lost += f" ({row['failed_calls']} calls failed)"
    return lost


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Machine: {machine_line(doc)}",
        "",
        "| target | calls | CPU ms per call-s, median [min-max] | x floor | calls per core "
        "| Python lines per round trip | latency p50 / p99 / max ms | lost frames "
        "| RSS KB per call | target core busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in doc["summary"]:
        busy = _median(row["target_core_busy"])
        flag = " ⚠" if busy is not None and busy > BUSY_WARNING else ""
        lines.append(
            f"| {row['target']} | {row['calls']} | {_spread(row['cpu_ms_per_call_s'])} "
            f"| {_spread(row['ratio_to_floor'])} | {_num(row['calls_per_core'], 0)} "
            f"| {_lines(row)} | {_latency(row)} | {_lost(row)} "
            f"| {_num(_median(row['rss_kb_per_call']), 0)} "
            f"| {_num(busy * 100 if busy is not None else None, 0)}%{flag} |"
        )
    others = max((r["target_cpu_total_busy"] - (r["target_core_busy"] or 0.0)
                  for r in doc.get("runs", ()) if r.get("target_cpu_total_busy") is not None),
                 default=None)
    if others is not None and others > OTHERS_WARNING:
        lines += ["", f"Other jobs took up to {others:.0%} of the target's core during a "
                      "measurement window: its latency includes waiting for them."]
    bound = [r for r in doc.get("runs", ()) if r.get("load_saturated")]
    if bound:
        lines += ["", f"load-bound: {len(bound)} of {len(doc['runs'])} runs, whose latency "
                      "and lost frames are left out (the load side, not the target, was "
                      "the limit): "
                      + "; ".join(f"{r['target']} at {r['calls']} calls, repeat "
                                  f"{r['repeat'] + 1}: {', '.join(r['load_saturated'])}"
                                  for r in bound[:6])
                      + (" …" if len(bound) > 6 else "")]
    if doc.get("barge_in"):
        lines += [
            "",
            "| target | calls | interruptions (stopped / missed) | barge-in → playStream.stop "
            "ms p50 / max | speech.started → stop ms p50 | agent audio after speech.started "
            "ms max | still to play at the cut ms p50 / max |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for b in doc["barge_in"]:
            react, s2s = b["react_ms"], b["started_to_stop_ms"]
            after, heard = b["audio_after_ms"], b["heard_after_ms"]
            lines.append(
                f"| {b['target']} | {b['calls']} | {b['events']} ({b['stopped']} / {b['missed']}) "
                f"| {_num(react['p50'])} / {_num(react['max'])} | {_num(s2s['p50'], 2)} "
                f"| {_num(after['max'], 0)} | {_num(heard['p50'], 0)} / {_num(heard['max'], 0)} |"
            )
    if doc.get("errors"):
        lines += ["", *(f"error: {e.splitlines()[0]}" for e in doc["errors"])]
    return "\n".join(lines)


def across(docs: list[dict[str, Any]]) -> str:
    """Several suite runs side by side: each run's median, and the range they span."""
    keys = list(dict.fromkeys((r["target"], r["calls"]) for d in docs for r in d["summary"]))
    head = " | ".join(f"run {i + 1}" for i in range(len(docs)))
    lines = [
        "Runs: " + "; ".join(f"{i + 1}: {d['created']}, code {d['machine'].get('code', '?')}, "
                             f"{d['plan']['repeats']} repeats, load average "
                             f"{d['machine']['loadavg_at_start'][0]}"
                             for i, d in enumerate(docs)),
        "",
        f"| target | calls | x floor: {head} | x floor, range | CPU ms per call-s, range "
        f"| latency p99 ms, range | lost frames | Python lines per round trip |",
        "|---|---:|" + "---:|" * len(docs) + "---:|---:|---:|---:|---:|",
    ]
    for target, calls in keys:
        rows = [next((r for r in d["summary"] if (r["target"], r["calls"]) == (target, calls)),
                     None) for d in docs]
        present = [r for r in rows if r is not None]
        ratios = [_median(r["ratio_to_floor"]) if r else None for r in rows]
        seen = [x for x in ratios if x is not None]
        cpu = [r["cpu_ms_per_call_s"]["median"] for r in present if r["cpu_ms_per_call_s"]]
        p99 = [_median(r["latency_p99_ms"]) for r in present if r["latency_p99_ms"]]
        counted = sorted({r["lines_per_round_trip"] for r in present
                          if r.get("lines_per_round_trip") is not None})
        lost = sum(r["lost_frames"] for r in present)
        sent = sum(r["sent_frames"] for r in present)
        lines.append(
            f"| {target} | {calls} | " + " | ".join(_num(x, 2) for x in ratios)
            + f" | {_range(seen, 2)} | {_range(cpu, 2)} | {_range(p99, 1)} "
            f"| {lost} / {sent} | {', '.join(_num(c) for c in counted) or '-'} |"
        )
    return "\n".join(lines)


def _range(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if low == high else f"{low:.{digits}f}-{high:.{digits}f}"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["summary"]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, (cpu_ax, lat_ax) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    marked = False
    for i, target in enumerate(targets):
        mine = sorted((r for r in rows if r["target"] == target and r["cpu_ms_per_call_s"]),
                      key=lambda r: r["calls"])
        if not mine:
            continue
        calls = [r["calls"] for r in mine]
        color = f"C{i}"
        med = [r["cpu_ms_per_call_s"]["median"] for r in mine]
        err = [
            [m - r["cpu_ms_per_call_s"]["min"] for m, r in zip(med, mine, strict=True)],
            [r["cpu_ms_per_call_s"]["max"] - m for m, r in zip(med, mine, strict=True)],
        ]
        cpu_ax.errorbar(calls, med, yerr=err, marker="o", capsize=3, color=color, label=target)
        busy = [(c, m) for c, m, r in zip(calls, med, mine, strict=True)
                if (_median(r["target_core_busy"]) or 0.0) > BUSY_WARNING]
        if busy:
            saturated = "target core > 85% busy" if not marked else None
            marked = True
            cpu_ax.scatter(*zip(*busy, strict=True), s=160, facecolors="none",
                           edgecolors="red", label=saturated, zorder=3)
        p50 = [_median(r["latency_p50_ms"]) for r in mine]
        p99 = [_median(r["latency_p99_ms"]) for r in mine]
        lat_ax.plot(calls, p50, marker="o", color=color, label=f"{target} p50")
        lat_ax.plot(calls, p99, marker="s", linestyle="--", color=color, label=f"{target} p99")
    cpu_ax.set(title="CPU of the process under test", xlabel="concurrent calls",
               ylabel="CPU ms per call-second (median, min-max)")
    cpu_ax.set_ylim(bottom=0)
    lat_ax.set(title="Added latency caller → agent → caller", xlabel="concurrent calls",
               ylabel="ms (median over repeats)", yscale="log")
    for ax in (cpu_ax, lat_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    m = doc["machine"]
    fig.suptitle(f"acdg-asgi benchmark {doc['created']} — {m['cpu']}, {m['cores']} cores, "
                 f"Python {m['python']}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--plot", type=Path, default=None, help="the plot of the first file")
    args = ap.parse_args()
    docs = [json.loads(path.read_text()) for path in args.results]
    print(markdown(docs[0]) if len(docs) == 1 else across(docs))
    if args.plot is not None:
        plot(docs[0], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
