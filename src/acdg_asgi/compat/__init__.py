"""The predecessor's front door, so that its quick start runs with only the imports changed.

    from deepgram_audiocodes_bridge import DeepgramBridge, Session, BridgeConfig, ...
    from deepgram_audiocodes_bridge.types import DeepgramAgentConfig, ...

become::

    from acdg_asgi.compat import DeepgramBridge, Session, BridgeConfig, ...
    from acdg_asgi.compat.types import DeepgramAgentConfig, ...

:class:`DeepgramBridge` is a thin shell around :class:`~acdg_asgi.BridgeApp` with the
predecessor's ``BridgeConfig`` and ``run()``; it warns (:class:`~acdg_asgi.MigrationWarning`)
once, when made. New code builds a ``BridgeApp`` and serves it (``acdg serve``, uvicorn,
or mounted in an app); MIGRATING.md has the steps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from ..app import BridgeApp
from ..errors import ConfigError, moved
from ..events import Event
from ..runtime.app_events import H
from ..serving import DrainingServer
from ..session import Session
from .types import *  # noqa: F403 - the predecessor's top level exported them all too
from .types import __all__ as _types

__all__ = ["BridgeConfig", "DeepgramBridge", "Session", *_types]

log = logging.getLogger("acdg_asgi.serve")


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeConfig:
    """The predecessor's settings. ``deepgram_config`` is any agent config BridgeApp takes
    (its TypedDicts are plain dicts). ``ac_token=None``: no authentication."""

    deepgram_api_key: str
    deepgram_config: Any
    ac_token: str | None = None
    host: str = "0.0.0.0"
    port: int = 8081
    preferred_media_formats: tuple[str, ...] = ("raw/mulaw", "raw/lpcm16_8", "raw/lpcm16")


class DeepgramBridge:
    """The predecessor's bridge: a :class:`~acdg_asgi.BridgeApp` and a server to run it.

    ``run()`` serves the bridge at ``ws://host:port/`` (any path below it works too) with
    a graceful drain on SIGTERM. ``ACDG_HOST`` and ``ACDG_PORT``, when set, override the
    config's host and port (as they do for ``acdg serve``); ``DEEPGRAM_URL`` points the
    bridge at another agent endpoint.
    """

    def __init__(self, config: BridgeConfig) -> None:
        moved("DeepgramBridge(BridgeConfig(...))", "BridgeApp(agent=..., deepgram_api_key=..., "
              "auth=...), served by acdg serve, uvicorn or your app")
        self.config = config
        self.app = BridgeApp(
            agent=config.deepgram_config,
            deepgram_api_key=config.deepgram_api_key,
            auth=config.ac_token or None,
            media_formats=config.preferred_media_formats,
        )

    def on(self, event: str | type[Event]) -> Callable[[H], H]:
        """``@bridge.on("session_start")``, as before."""
        return self.app.on(event)

    async def run(self) -> None:
        """Serve until SIGTERM or Ctrl-C (which drain the calls first)."""
        host = os.environ.get("ACDG_HOST") or self.config.host
        port_text = os.environ.get("ACDG_PORT")
        try:
            port = int(port_text) if port_text else self.config.port
        except ValueError:
            raise ConfigError(f"ACDG_PORT={port_text!r}: not a port number") from None
        log.info("bridge listening on ws://%s:%d/", host, port)
        config = uvicorn.Config(self.app, host=host, port=port, lifespan="on", log_config=None)
        await DrainingServer(config, bridges=[self.app]).serve()
