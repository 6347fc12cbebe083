"""The ``acdg`` command: demo, call (the VAIC simulator as CI runs it) and serve."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from acdg_asgi import AgentSettings, BridgeApp
from acdg_asgi.cli import main
from acdg_asgi.cli.demo import demo
from acdg_asgi.testing.agent import StandInAgent
from acdg_asgi.testing.server import serve

pytestmark = pytest.mark.anyio


async def test_demo_shows_a_whole_call_and_saves_its_audio(tmp_path: Path) -> None:
    out = io.StringIO()
    wav = tmp_path / "call.wav"
    port = _free_port()  # --port: the bridge there, the stand-in agent on the next one
    assert await demo(wav, out, port) == 0
    text = out.getvalue()
    assert f"bridge on ws://127.0.0.1:{port}/, stand-in Deepgram agent on " \
           f"ws://127.0.0.1:{port + 1}/" in text, text[:200]
    for expected in ("playStream.start", "function lookup_order", "caller pressed 1",
                     "barge-in", "hangup", "session_end: ended", "reply latency",
                     "conformance: clean"):
        assert expected in text, expected
    assert wav.stat().st_size > 44 + 16000 * 2 * 2 * 5  # stereo 16 kHz, over 5 s


async def test_acdg_call_reports_a_clean_run_against_the_bridge(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with StandInAgent() as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hello"), deepgram_url=agent.url,
                           auth="tok", tracing=False)
        async with serve(bridge) as host:
            argv = ["call", f"ws://{host}/", "--token", "tok", "--calls", "2", "--utterances",
                    "1", "--dtmf", "300:5", "--validate", "--json", "--max-duration", "8000"]
            status = await anyio.to_thread.run_sync(main, argv)
            reports = json.loads(capsys.readouterr().out)
            refused = await anyio.to_thread.run_sync(main, ["call", f"ws://{host}/", "--json"])
    assert status == 0
    assert len(reports) == 2 and all(r["violations"] == [] for r in reports)
    assert all(r["validated"] is True and r["media_format"] == "raw/lpcm16" for r in reports)
    assert refused == 2  # no token: the upgrade is refused, the bot cannot be reached


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("demo", "serve", "doctor", "call", "agent", "phone"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        assert "usage: acdg " + command in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_acdg_serve_runs_from_a_config_file_and_drains_on_sigterm(tmp_path: Path) -> None:
    async with StandInAgent() as agent:
        port = _free_port()
        config = tmp_path / "acdg.toml"
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
            f'[bridge]\ndeepgram_url = "{agent.url}"\n\n'
            '[playout]\nlead_ms = 60\n\n[agent]\ngreeting = "Hi"\n'
        )
        env = {**os.environ, "ACDG_TOKEN": "s3cret"}
        # A plain Popen: the server must outlive the awaits below; it logs little to stderr.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "acdg_asgi.cli", "serve", "--config", str(config)],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    await anyio.sleep(0.05)
            status = await anyio.to_thread.run_sync(
                main, ["call", f"ws://127.0.0.1:{port}/", "--token", "s3cret", "--utterances",
                       "1", "--max-duration", "8000"])
            proc.send_signal(signal.SIGTERM)
            _, log = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
        finally:
            proc.kill()
    assert status == 0 and proc.returncode == 0
    assert f"listening on 127.0.0.1 port {port}: ws://127.0.0.1:{port}/ " in log
    assert "auth: bearer token" in log and "s3cret" not in log
    assert "pacing lead 60 ms" in log and "draining" in log
