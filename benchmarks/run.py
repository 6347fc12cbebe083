"""The benchmark suite: the bridge and its yardsticks under the same simulated calls.

For every repeat, concurrency and target, in that nesting (targets interleaved: A B C D,
A B C D, ...), start the stand-in agent (echo mode) and the target in fresh processes,
pin the target to one core and the agent and the load generator (this process) to the
others, warm the target up, then run the calls and measure the target's CPU time over a
window where every call is streaming. After a target's first run, the same process
counts the Python lines it runs per round trip. A run whose load side did not keep up
(its processes or its core saturated, or its timers late) gives CPU figures but no
latency or lost frames. A barge-in run per target follows, against the scripted
stand-in agent. Medians with min-max go to a JSON file, a PNG plot and a markdown table.

Usage::

    python benchmarks/run.py            # the full suite, about 12 minutes
    python benchmarks/run.py --quick    # smoke: 10 calls x 4.5 s, one repeat
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final, TextIO

import loadgen
import loadside
import report

HERE: Final = Path(__file__).resolve().parent
# name -> script and its extra arguments; DEFAULT_TARGETS run by default.
MOUNTED: Final = ("mounted_app.py", "--serve")
UVICORN_STOCK: Final = ("--ws", "auto", "--loop", "uvloop")  # uvicorn's default WebSockets
TARGETS: Final = {
    "acdg-serve": ("acdg_serve.py",),
    # A user's Starlette app with the bridge at /audiocodes: under stock uvicorn + uvloop,
    # under `acdg serve APP`, under uvicorn with the direct protocol, and as a plain pip
    # install serves it (no uvloop, no httptools).
    "bridge": (*MOUNTED, "uvicorn", *UVICORN_STOCK),
    "mounted-acdg": (*MOUNTED, "acdg"),
    "mounted-direct": (*MOUNTED, "uvicorn", "--ws", "direct", "--loop", "uvloop"),
    "mounted-plain": (*MOUNTED, "uvicorn", "--ws", "auto", "--loop", "asyncio", "--http", "h11"),
    "mounted-asgi": (*MOUNTED, "uvicorn", *UVICORN_STOCK, "--asgi"),  # direct_path=False
    "mounted-acdg-factory": (*MOUNTED, "acdg", "--agent-factory"),
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
    # The floor relay as a raw ASGI app, served as `bridge` is: uvicorn's own share.
    "uvicorn-floor": ("uvicorn_floor.py", *UVICORN_STOCK),
    "predecessor": ("predecessor.py",),  # needs $PREDECESSOR_CHECKOUT
    "bridge-unpaced": (*MOUNTED, "uvicorn", *UVICORN_STOCK, "--lead-ms", "0"),
}
PATHS: Final = {"mounted_app.py": "/audiocodes/"}  # where a target serves VAIC, if not at /
DEFAULT_TARGETS: Final = ("acdg-serve", "mounted-acdg", "mounted-direct", "bridge",
                          "uvicorn-floor", "straightforward", "floor")
QUICK_TARGETS: Final = ("acdg-serve", "mounted-acdg", "bridge", "floor")  # CI: under a minute
YARDSTICKS: Final = frozenset({"floor", "uvicorn-floor", "straightforward",
                               "predecessor"})  # none of our code
UNCOUNTED: Final = frozenset({"bridge-granian"})  # serves from a worker: no line count
BUSY_LIMIT: Final = 0.85  # the load processes' own CPU over the window: beyond it they lag
CORE_LIMIT: Final = 0.95  # the load core busy with anything (other jobs share the machine)
STEADY_P99_MS: Final = 20.0  # a line count's traced calls slower than this: approximate
LAG_LIMIT_MS: Final = 3.0  # the load generator's timers this late (p99): it is behind
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
    line_calls: int = 10  # calls while each target's Python lines are counted
    line_window_s: float = 3.0
    base: str | None = None  # also run each bridge target on this commit's sources
    load: str = "python"  # the load side: "python" (loadgen.py, echo_agent.py) or "c" (loadside.c)


class TargetFailed(RuntimeError):
    """A process under test did not start, or died during a run."""


# --- processes --------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[str]
    log: TextIO
    lines_out: Path | None = None  # where linecount.py writes, if the child runs under it

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


def stop_all(*children: Child) -> None:
    """Stop processes together: each shuts down while the others do."""
    for child in children:
        if child.alive():
            child.popen.terminate()
    for child in children:
        child.stop()


_ports: Iterator[int] | None = None  # --port-base: ports in turn instead of free ones


def use_ports(base: int | None) -> None:
    global _ports
    _ports = None if base is None else iter(range(base, 65536))


def free_port() -> int:
    if _ports is not None:
        return next(_ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(name: str, args: list[str], logdir: Path, cpus: set[int] | None,
          env: dict[str, str] | None = None, *, python: bool = True) -> Child:
    """``args`` run by this Python, or as a command of their own if not ``python``."""
    log = open(logdir / f"{name}.log", "w+")  # noqa: SIM115 - closed by Child.stop
    # pinned before exec, so worker processes (granian's) inherit the core
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    popen = subprocess.Popen(
        [sys.executable, *args] if python else args,
        stdin=None if python else subprocess.PIPE,  # the compiled load side takes its runs there
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=HERE.parent, preexec_fn=pin,
        env=None if env is None else {**os.environ, **env},
    )
    return Child(name, popen, log)


COMPILED_AGENT: Final = "loadside"  # the child that is the compiled load side


def echo_agent_mode(load: str) -> str:
    """The agent of echo runs with load side ``load`` (``Plan.load``)."""
    return "compiled" if load == "c" else "echo"


def run_echo_calls(agent: Child, cfg: loadgen.LoadConfig,
                   hooks: loadgen.Hooks | None = None) -> loadgen.LoadResult:
    """``cfg``'s calls, from the compiled load side if ``agent`` is it, else from here."""
    if agent.name == COMPILED_AGENT:
        return loadside.run_calls(agent.popen, cfg, hooks)
    return loadgen.run_blocking(cfg, hooks)


