"""The benchmark suite: the bridge and its two yardsticks under the same simulated calls.

For every repeat, concurrency and target: start the stand-in agent (echo mode) and the
target in fresh processes, pin the target to one core and the agent and the load generator
(this process) to the others, warm the target up, then run the calls and measure the
target's CPU time over a window where every call is streaming. A barge-in run per target
follows, against the scripted stand-in agent. Medians with min-max go to a JSON file, a
PNG plot and a markdown table.

Usage::

    python benchmarks/run.py            # the full suite, a few minutes
    python benchmarks/run.py --quick    # smoke: 10 calls x 5 s, one repeat
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final, TextIO

import loadgen
import report

HERE: Final = Path(__file__).resolve().parent
# name -> script and its extra arguments. The first three run by default.
TARGETS: Final = {
    "bridge": ("bridge_uvicorn.py",),
    "acdg-serve": ("acdg_serve.py",),
    "acdg-serve-40ms": ("acdg_serve.py", "--chunk-ms", "40", "--caller-frame-ms", "40"),
    "acdg-serve-unpaced": ("acdg_serve.py", "--lead-ms", "0"),
    "acdg-serve-nometrics": ("acdg_serve.py", "--no-metrics"),
    "acdg-serve-redis": ("acdg_serve.py", "--redis"),
    **{f"bridge-{server}": ("bridge_server.py", "--server", server) for server in (
        "uvicorn-sansio", "uvicorn-wsproto", "uvicorn-websockets", "uvicorn-direct", "hypercorn",
        "granian",
    )},
    "straightforward": ("straightforward_relay.py",),
    "floor": ("floor_relay.py",),
    "bridge-unpaced": ("bridge_uvicorn.py", "--lead-ms", "0"),
}
DEFAULT_TARGETS: Final = ("acdg-serve", "bridge", "straightforward", "floor")
TOKEN: Final = "bench-token"
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S: Final = 20.0


@dataclass(frozen=True)
class Plan:
    targets: tuple[str, ...]
    concurrency: tuple[int, ...]
    repeats: int
    duration_s: float
    ramp_s: float
    warmup_s: float
    barge_calls: int
    barge_duration_s: float
    out: Path
    quick: bool


class TargetFailed(RuntimeError):
    """A process under test did not start, or died during a run."""


# --- processes --------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[str]
    log: TextIO

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


@dataclass
class Cores:
    """Which CPUs the target gets and which the load (generator and agent) gets."""

    target: set[int] | None = None
    load: set[int] | None = None

    @classmethod
    def split(cls) -> Cores:
        if not hasattr(os, "sched_setaffinity"):
            return cls()
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls()
        return cls(target={available[0]}, load=set(available[1:]))

    def describe(self) -> str:
        if self.target is None:
            return "not pinned (fewer than 2 cores available)"
        load = sorted(self.load or ())
        return f"target on CPU {sorted(self.target)}, load and agent on CPU {load}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(name: str, args: list[str], logdir: Path, cpus: set[int] | None) -> Child:
    log = open(logdir / f"{name}.log", "w+")  # noqa: SIM115 - closed by Child.stop
    # pinned before exec, so worker processes (granian's) inherit the core
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    popen = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=log, text=True, cwd=HERE.parent,
        preexec_fn=pin,
    )
    return Child(name, popen, log)


def start_agent(mode: str, logdir: Path, cores: Cores) -> tuple[Child, str]:
    port = free_port()
    child = spawn(
        f"agent-{mode}", [str(HERE / "agent_server.py"), "--mode", mode, "--port", str(port)],
        logdir, cores.load,
    )  # fmt: skip
    return child, f"ws://127.0.0.1:{port}/v1/agent/converse"


def start_target(name: str, agent_url: str, logdir: Path, cores: Cores,
                 wrapper: tuple[str, ...] = ()) -> tuple[Child, int]:
    """``wrapper``: a script the target runs under (``linecount.py``)."""
    port = free_port()
    script, *extra = TARGETS[name]
    args = [*wrapper, str(HERE / "targets" / script), *extra, "--port", str(port),
            "--agent-url", agent_url, "--token", TOKEN]
    return spawn(name, args, logdir, cores.target), port


def wait_listening(child: Child, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive():
            raise TargetFailed(f"{child.name} exited at start:\n{child.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TargetFailed(f"{child.name} did not listen on port {port} in {START_TIMEOUT_S} s")


def wait_agent(child: Child) -> None:
    """The agent prints its URL once it listens."""
    assert child.popen.stdout is not None
    ready, _, _ = select.select([child.popen.stdout], [], [], START_TIMEOUT_S)
    if not ready or not child.popen.stdout.readline().startswith("ws://"):
        raise TargetFailed(f"the stand-in agent did not start:\n{child.log_tail()}")


# --- /proc ------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (granian serves from a worker process)."""
    tree, i = [pid], 0
    while i < len(tree):
        try:
            for task in os.listdir(f"/proc/{tree[i]}/task"):
                with open(f"/proc/{tree[i]}/task/{task}/children") as f:
                    tree.extend(int(child) for child in f.read().split())
        except OSError:
            pass  # gone meanwhile
        i += 1
    return tree


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and its descendants, all threads."""
    user = system = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])  # utime, stime
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def memory_kb(pid: int, key: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process and its descendants, in KB."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                total += next((int(line.split()[1]) for line in f
                               if line.startswith(key + ":")), 0)
        except OSError:
            continue
    return total


@dataclass
class Snapshot:
    at: float
    target_user: float
    target_sys: float
    agent_cpu: float
    own_cpu: float

    @property
    def target_cpu(self) -> float:
        return self.target_user + self.target_sys


def snapshot(target: Child, agent: Child) -> Snapshot:
    user, system = cpu_times(target.pid)
    return Snapshot(time.monotonic(), user, system, cpu_seconds(agent.pid), time.process_time())


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Suite:
    plan: Plan
    cores: Cores
    logdir: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    barge: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def warm_up(self, url: str) -> None:
        """One short call: first-use imports and caches are not counted against calls."""
        cfg = loadgen.LoadConfig(url=url, calls=2, duration_s=0.6 if self.plan.quick else 1.0,
                                 ramp_s=0.0, warmup_s=0.0, token=TOKEN, drain_s=0.3)
        loadgen.run_blocking(cfg)
        time.sleep(0.3)

    def echo_run(self, target: str, calls: int, repeat: int) -> dict[str, Any]:
        plan = self.plan
        agent, agent_url = start_agent("echo", self.logdir, self.cores)
        child, port = start_target(target, agent_url, self.logdir, self.cores)
        try:
            wait_agent(agent)
            wait_listening(child, port)
            url = f"ws://127.0.0.1:{port}/"
            self.warm_up(url)
            idle_kb = memory_kb(child.pid, "VmRSS")
            snaps: dict[str, Snapshot] = {}
            hooks = loadgen.Hooks(
                on_window_start=lambda: snaps.__setitem__("start", snapshot(child, agent)),
                on_window_end=lambda: snaps.__setitem__("end", snapshot(child, agent)),
            )
            cfg = loadgen.LoadConfig(url=url, calls=calls, duration_s=plan.duration_s,
                                     ramp_s=plan.ramp_s, warmup_s=plan.warmup_s, token=TOKEN)
            result = loadgen.run_blocking(cfg, hooks)
            peak_kb = memory_kb(child.pid, "VmHWM")
            if not child.alive():
                raise TargetFailed(f"{target} died during the run:\n{child.log_tail()}")
        finally:
            child.stop()
            agent.stop()
        return measurements(target, calls, repeat, result, snaps, idle_kb, peak_kb)

    def barge_run(self, target: str) -> dict[str, Any]:
        plan = self.plan
        agent, agent_url = start_agent("script", self.logdir, self.cores)
        child, port = start_target(target, agent_url, self.logdir, self.cores)
        try:
            wait_agent(agent)
            wait_listening(child, port)
            cfg = loadgen.LoadConfig(url=f"ws://127.0.0.1:{port}/", calls=plan.barge_calls,
                                     duration_s=plan.barge_duration_s, ramp_s=1.0, warmup_s=0.0,
                                     token=TOKEN, barge_in=True, drain_s=0.3)
            result = loadgen.run_blocking(cfg)
            if not child.alive():
                raise TargetFailed(f"{target} died during the barge-in run:\n{child.log_tail()}")
        finally:
            child.stop()
            agent.stop()
        summary = result.summary()
        return {"target": target, "calls": plan.barge_calls, "ok_calls": result.ok_calls,
                "failures": summary["failures"],
                **summary.get("barge_in", loadgen.barge_summary([], 0))}

    def run(self) -> None:
        plan = self.plan
        total = plan.repeats * len(plan.concurrency) * len(plan.targets)
        done = 0
        for repeat in range(plan.repeats):
            for calls in plan.concurrency:
                for target in plan.targets:  # interleaved: drift hits every target alike
                    done += 1
                    print(f"[{done}/{total}] {target:15} {calls:4} calls, repeat {repeat + 1}",
                          end="", flush=True)
                    try:
                        run = self.echo_run(target, calls, repeat)
                    except TargetFailed as exc:
                        self.errors.append(str(exc))
                        print(f"  FAILED: {exc}")
                        continue
                    self.runs.append(run)
                    print(f"  {run['cpu_ms_per_call_s']:.2f} ms/call-s, "
                          f"p50 {run['latency_ms']['p50']} ms, lost {run['lost']}, "
                          f"failed calls {run['failed_calls']}", flush=True)
                    if run["ok_calls"] == 0:
                        self.errors.append(f"{target} at {calls} calls: no call completed "
                                           f"({run['failures']})")
        if plan.barge_calls:
            for target in plan.targets:
                print(f"[barge-in] {target:15} {plan.barge_calls} calls", end="", flush=True)
                try:
                    barge = self.barge_run(target)
                except TargetFailed as exc:
                    self.errors.append(str(exc))
                    print(f"  FAILED: {exc}")
                    continue
                self.barge.append(barge)
                print(f"  {barge['events']} interruptions, {barge['stopped']} stopped", flush=True)


def measurements(
    target: str, calls: int, repeat: int, result: loadgen.LoadResult,
    snaps: dict[str, Snapshot], idle_kb: int, peak_kb: int,
) -> dict[str, Any]:  # fmt: skip
    summary = result.summary()
    record: dict[str, Any] = {"target": target, "calls": calls, "repeat": repeat, **summary}
    start, end = snaps.get("start"), snaps.get("end")
    window_s = (end.at - start.at) if start and end else 0.0
    target_cpu = (end.target_cpu - start.target_cpu) if start and end else 0.0
    target_sys = (end.target_sys - start.target_sys) if start and end else 0.0
    agent_cpu = (end.agent_cpu - start.agent_cpu) if start and end else 0.0
    loadgen_cpu = (end.own_cpu - start.own_cpu) if start and end else 0.0
    load_cpu = agent_cpu + loadgen_cpu
    call_s = result.call_seconds
    cpu_ms = target_cpu * 1000 / call_s if call_s else float("nan")
    record.update(
        window_s=round(window_s, 3),
        target_cpu_s=round(target_cpu, 3),
        target_sys_share=round(target_sys / target_cpu, 3) if target_cpu else None,
        cpu_ms_per_call_s=round(cpu_ms, 3),
        calls_per_core=round(1000 / cpu_ms, 1) if cpu_ms > 0 else None,
        target_core_busy=round(target_cpu / window_s, 3) if window_s else None,
        load_core_busy=round(load_cpu / window_s, 3) if window_s else None,
        agent_cpu_s=round(agent_cpu, 3),
        loadgen_cpu_s=round(loadgen_cpu, 3),
        rss_idle_kb=idle_kb,
        rss_peak_kb=peak_kb,
        rss_kb_per_call=round((peak_kb - idle_kb) / calls, 1),
    )
    return record


# --- summary ----------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def aggregate(runs: list[dict[str, Any]], targets: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per target and concurrency: medians with min-max over the repeats."""
    floor_cpu = {(r["calls"], r["repeat"]): r["cpu_ms_per_call_s"]
                 for r in runs if r["target"] == "floor"}
    rows = []
    for target in targets:
        for calls in sorted({r["calls"] for r in runs}):
            mine = [r for r in runs if r["target"] == target and r["calls"] == calls]
            if not mine:
                continue
            ratios = [r["cpu_ms_per_call_s"] / floor_cpu[(calls, r["repeat"])]
                      for r in mine if floor_cpu.get((calls, r["repeat"]))]
            cpu = spread([r["cpu_ms_per_call_s"] for r in mine])
            sent = sum(r["sent"] for r in mine)
            rows.append({
                "target": target,
                "calls": calls,
                "repeats": len(mine),
                "cpu_ms_per_call_s": cpu,
                "ratio_to_floor": spread(ratios),  # per repeat, then the median
                "calls_per_core": round(1000 / cpu["median"], 1) if cpu and cpu["median"] else None,
                "latency_p50_ms": spread([r["latency_ms"]["p50"] for r in mine]),
                "latency_p99_ms": spread([r["latency_ms"]["p99"] for r in mine]),
                "latency_max_ms": max((r["latency_ms"]["max"] or 0.0) for r in mine),
                "lost_frames": sum(r["lost"] for r in mine),
                "sent_frames": sent,
                "failed_calls": sum(r["failed_calls"] for r in mine),
                "rss_kb_per_call": spread([r["rss_kb_per_call"] for r in mine]),
                "target_core_busy": spread([r["target_core_busy"] for r in mine]),
                "load_core_busy_max": max((r["load_core_busy"] or 0.0) for r in mine),
            })  # fmt: skip
    return rows


