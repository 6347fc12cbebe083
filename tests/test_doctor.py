"""``acdg doctor`` as a deployment runs it: a process of its own against the stand-in agent
(its key enforced), a store, an address and TLS files; OK or the fix for each, and an
exit status a Kubernetes startup check can use."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import anyio
import pytest
import trustme

from acdg_asgi.testing.agent import StandInAgent

pytestmark = pytest.mark.anyio

API_KEY = "dg-doctor-key-2718"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def doctor(env: dict[str, str], *args: str, command: tuple[str, ...] = ("doctor",),
                 cwd: Path | None = None) -> tuple[int, list[str]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ACDG_", "DEEPGRAM_"))}
    done = await anyio.run_process([sys.executable, "-m", "acdg_asgi.cli", *command, *args],
                                   env={**clean, **env}, check=False, cwd=cwd)
    out = done.stdout.decode()
    assert done.stderr.decode() == "", done.stderr.decode()
    return done.returncode, out.splitlines()


async def test_a_healthy_deployment_passes(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("bridge.example.com")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    async with StandInAgent(api_key=API_KEY) as agent:
        code, lines = await doctor(
            {"DEEPGRAM_URL": agent.url, "DEEPGRAM_API_KEY": API_KEY},
            "--port", str(free_port()), "--ssl-certfile", str(tmp_path / "cert.pem"),
            "--ssl-keyfile", str(tmp_path / "key.pem"))
        settings = agent.connections[0].settings
    assert code == 0, lines
    assert [line.split()[:2] for line in lines] == [
        ["OK", "agent"], ["OK", "store"], ["OK", "listen"], ["OK", "tls"]]
    assert "settings applied" in lines[0] and agent.url in lines[0]
    assert settings is not None and not isinstance(settings.agent, str)
    assert settings.agent.greeting == "Hello! How can I help you today?"  # acdg serve's agent


async def test_each_fault_is_named_with_its_fix(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, other = ca.issue_cert("a.example.com"), ca.issue_cert("b.example.com")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "key.pem"))  # not the cert's key
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with StandInAgent(api_key=API_KEY) as agent:
            code, lines = await doctor(
                {"DEEPGRAM_URL": agent.url, "DEEPGRAM_API_KEY": "wrong",
                 "ACDG_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
                "--port", str(port), "--ssl-certfile", str(tmp_path / "cert.pem"),
                "--ssl-keyfile", str(tmp_path / "key.pem"))
    assert code == 1
    agent_line, store_line, listen_line, tls_line = lines
    assert agent_line.startswith("FAIL  agent ")
    assert "HTTP 401" in agent_line and "DEEPGRAM_API_KEY" in agent_line
    assert "wrong" not in agent_line.replace("wrong accept", "")
    assert store_line.startswith("FAIL  store ") and "ACDG_REDIS_URL" in store_line
    assert listen_line.startswith("FAIL  listen ") and "another process listens" in listen_line
    assert tls_line.startswith("FAIL  tls ") and "the key the certificate's own" in tls_line


async def test_a_wrong_path_fails_the_check() -> None:
    async with StandInAgent() as agent:
        code, lines = await doctor(
            {"DEEPGRAM_URL": agent.url.replace("/agent/", "/agents/")}, "--port",
            str(free_port()))
    assert code == 1
    assert lines[0].startswith("FAIL  agent ") and "HTTP 404" in lines[0]


APP = """\
from starlette.applications import Starlette
from acdg_asgi import AgentSettings, BridgeApp

bridge = BridgeApp(agent=AgentSettings(greeting="Thanks for calling the app."))
app = Starlette(routes=bridge.routes("/audiocodes"), lifespan=bridge.lifespan)
"""


async def test_serve_check_checks_what_serve_would_serve(tmp_path: Path) -> None:
    """``acdg serve APP --check``: the app's own bridge (its agent settings), both ports;
    nothing is served, and the ports are free again after."""
    (tmp_path / "voiceapp.py").write_text(APP)
    port, ops = free_port(), free_port()
    async with StandInAgent(api_key=API_KEY) as agent:
        env = {"DEEPGRAM_URL": agent.url, "DEEPGRAM_API_KEY": API_KEY}
        code, lines = await doctor(env, "voiceapp:app", "--check", "--port", str(port),
                                   "--ops-port", str(ops), command=("serve",), cwd=tmp_path)
        settings = agent.connections[0].settings
        wrong, failed = await doctor({**env, "DEEPGRAM_API_KEY": "wrong"}, "voiceapp:app",
                                     "--check", "--port", str(port), command=("serve",),
                                     cwd=tmp_path)
    assert code == 0, lines
    assert [line.split()[:2] for line in lines] == [
        ["OK", "agent"], ["OK", "store"], ["OK", "listen"], ["OK", "ops"], ["OK", "tls"]]
    assert f":{ops}: free" in lines[3]
    assert settings is not None and not isinstance(settings.agent, str)
    assert settings.agent.greeting == "Thanks for calling the app."
    for taken in (port, ops):
        with socket.socket() as s:
            s.bind(("127.0.0.1", taken))  # nothing listens there: the check served nothing
    assert wrong == 1 and failed[0].startswith("FAIL  agent ") and "HTTP 401" in failed[0]
