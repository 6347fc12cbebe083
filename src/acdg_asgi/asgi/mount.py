"""Routing a bridge at a URL path in a host app: ``bridge.routes("/audiocodes")``.

VAIC's bot URL usually has no trailing slash (``wss://host/audiocodes``), while a plain
``Mount`` serves only ``/audiocodes/...``: Starlette answers a WebSocket to the bare path
with 403 and a GET with a redirect (to ``http://`` behind a TLS-terminating proxy). The
one route here serves the bare path and everything below it, WebSocket and HTTP, with no
redirect, and hands the bridge the same scope for ``/audiocodes`` and ``/audiocodes/``,
so ``Connection.path`` is ``"/"`` for both.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError

if TYPE_CHECKING:
    from litestar.handlers import ASGIRouteHandler

__all__ = ["BridgeRoute", "litestar_handler", "normalise_path"]

_BAD = re.compile(r"[\s?#%]")


def normalise_path(path: str) -> str:
    """``"audiocodes"``, ``"/audiocodes/"`` -> ``"/audiocodes"``; ``""`` and ``"/"`` -> ``"/"``.

    Raises :class:`ConfigError` for what cannot be a URL path.
    """
    if not isinstance(path, str) or _BAD.search(path) or "//" in path:
        raise ConfigError(f"invalid bridge path {path!r}: use a URL path such as /audiocodes")
    return "/" + path.strip("/")


class BridgeRoute(BaseRoute):
    """A Starlette route: ``app`` at ``path`` and below it, for HTTP and WebSocket alike."""

    def __init__(self, path: str, app: ASGIApp) -> None:
        self.path = normalise_path(path)
        self.app = app
        self._prefix = "" if self.path == "/" else self.path

    def __repr__(self) -> str:
        return f"BridgeRoute(path={self.path!r}, app={self.app!r})"

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] not in ("http", "websocket"):
            return Match.NONE, {}
        root_path: str = scope.get("root_path", "")
        path: str = scope["path"]
        below = path[len(root_path):] if root_path and path.startswith(root_path) else path
        prefix = self._prefix
        if prefix and below != prefix and not below.startswith(prefix + "/"):
            return Match.NONE, {}
        return Match.FULL, {
            "app_root_path": scope.get("app_root_path", root_path),
            "root_path": root_path + prefix,
            "endpoint": self.app,
        }

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def litestar_handler(app: ASGIApp, path: str) -> ASGIRouteHandler:
    """A Litestar route handler serving ``app`` at ``path`` and below (imports Litestar)."""
    try:
        from litestar import asgi
    except ImportError:  # pragma: no cover - only without Litestar
        raise ConfigError("litestar_handler needs Litestar: pip install litestar") from None
    # copy_scope: the bridge does not change the scope; Litestar 3 will default to it.
    return asgi(normalise_path(path), is_mount=True, copy_scope=True)(app)
