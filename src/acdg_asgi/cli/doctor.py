"""``acdg doctor`` (``acdg serve --check``): check a deployment before it takes calls.

For exactly what ``acdg serve`` would serve with the same arguments (``APP``, or the
bridge built from the settings): one real handshake with each bridge's agent endpoint and
settings (connect, ``Welcome``, ``Settings``, ``SettingsApplied``), the shared store, the
listening addresses (the bot's port and ``--ops-port``) and the TLS files; each is
reported OK or with what to fix, and the exit status is 1 when anything failed, so it
serves as a Kubernetes startup check (an init container running ``acdg serve --check``
with the container's arguments: the port must still be free, so not a probe inside the
running container).

    OK    agent   wss://agent.deepgram.com/v1/agent/converse: settings applied in 0.42 s
    FAIL  store   RedisStore('redis://redis:6379/0'): redis: Error 111 connecting ...
"""

from __future__ import annotations

import logging
import time

import anyio
import msgspec

from ..app import BridgeApp
from ..audio import FORMATS
from ..errors import AgentClosed, AgentConnectError, ConfigError
from ..protocols import deepgram as dg
from ..transports.agent_base import AgentConnection, shown_url
from . import checks
from .serve import prepare
from .settings import ServeSettings

__all__ = [
    "Finding", "check_agent", "check_listen", "check_store", "check_tls", "render", "run",
]


class Finding(msgspec.Struct, frozen=True):
    what: str  # agent, store, listen, tls
    ok: bool
    detail: str


async def check_agent(bridge: BridgeApp) -> Finding:
    """One handshake as a call makes it, with the bridge's URL, key and settings."""
    url = shown_url(bridge.deepgram_url)
    config = bridge.static_agent
    timeout = bridge.limits.handshake_timeout_s
    started = time.monotonic()
    try:
        with anyio.fail_after(timeout):
            conn = await bridge.connector.connect(bridge.deepgram_url, bridge.agent_headers)
            try:
                if not isinstance(await _next_message(conn), dg.Welcome):
                    return Finding("agent", False, f"{url}: the agent did not start with Welcome")
                if config is None:
                    return Finding("agent", True, f"{url}: the agent answered (Welcome); its "
                                   "settings come per call from the factory, checked then")
                audio = FORMATS[bridge.media_formats[0]].deepgram_audio()
                await conn.send_text(dg.encode(config.settings(audio)))
                while True:
                    msg = await _next_message(conn)
                    if isinstance(msg, dg.SettingsApplied):
                        took = time.monotonic() - started
                        return Finding("agent", True, f"{url}: settings applied in {took:.2f} s")
                    if isinstance(msg, dg.Error):
                        return Finding("agent", False, f"{url}: the agent refused the settings "
                                       f"({msg.code}: {msg.description}): check [agent] in "
                                       "the TOML file, or agent=")
            finally:
                await conn.close()
    except AgentConnectError as exc:
        return Finding("agent", False, str(exc))
    except AgentClosed as exc:
        return Finding("agent", False, f"{url}: the agent closed the connection during the "
                       f"handshake ({exc})")
    except TimeoutError:
        return Finding("agent", False, f"{url}: no handshake within {timeout:g} s")


async def _next_message(conn: AgentConnection) -> dg.ServerMessage | dg.UnknownMessage:
    while True:
        frame = await conn.recv()
        if isinstance(frame, str):
            return dg.decode_server(frame)


async def check_store(bridge: BridgeApp) -> Finding:
    cluster = bridge.cluster
    if cluster.store is None:
        return Finding("store", True, "none: this instance keeps its calls to itself")
    await cluster.check_store()
    if cluster.store_state == "up":
        return Finding("store", True, f"{cluster.store!r}: reachable")
    return Finding("store", False, f"{cluster.store!r}: {cluster.store_error}: check "
                   "ACDG_REDIS_URL (or store=) and that Redis answers from here")


def check_listen(host: str, port: int, what: str = "listen") -> Finding:
    """Whether ``host:port`` can be bound now (it is released at once)."""
    try:
        checks.bind(host, port).close()
    except ConfigError as exc:
        return Finding(what, False, str(exc))
    return Finding(what, True, f"{host}:{port}: free")


def check_tls(certfile: str | None, keyfile: str | None) -> Finding:
    try:
        context = checks.load_tls(certfile, keyfile)
    except ConfigError as exc:
        return Finding("tls", False, str(exc))
    if context is None:
        return Finding("tls", True, "no TLS files: plain ws:// (terminate TLS in front, or "
                       "give a certificate and its key)")
    return Finding("tls", True, f"{certfile}: certificate and key load")


def render(findings: list[Finding]) -> str:
    return "\n".join(f"{'OK' if f.ok else 'FAIL':5} {f.what:7} {f.detail}" for f in findings)


async def diagnose(settings: ServeSettings, bridges: list[BridgeApp]) -> list[Finding]:
    """The findings for what ``acdg serve`` would serve with ``settings``."""
    server = settings.server
    findings = [await check_agent(bridge) for bridge in bridges]
    stores: dict[str, BridgeApp] = {repr(b.cluster.store): b for b in bridges}
    findings += [await check_store(bridge) for bridge in stores.values()]
    findings.append(check_listen(server.bind_host, server.port))
    if server.ops_port is not None:
        findings.append(check_listen(server.bind_host, server.ops_port, "ops"))
    findings.append(check_tls(server.ssl_certfile, server.ssl_keyfile))
    return findings


def run(settings: ServeSettings) -> int:
    """``acdg doctor``, ``acdg serve --check``: print each finding; 0 when all are OK, else
    1. Settings that ``acdg serve`` would refuse raise :class:`ConfigError` (exit 2)."""
    logging.disable(logging.CRITICAL)  # each finding says it all, once
    _, bridges = prepare(settings)
    findings = anyio.run(diagnose, settings, bridges)
    print(render(findings))
    return 0 if all(f.ok for f in findings) else 1
