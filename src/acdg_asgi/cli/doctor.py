"""``acdg doctor``: check a deployment before it takes calls.

One real handshake with the configured agent endpoint and settings (connect, ``Welcome``,
``Settings``, ``SettingsApplied``), the shared store, the listening address and the TLS
files; each is reported OK or with what to fix, and the exit status is 1 when anything
failed, so it serves as a Kubernetes startup check (an init container, or a
``startupProbe`` running ``acdg doctor``).

    OK    agent   wss://agent.deepgram.com/v1/agent/converse: settings applied in 0.42 s
    FAIL  store   RedisStore('redis://redis:6379/0'): redis: Error 111 connecting ...
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import time

import anyio
import msgspec

from ..app import BridgeApp
from ..audio import FORMATS
from ..errors import AgentClosed, AgentConnectError
from ..protocols import deepgram as dg
from ..transports.agent_base import AgentConnection, shown_url
from .serve import build_app
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


def check_listen(host: str, port: int) -> Finding:
    """Whether ``host:port`` can be bound now (it is released at once)."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except socket.gaierror as exc:
        return Finding("listen", False, f"{where}: {host!r} is not an address ({exc.strerror}):"
                       " use 0.0.0.0, 127.0.0.1 or an address of this machine")
    except OSError as exc:
        fixes = {
            errno.EADDRINUSE: "another process listens there: stop it or choose another port",
            errno.EADDRNOTAVAIL: "not an address of this machine: use 0.0.0.0 or one of its own",
            errno.EACCES: "ports below 1024 need privileges: use a higher port",
        }
        fix = fixes.get(exc.errno or 0, exc.strerror or str(exc))
        return Finding("listen", False, f"{where}: {exc.strerror}: {fix}")
    return Finding("listen", True, f"{where}: free")


def check_tls(certfile: str | None, keyfile: str | None) -> Finding:
    if not certfile and not keyfile:
        return Finding("tls", True, "no TLS files: plain ws:// (terminate TLS in front, or "
                       "give a certificate and its key)")
    if not certfile or not keyfile:
        return Finding("tls", False, "a certificate needs its key, and a key its certificate")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        return Finding("tls", False, f"{exc.filename}: no such file")
    except ssl.SSLError as exc:
        return Finding("tls", False, f"{certfile} and {keyfile}: {exc.reason or exc}: they must "
                       "be PEM files, the key the certificate's own")
    return Finding("tls", True, f"{certfile}: certificate and key load")


def render(findings: list[Finding]) -> str:
    return "\n".join(f"{'OK' if f.ok else 'FAIL':5} {f.what:7} {f.detail}" for f in findings)


async def diagnose(
    bridge: BridgeApp, host: str, port: int, certfile: str | None, keyfile: str | None
) -> list[Finding]:
    return [await check_agent(bridge), await check_store(bridge), check_listen(host, port),
            check_tls(certfile, keyfile)]


def run(settings: ServeSettings, certfile: str | None = None, keyfile: str | None = None) -> int:
    """``acdg doctor``: print each finding; 0 when all are OK, else 1."""
    logging.disable(logging.CRITICAL)  # each finding says it all, once
    bridge = build_app(settings)
    findings = anyio.run(diagnose, bridge, settings.server.bind_host, settings.server.port,
                         certfile, keyfile)
    print(render(findings))
    return 0 if all(f.ok for f in findings) else 1
