"""The agent connection's failures, each named with its cause and its fix.

A refusal that a retry cannot change (a wrong key: 401, a wrong path: 404) hangs the
caller up at once with a reason, logs one ERROR naming the URL, the status and what to
check, and is counted. Unreachable hosts and TLS failures name the host. Both connectors
go through an HTTP CONNECT proxy (``proxy=`` or ``HTTPS_PROXY``), here a real one on
loopback. Real uvicorn, the stand-in agent, raw WebSockets as VAIC.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from connect_proxy import ConnectProxy
from vaic_raw import EventLog, vaic

from acdg_asgi import BridgeApp
from acdg_asgi.errors import AgentConnectError, ConfigError
from acdg_asgi.testing.agent import StandInAgent
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call
from acdg_asgi.transports.agent_base import AgentConnector
from acdg_asgi.transports.agent_lean import LeanConnector
from acdg_asgi.transports.agent_websockets import WebsocketsConnector

pytestmark = pytest.mark.anyio

API_KEY = "dg-right-key-0451"
WRONG_KEY = "dg-wrong-key-9917"
HEADERS = {"Authorization": f"Token {API_KEY}"}
CONNECTORS: list[Callable[..., AgentConnector]] = [LeanConnector, WebsocketsConnector]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def metric(text: str, line_start: str) -> float:
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rpartition(" ")[2]) if found else 0.0


async def refused_call(
    bridge: BridgeApp, caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, Any], EventLog, str, list[logging.LogRecord]]:
    """One call whose agent refuses: the hangup VAIC got, the events, /metrics, the errors."""
    log = EventLog(bridge)
    async with serve(bridge) as host, vaic(host) as caller:
        accepted = await caller.initiate()
        assert accepted["type"] == "session.accepted"
        hangup = await caller.wait_for("activities")
        await log.wait_for("error")
        await caller.end()
        await log.wait_for("session_end")
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://{host}/metrics")).text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    return hangup.msg["activities"][0], log, metrics, errors


@pytest.mark.parametrize("make", CONNECTORS, ids=["lean", "websockets"])
async def test_a_wrong_key_is_not_retried_and_says_what_to_check(
    make: Callable[..., AgentConnector], caplog: pytest.LogCaptureFixture
) -> None:
    async with StandInAgent(api_key=API_KEY) as agent:
        bridge = BridgeApp(deepgram_url=agent.url, deepgram_api_key=WRONG_KEY,
                           connector=make(proxy=None), metrics=True, tracing=False)
        activity, log, metrics, errors = await refused_call(bridge, caplog)
    assert agent.requests == 1  # not retried
    assert activity["name"] == "hangup"
    assert activity["activityParams"]["hangupReason"] == "agent refused the connection (HTTP 401)"
    (error,) = log.of("error")
    assert (error.code, error.source, error.fatal, error.status) == (
        "AGENT_REJECTED", "deepgram", True, 401)
    assert not log.of("warning")  # no "reconnecting"
    assert log.of("session_end")[0].reason == "error"
    (line,) = [r.getMessage() for r in errors]
    assert agent.url in line and "HTTP 401" in line and "DEEPGRAM_API_KEY" in line
    assert WRONG_KEY not in caplog.text and API_KEY not in caplog.text
    assert metric(metrics, 'acdg_agent_rejected_total{status="401"}') == 1
    assert metric(metrics, 'acdg_errors_total{source="deepgram"}') == 1


@pytest.mark.parametrize("make", CONNECTORS, ids=["lean", "websockets"])
async def test_a_wrong_path_is_not_retried_and_names_the_url(
    make: Callable[..., AgentConnector], caplog: pytest.LogCaptureFixture
) -> None:
    async with StandInAgent() as agent:
        url = agent.url.replace("/v1/agent/converse", "/v1/converse")
        bridge = BridgeApp(deepgram_url=url, deepgram_api_key=API_KEY,
                           connector=make(proxy=None), metrics=True, tracing=False)
        activity, _, metrics, errors = await refused_call(bridge, caplog)
    assert agent.requests == 1
    assert activity["activityParams"]["hangupReason"] == "agent refused the connection (HTTP 404)"
    (line,) = [r.getMessage() for r in errors]
    assert url in line and "HTTP 404" in line and "check the URL" in line
    assert "wss://agent.deepgram.com/v1/agent/converse" in line
    assert metric(metrics, 'acdg_agent_rejected_total{status="404"}') == 1


async def test_no_key_at_all_says_to_set_one() -> None:
    async with StandInAgent(api_key=API_KEY) as agent:
        with pytest.raises(AgentConnectError) as refused:
            await LeanConnector(proxy=None).connect(agent.url, {})
    assert refused.value.status == 401 and not refused.value.retryable
    assert "wants an API key" in str(refused.value) and "DEEPGRAM_API_KEY" in str(refused.value)


async def test_a_server_error_is_retried() -> None:
    async with StandInAgent() as agent:
        agent.refuse_next(1, status=503)
        with pytest.raises(AgentConnectError) as failed:
            await LeanConnector(proxy=None).connect(agent.url, HEADERS)
        assert failed.value.retryable and failed.value.status == 503
        conn = await LeanConnector(proxy=None).connect(agent.url, HEADERS)
        await conn.close()


@pytest.mark.parametrize("make", CONNECTORS, ids=["lean", "websockets"])
async def test_unreachable_hosts_are_named(make: Callable[..., AgentConnector]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    connector = make(proxy=None)
    with pytest.raises(AgentConnectError) as refused:
        await connector.connect(f"ws://127.0.0.1:{port}/v1/agent/converse", HEADERS)
    assert f"nothing listens at 127.0.0.1:{port}" in str(refused.value)
    assert refused.value.retryable
    with pytest.raises(AgentConnectError) as unknown:
        await connector.connect("wss://agent.deepgram.invalid/v1/agent/converse", HEADERS)
    assert "cannot resolve agent.deepgram.invalid" in str(unknown.value)
    assert "wss://agent.deepgram.invalid/v1/agent/converse" in str(unknown.value)


@pytest.mark.parametrize("make", CONNECTORS, ids=["lean", "websockets"])
async def test_a_certificate_that_does_not_verify_names_the_host(
    make: Callable[..., AgentConnector], ca: trustme.CA
) -> None:
    async with StandInAgent(ssl=server_context(ca)) as agent:
        assert agent.url.startswith("wss://127.0.0.1:")
        with pytest.raises(AgentConnectError) as failed:
            await make(proxy=None).connect(agent.url, HEADERS)
        port = agent.url.split(":")[2].split("/")[0]
        assert f"TLS with 127.0.0.1:{port}" in str(failed.value)
        assert "certificate does not verify" in str(failed.value)
        assert not failed.value.retryable
        conn = await make(proxy=None, ssl=client_context(ca)).connect(agent.url, HEADERS)
        await conn.close()


@pytest.mark.parametrize("make", CONNECTORS, ids=["lean", "websockets"])
@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_the_agent_connection_goes_through_a_connect_proxy(
    make: Callable[..., AgentConnector], secure: bool, ca: trustme.CA
) -> None:
    server = server_context(ca) if secure else None
    client = client_context(ca) if secure else None
    async with StandInAgent(api_key=API_KEY, ssl=server) as agent, \
            ConnectProxy(credentials=("egress", "pa55")) as proxy:
        target = agent.url.split("/")[2]
        with pytest.raises(AgentConnectError) as refused:
            await make(proxy=proxy.url, ssl=client).connect(agent.url, HEADERS)
        assert "HTTP 407" in str(refused.value) and "proxy credentials" in str(refused.value)
        assert not refused.value.retryable and "pa55" not in str(refused.value)
        conn = await make(proxy=proxy.url_with("egress", "pa55"), ssl=client).connect(
            agent.url, HEADERS)
        try:
            assert "Welcome" in str(await conn.recv())
        finally:
            await conn.close()
    assert proxy.tunnels == [target]
    assert proxy.refused == [407]


def proxy_and_cas_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, proxy: ConnectProxy, ca: trustme.CA, tmp_path: Path
) -> None:
    """``HTTPS_PROXY`` names ``proxy``, nothing bypasses it, ``SSL_CERT_FILE`` trusts ``ca``."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


