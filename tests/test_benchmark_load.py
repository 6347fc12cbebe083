"""The benchmarks' compiled load side tells the truth about a real bridge.

``benchmarks/loadside.c`` replaces the Python echo agent and load generator where the knee
of a setup needs more calls than one core of Python load drives, so its figures must mean
what ``loadgen.py``'s mean. Against ``acdg serve`` in its own process, on loopback: every
frame it sends comes back and is matched to its call, a run counts as many frames and
call-seconds as the Python load generator's run does, and a refused upgrade or
connection is reported as a failed call with its reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from servers import ROOT, free_port, process, wait_for_http

BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import loadside  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler to build benchmarks/loadside.c")

TOKEN = "bench-token"


@pytest.fixture
def load_side() -> Iterator[tuple[subprocess.Popen[str], str]]:
    with subprocess.Popen(loadside.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        agent_url = proc.stdout.readline().strip()
        assert agent_url.startswith("ws://127.0.0.1:"), agent_url
        try:
            yield proc, agent_url
        finally:
            proc.stdin.close()
            proc.wait(10)


@pytest.fixture
def bridge(load_side: tuple[subprocess.Popen[str], str], tmp_path: Path) -> Iterator[str]:
    """``acdg serve`` as the benchmark runs it, calling the load side's agent."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "targets" / "acdg_serve.py"), "--port", str(port),
            "--agent-url", load_side[1], "--token", TOKEN]
    with process(argv, tmp_path / "bridge.log") as server:
        anyio.run(wait_for_http, f"http://127.0.0.1:{port}/", server)
        yield f"ws://127.0.0.1:{port}/"


def config(url: str, token: str = TOKEN) -> loadgen.LoadConfig:
    return loadgen.LoadConfig(url=url, calls=4, duration_s=2.5, ramp_s=0.3, warmup_s=0.3,
                              token=token, drain_s=0.5)


def test_every_frame_comes_back_matched_to_its_call_as_the_python_load_generator_counts(
    load_side: tuple[subprocess.Popen[str], str], bridge: str
) -> None:
    opened: list[str] = []
    hooks = loadgen.Hooks(on_window_start=lambda: opened.append("start"),
                          on_window_end=lambda: opened.append("end"))
    compiled = loadside.run_calls(load_side[0], config(bridge), hooks)
    python = loadgen.run_blocking(config(bridge))  # the same bridge and agent

    frames = 4 * round(2.5 / loadgen.FRAME_S)
    assert opened == ["start", "end"]
    for result in (compiled, python):
        summary = result.summary()
        assert summary["failures"] == [] and summary["ok_calls"] == 4, summary
        assert (summary["sent"], summary["echoed"], summary["lost"]) == (frames, frames, 0)
        assert (summary["duplicates"], summary["garbled"]) == (0, 0)
        assert summary["setup_ms"]["n"] == 4
    # Frames sent inside the window, each timed once: the same count by either generator,
    # within the few frames a call's phase moves across the window's edges.
    assert abs(len(compiled.latencies_ms) - len(python.latencies_ms)) <= 4 * 2
    assert abs(compiled.call_seconds - python.call_seconds) <= 4 * 2 * loadgen.FRAME_S
    assert all(0 < ms < 1000 for ms in compiled.latencies_ms)


def test_a_refused_upgrade_is_a_failed_call_with_the_servers_status_line(
    load_side: tuple[subprocess.Popen[str], str], bridge: str
) -> None:
    result = loadside.run_calls(load_side[0], config(bridge, token="not-the-token"))
    assert result.ok_calls == 0 and result.sent == 0
    assert len(result.failures) == 4
    assert set(result.failures) == {"handshake: upgrade refused: HTTP/1.1 401 Unauthorized"}, \
        result.failures


def test_a_refused_connection_is_a_failed_call_with_the_reason(
    load_side: tuple[subprocess.Popen[str], str]
) -> None:
    result = loadside.run_calls(load_side[0], config(f"ws://127.0.0.1:{free_port()}/"))
    assert (result.ok_calls, result.sent) == (0, 0)
    assert result.failures == ["connect: Connection refused"] * 4