def start_agent(mode: str, logdir: Path, cores: Cores, *extra: str) -> tuple[Child, str]:
    """``echo``: the lean echo agent (``echo_agent.py``); ``compiled``: the compiled load
    side (``loadside.c``), echo agent and load generator in one; ``script``: the full
    stand-in agent's scripted turns (``agent_server.py``); ``standin-echo``: the stand-in
    echoing."""
    port = free_port()
    if mode == "compiled":
        try:
            args = loadside.command(port)
        except loadside.LoadSideUnavailable as exc:
            raise TargetFailed(str(exc)) from None
        return spawn(COMPILED_AGENT, args, logdir, cores.load, python=False), \
            f"ws://127.0.0.1:{port}/v1/agent/converse"
    if mode == "echo":
        args = [str(HERE / "echo_agent.py"), "--port", str(port), *extra]
    else:
        args = [str(HERE / "agent_server.py"), "--mode", mode.removeprefix("standin-"),
                "--port", str(port)]
    child = spawn(f"agent-{mode}", args, logdir, cores.load)
    return child, f"ws://127.0.0.1:{port}/v1/agent/converse"


def start_target(name: str, agent_url: str, logdir: Path, cores: Cores) -> tuple[Child, int]:
    """The target runs under ``linecount.py``, which costs nothing until switched on
    (:func:`count_lines`), unless it serves from a worker process."""
    port = free_port()
    kind, _, ref = name.partition("@")
    script, *extra = TARGETS[kind]
    wrapper = [] if kind in UNCOUNTED else [str(HERE / "linecount.py")]
    args = [*wrapper, str(HERE / "targets" / script), *extra,
            "--port", str(port), "--agent-url", agent_url, "--token", TOKEN]
    lines_out = logdir / f"{name}.lines"
    env = {"LINECOUNT_OUT": str(lines_out)}
    if ref:  # the package's sources as of another commit, ahead of the installed ones
        env["PYTHONPATH"] = str(BASES[ref] / "src")
    child = spawn(name, args, logdir, cores.target, env)
    child.lines_out = None if kind in UNCOUNTED else lines_out
    return child, port


BASES: dict[str, Path] = {}  # "T@REF" targets: REF's sources, unpacked by export_base


def export_base(ref: str, into: Path) -> str:
    """Unpack ``src/`` as of commit ``ref`` for "T@REF" targets; the commit's short id."""
    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, check=True)

    short = git("rev-parse", "--short", ref).stdout.decode().strip()
    archive = git("archive", ref, "src")
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    BASES[short] = into
    return short


def short_path(where: str) -> str:
    """A source file's path from its package on."""
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            return where.split(marker, 1)[1]
    return where