async def test_https_proxy_from_the_environment_carries_a_whole_call(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with StandInAgent(api_key=API_KEY, ssl=server_context(ca)) as agent, \
            ConnectProxy() as proxy:
        proxy_and_cas_from_the_environment(monkeypatch, proxy, ca, tmp_path)
        bridge = BridgeApp(deepgram_url=agent.url, deepgram_api_key=API_KEY, tracing=False)
        async with serve(bridge) as host:
            monkeypatch.setenv("NO_PROXY", "127.0.0.1:" + host.rpartition(":")[2])
            report = await run_call(f"ws://{host}/")
    assert report.ok, report.render()
    assert report.play_streams
    assert agent.url.split("/")[2] in proxy.tunnels


@pytest.mark.parametrize("make", CONNECTORS, ids=["lean", "websockets"])
async def test_a_connectors_calls_share_the_cas_and_the_proxy_it_looked_up_once(
    make: Callable[..., AgentConnector], ca: trustme.CA, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Loading the CAs takes tens of milliseconds: once per call, on the event loop, every
    # live call would hear it whenever another one starts.
    loads: list[object] = []
    load = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        loads.append(args)
        return load(*args, **kwargs)

    async with StandInAgent(api_key=API_KEY, ssl=server_context(ca)) as agent, \
            ConnectProxy() as proxy:
        proxy_and_cas_from_the_environment(monkeypatch, proxy, ca, tmp_path)
        monkeypatch.setattr(ssl, "create_default_context", counted)
        connector = make()
        for _ in range(3):
            conn = await connector.connect(agent.url, HEADERS)
            try:
                assert "Welcome" in str(await conn.recv())
            finally:
                await conn.close()
    assert proxy.tunnels == [agent.url.split("/")[2]] * 3
    assert len(loads) == 1


async def test_a_bad_proxy_setting_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"socks5://.*WebsocketsConnector"):
        LeanConnector(proxy="socks5://127.0.0.1:1080")
    with pytest.raises(ConfigError, match="hostname"):
        LeanConnector(proxy="http://")