def machine(cores: Cores) -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for dist in ("uvicorn", "starlette", "websockets", "msgspec", "uvloop", "httptools"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "code": code_version(),
        "cpu": model,
        "cores": os.cpu_count(),
        "pinning": cores.describe(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


def code_version() -> str:
    """The commit measured, marked when the package's sources differ from it."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+modified" if git("status", "--porcelain", "--", "src") else "")


def parse_args(argv: list[str] | None) -> Plan:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 calls x 5 s, 1 repeat")
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                    help=f"comma-separated, of: {', '.join(TARGETS)}")
    ap.add_argument("--calls", default="50,100,200", help="concurrency levels, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of audio per call")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds over which calls start")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds after the ramp")
    ap.add_argument("--barge-calls", type=int, default=20, help="barge-in run calls; 0 skips")
    ap.add_argument("--barge-duration", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; known: {list(TARGETS)}")
    if args.quick:
        return Plan(targets=targets, concurrency=(10,), repeats=1, duration_s=5.0, ramp_s=1.0,
                    warmup_s=0.5, barge_calls=4, barge_duration_s=3.0,
                    out=args.out / "quick", quick=True)
    concurrency = tuple(int(c) for c in args.calls.split(","))
    if args.duration <= args.ramp + args.warmup + 1:
        ap.error("--duration must exceed --ramp + --warmup by more than a second")
    return Plan(targets=targets, concurrency=concurrency, repeats=args.repeats,
                duration_s=args.duration, ramp_s=args.ramp, warmup_s=args.warmup,
                barge_calls=args.barge_calls, barge_duration_s=args.barge_duration,
                out=args.out, quick=False)


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    cores = Cores.split()
    if cores.load is not None:
        os.sched_setaffinity(0, cores.load)  # this process is the load generator
    info = machine(cores)
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
          f"kernel {info['kernel']}; {info['pinning']}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="acdg-bench-") as logdir:
        suite = Suite(plan, cores, Path(logdir))
        suite.run()
    rows = aggregate(suite.runs, plan.targets)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "created": stamp,
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": info,
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in plan.__dict__.items()},
        "summary": rows,
        "barge_in": suite.barge,
        "runs": suite.runs,
        "errors": suite.errors,
    }
    plan.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2) + "\n"
    (plan.out / f"{stamp}.json").write_text(text)
    (plan.out / "latest.json").write_text(text)
    table = report.markdown(doc)
    print()
    print(table)
    print(f"\nwrote {plan.out / 'latest.json'}")
    if rows:
        try:
            report.plot(doc, plan.out / "latest.png")
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
        else:
            print(f"wrote {plan.out / 'latest.png'}")
    for error in suite.errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"elapsed {doc['elapsed_s']} s")
    return 1 if suite.errors or not suite.runs else 0


if __name__ == "__main__":
    sys.exit(main())