@dataclass(frozen=True)
class LineCount:
    """Python lines the target ran per round trip (one caller frame in, its echo out),
    and the functions that ran most of them (lines per round trip, function, file)."""

    per_round_trip: float
    round_trips: float
    top: list[tuple[float, str, str]]
    p99_ms: float | None  # the traced calls' latency: high when the slowed target fell behind

    @property
    def steady(self) -> bool:
        """The traced target kept up: frames came one at a time, as untraced. Behind,
        frames pile up and take other paths (partial reads, the playout's buffer), and
        the count moves with the machine's load."""
        return self.p99_ms is not None and self.p99_ms < STEADY_P99_MS


def count_lines(child: Child, url: str, *, calls: int, window_s: float,
                ramp_s: float = 0.5, warmup_s: float = 0.5) -> LineCount | None:
    """Load the target with ``calls`` echo calls and count the lines it runs while all
    of them stream. Tracing slows the target about tenfold: keep ``calls`` small."""
    window: list[float] = []

    def switch(sig: int) -> None:
        window.append(time.monotonic())
        os.kill(child.pid, sig)

    cfg = loadgen.LoadConfig(url=url, calls=calls, ramp_s=ramp_s, warmup_s=warmup_s,
                             duration_s=ramp_s + warmup_s + window_s + loadgen.FRAME_S,
                             token=TOKEN, drain_s=0.3)
    result = loadgen.run_blocking(cfg, loadgen.Hooks(
        on_window_start=lambda: switch(signal.SIGUSR1),
        on_window_end=lambda: switch(signal.SIGUSR2)))
    path = child.lines_out
    deadline = time.monotonic() + 3
    while (path is None or not path.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the target writes its counts once it handles the signal
    if path is None or not path.exists() or len(window) != 2:
        return None
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    path.unlink()
    round_trips = calls * (window[1] - window[0]) / loadgen.FRAME_S
    total = sum(int(n) for n, _, _ in rows)
    top = [(int(n) / round_trips, function, filename) for n, function, filename in rows]
    return LineCount(total / round_trips, round_trips, top, result.summary()["latency_ms"]["p99"])


def target_url(name: str, port: int) -> str:
    """The URL VAIC calls the target at."""
    return f"ws://127.0.0.1:{port}{PATHS.get(TARGETS[name.partition('@')[0]][0], '/')}"


class PortTaken(TargetFailed):
    """Another process took the port between :func:`free_port` and the target's bind."""


def listeners(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (``/proc/net/tcp``, IPv4)."""
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def owns_port(pid: int, port: int) -> bool:
    inodes = {f"socket:[{inode}]" for inode in listeners(port)}
    for member in process_tree(pid):
        try:
            fds = os.listdir(f"/proc/{member}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{member}/fd/{fd}") in inodes:
                    return True
            except OSError:
                continue
    return False


def wait_listening(child: Child, port: int) -> None:
    """Until the target listens on ``port``: the target itself, not whoever else may have
    taken the port meanwhile on a machine others share."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive():
            tail = child.log_tail()
            error = PortTaken if "already in use" in tail else TargetFailed
            raise error(f"{child.name} exited at start:\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
            continue
        if owns_port(child.pid, port):
            return
        time.sleep(0.05)  # someone else's listener: ours fails to bind and exits
    raise TargetFailed(f"{child.name} did not listen on port {port} in {START_TIMEOUT_S} s")


def ready_target(name: str, agent_url: str, logdir: Path, cores: Cores) -> tuple[Child, int]:
    """:func:`start_target` until it listens, on another port if its port was taken."""
    for attempt in range(3):
        child, port = start_target(name, agent_url, logdir, cores)
        try:
            wait_listening(child, port)
            return child, port
        except PortTaken:
            child.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


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


def core_ticks() -> dict[int, tuple[int, int]]:
    """Busy and total clock ticks of each CPU since boot (``/proc/stat``), whoever ran:
    on a shared machine other jobs' work shows here and not in our processes' times."""
    ticks = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *fields = line.split()
                # user nice system idle iowait irq softirq steal
                values = [int(v) for v in fields[:8]]
                ticks[int(name[3:])] = (sum(values) - values[3] - values[4], sum(values))
    return ticks


def core_busy(start: dict[int, tuple[int, int]], end: dict[int, tuple[int, int]],
              cpus: set[int] | None) -> float | None:
    """The busiest of ``cpus`` between two readings of :func:`core_ticks`, 0..1."""
    if not cpus:
        return None
    shares = [(end[c][0] - start[c][0]) / (end[c][1] - start[c][1])
              for c in cpus if c in start and c in end and end[c][1] > start[c][1]]
    return round(max(shares), 3) if shares else None


@dataclass
class Snapshot:
    at: float
    target_user: float
    target_sys: float
    agent_cpu: float
    own_cpu: float
    cores: dict[int, tuple[int, int]]

    @property
    def target_cpu(self) -> float:
        return self.target_user + self.target_sys


def snapshot(target: Child, agent: Child) -> Snapshot:
    user, system = cpu_times(target.pid)
    return Snapshot(time.monotonic(), user, system, cpu_seconds(agent.pid), time.process_time(),
                    core_ticks())


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Suite:
    plan: Plan
    cores: Cores
    logdir: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    barge: list[dict[str, Any]] = field(default_factory=list)
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> line count
    errors: list[str] = field(default_factory=list)

    def warm_up(self, url: str) -> None:
        """One short call: first-use imports and caches are not counted against calls."""
        cfg = loadgen.LoadConfig(url=url, calls=2, duration_s=0.6 if self.plan.quick else 1.0,
                                 ramp_s=0.0, warmup_s=0.0, token=TOKEN, drain_s=0.3)
        loadgen.run_blocking(cfg)
        time.sleep(0.3)

    def count(self, target: str, child: Child, url: str) -> None:
        """After a target's first measured run, in the same process: its Python lines
        per round trip (deterministic, so once per target is enough)."""
        plan = self.plan
        if not plan.line_calls or target in self.lines or child.lines_out is None:
            return
        counted = count_lines(child, url, calls=plan.line_calls, window_s=plan.line_window_s,
                              ramp_s=0.3, warmup_s=0.3)
        if counted is not None:
            self.lines[target] = {
                "per_round_trip": round(counted.per_round_trip, 1),
                "steady": counted.steady,
                "traced_p99_ms": counted.p99_ms,
                "round_trips": round(counted.round_trips),
                "calls": plan.line_calls,
                "top": [[round(n, 2), fn, short_path(where)] for n, fn, where in counted.top[:25]],
            }

    def echo_run(self, target: str, calls: int, repeat: int) -> dict[str, Any]:
        plan = self.plan
        agent, agent_url = start_agent(echo_agent_mode(plan.load), self.logdir, self.cores)
        try:
            wait_agent(agent)
            child, port = ready_target(target, agent_url, self.logdir, self.cores)
        except TargetFailed:
            agent.stop()
            raise
        try:
            url = target_url(target, port)
            self.warm_up(url)
            idle_kb = memory_kb(child.pid, "VmRSS")
            snaps: dict[str, Snapshot] = {}
            hooks = loadgen.Hooks(
                on_window_start=lambda: snaps.__setitem__("start", snapshot(child, agent)),
                on_window_end=lambda: snaps.__setitem__("end", snapshot(child, agent)),
            )
            cfg = loadgen.LoadConfig(url=url, calls=calls, duration_s=plan.duration_s,
                                     ramp_s=plan.ramp_s, warmup_s=plan.warmup_s, token=TOKEN)
            result = run_echo_calls(agent, cfg, hooks)
            peak_kb = memory_kb(child.pid, "VmHWM")
            if not child.alive():
                raise TargetFailed(f"{target} died during the run:\n{child.log_tail()}")
            self.count(target, child, url)
        finally:
            stop_all(child, agent)
        return measurements(target, calls, repeat, result, snaps, idle_kb, peak_kb, self.cores)

    def barge_run(self, target: str) -> dict[str, Any]:
        plan = self.plan
        agent, agent_url = start_agent("script", self.logdir, self.cores)
        try:
            wait_agent(agent)
            child, port = ready_target(target, agent_url, self.logdir, self.cores)
        except TargetFailed:
            agent.stop()
            raise
        try:
            cfg = loadgen.LoadConfig(url=target_url(target, port), calls=plan.barge_calls,
                                     duration_s=plan.barge_duration_s,
                                     ramp_s=0.5 if plan.quick else 1.0, warmup_s=0.0,
                                     token=TOKEN, barge_in=True, drain_s=0.3)
            result = loadgen.run_blocking(cfg)
            if not child.alive():
                raise TargetFailed(f"{target} died during the barge-in run:\n{child.log_tail()}")
        finally:
            stop_all(child, agent)
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
                    counted_before = target in self.lines
                    try:
                        run = self.echo_run(target, calls, repeat)
                    except TargetFailed as exc:
                        self.errors.append(str(exc))
                        print(f"  FAILED: {exc}")
                        continue
                    self.runs.append(run)
                    counted = None if counted_before else self.lines.get(target, {}).get(
                        "per_round_trip")
                    print(f"  {run['cpu_ms_per_call_s']:.2f} ms/call-s, "
                          f"p50 {run['latency_ms']['p50']} ms, lost {run['lost']}, "
                          f"failed calls {run['failed_calls']}"
                          + (f", {counted} lines per round trip" if counted else "")
                          + "".join(f"; LOAD-BOUND: {why}" for why in run["load_saturated"]),
                          flush=True)
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
    snaps: dict[str, Snapshot], idle_kb: int, peak_kb: int, cores: Cores,
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
        target_cpu_total_busy=core_busy(start.cores, end.cores, cores.target)
        if start and end else None,
        load_cpu_total_busy=core_busy(start.cores, end.cores, cores.load)
        if start and end else None,
    )
    record["load_saturated"] = load_saturation(record)
    return record


def load_busy(run: dict[str, Any]) -> list[str]:
    """Why the load side's core may have been too busy in this run, if it was."""
    why = []
    if (run["load_core_busy"] or 0.0) > BUSY_LIMIT:
        why.append(f"load generator and agent {run['load_core_busy']:.0%} busy")
    if (run["load_cpu_total_busy"] or 0.0) > CORE_LIMIT:
        why.append(f"load core {run['load_cpu_total_busy']:.0%} busy with every job on it")
    return why


def load_saturation(run: dict[str, Any]) -> list[str]:
    """Why the load side may have limited this run, if it did: then the run's latency
    and lost frames are partly the load side's, and the suite does not report them.
    Its core too busy (:func:`load_busy`), or its timers late."""
    why = load_busy(run)
    lag = run["send_lag_ms"]["p99"]
    if lag is not None and lag > LAG_LIMIT_MS:
        why.append(f"load generator's timers {lag:.1f} ms late at p99")
    return why


# --- summary ----------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def aggregate(runs: list[dict[str, Any]], targets: tuple[str, ...],
              lines: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per target and concurrency: medians with min-max over the repeats.

    Latency and lost frames come only from runs whose load side kept up
    (:func:`load_saturation`); CPU from every run, since the target's CPU time is its own
    whoever else is busy."""
    floor_cpu = {(r["calls"], r["repeat"]): r["cpu_ms_per_call_s"]
                 for r in runs if r["target"] == "floor"}
    lines = lines or {}
    rows = []
    for target in targets:
        for calls in sorted({r["calls"] for r in runs}):
            mine = [r for r in runs if r["target"] == target and r["calls"] == calls]
            if not mine:
                continue
            valid = [r for r in mine if not r.get("load_saturated")]
            ratios = [r["cpu_ms_per_call_s"] / floor_cpu[(calls, r["repeat"])]
                      for r in mine if floor_cpu.get((calls, r["repeat"]))]
            cpu = spread([r["cpu_ms_per_call_s"] for r in mine])
            rows.append({
                "target": target,
                "calls": calls,
                "repeats": len(mine),
                "cpu_ms_per_call_s": cpu,
                "ratio_to_floor": spread(ratios),  # per repeat, then the median
                "calls_per_core": round(1000 / cpu["median"], 1) if cpu and cpu["median"] else None,
                "lines_per_round_trip": lines.get(target, {}).get("per_round_trip"),
                "lines_steady": lines.get(target, {}).get("steady", True),
                "latency_p50_ms": spread([r["latency_ms"]["p50"] for r in valid]),
                "latency_p99_ms": spread([r["latency_ms"]["p99"] for r in valid]),
                "latency_max_ms": max((r["latency_ms"]["max"] or 0.0 for r in valid),
                                      default=None),
                "load_bound_repeats": len(mine) - len(valid),
                "lost_frames": sum(r["lost"] for r in valid),
                "sent_frames": sum(r["sent"] for r in valid),
                "failed_calls": sum(r["failed_calls"] for r in valid),
                "lost_frames_load_bound": sum(r["lost"] for r in mine if r not in valid),
                "rss_kb_per_call": spread([r["rss_kb_per_call"] for r in mine]),
                "target_core_busy": spread([r["target_core_busy"] for r in mine]),
                "load_core_busy_max": max((r["load_core_busy"] or 0.0) for r in mine),
                "load_cpu_total_busy_max": max((r.get("load_cpu_total_busy") or 0.0)
                                               for r in mine),
                "send_lag_p99_ms_max": max((r.get("send_lag_ms", {}).get("p99") or 0.0)
                                           for r in mine),
            })  # fmt: skip
    return rows


def write_results(doc: dict[str, Any], out: Path, name: str, table: str) -> Path:
    """A script's results as ``out/name`` (JSON), then its table and where it went."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(table)
    elapsed = f"; elapsed {doc['elapsed_s']} s" if "elapsed_s" in doc else ""
    print(f"\nwrote {path}{elapsed}")
    return path


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


LOADS: Final = ("python", "c")
LOAD_HELP: Final = ("the echo runs' load side: python (loadgen.py and echo_agent.py, "
                    "comparable with earlier runs) or c (loadside.c: twice the calls per core)")


def check_load(ap: argparse.ArgumentParser, load: str) -> None:
    """Build the compiled load side now if it is asked for: a missing compiler is a usage
    error, not a target that failed."""
    if load == "c":
        try:
            loadside.build()
        except loadside.LoadSideUnavailable as exc:
            ap.error(str(exc))


def parse_args(argv: list[str] | None) -> Plan:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 calls x 4.5 s, 1 repeat")
    ap.add_argument("--targets", default=None,
                    help=f"comma-separated, of: {', '.join(TARGETS)}")
    ap.add_argument("--calls", default="50,100,200", help="concurrency levels, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of audio per call")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds over which calls start")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds after the ramp")
    ap.add_argument("--barge-calls", type=int, default=20, help="barge-in run calls; 0 skips")
    ap.add_argument("--barge-duration", type=float, default=8.0)
    ap.add_argument("--line-window", type=float, default=3.0,
                    help="seconds of 10 calls over which each target's lines are counted")
    ap.add_argument("--base", metavar="REF",
                    help="beside each bridge target, the same on commit REF's sources "
                         "(TARGET@REF, interleaved): a change measured before and after")
    ap.add_argument("--load", choices=LOADS, default="python", help=LOAD_HELP)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--port-base", type=int, metavar="PORT",
                    help="give the agents and the bridges ports PORT, PORT+1, ... in turn "
                         "(default: free ones), e.g. where only a range is open")
    args = ap.parse_args(argv)
    if args.port_base is not None and not 1024 <= args.port_base <= 60000:
        ap.error("--port-base must be between 1024 and 60000")
    use_ports(args.port_base)
    check_load(ap, args.load)
    chosen = args.targets or ",".join(QUICK_TARGETS if args.quick else DEFAULT_TARGETS)
    targets = tuple(t for t in chosen.split(",") if t)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; known: {list(TARGETS)}")
    if args.quick:
        return Plan(targets=targets, concurrency=(10,), repeats=1, duration_s=4.5, ramp_s=1.0,
                    warmup_s=0.5, barge_calls=4, barge_duration_s=3.0,
                    out=args.out / "quick", quick=True, line_window_s=1.2, load=args.load)
    concurrency = tuple(int(c) for c in args.calls.split(","))
    if args.duration <= args.ramp + args.warmup + 1:
        ap.error("--duration must exceed --ramp + --warmup by more than a second")
    return Plan(targets=targets, concurrency=concurrency, repeats=args.repeats,
                duration_s=args.duration, ramp_s=args.ramp, warmup_s=args.warmup,
                barge_calls=args.barge_calls, barge_duration_s=args.barge_duration,
                out=args.out, quick=False, line_window_s=args.line_window, base=args.base,
                load=args.load)


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
        if plan.base:
            ref = export_base(plan.base, Path(logdir) / "base")
            info["base"] = ref
            plan = dataclasses.replace(plan, targets=tuple(
                name for t in plan.targets
                for name in ((t,) if t in YARDSTICKS else (t, f"{t}@{ref}"))))
        suite = Suite(plan, cores, Path(logdir))
        suite.run()
    rows = aggregate(suite.runs, plan.targets, suite.lines)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "created": stamp,
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": info,
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in plan.__dict__.items()},
        "summary": rows,
        "barge_in": suite.barge,
        "lines": suite.lines,
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
