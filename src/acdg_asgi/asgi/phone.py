"""The browser phone's files, served below the bridge with ``BridgeApp(phone=True)``.

    GET <mount>/phone                  the page: a VAIC in the browser that calls <mount>
    GET <mount>/phone/                 redirects to <mount>/phone (the page's links are
                                       relative to it, so they work behind any prefix)
    GET <mount>/phone/phone.js, phone.css, phone-worklet.js

The page finds the bridge's event stream (``<mount>/live/events``) in its
``acdg-events`` meta tag. It holds no secret: the token is typed into the page, and
the calls and the event stream it opens are authenticated like any other.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from starlette.types import Scope, Send

from .responses import respond

__all__ = ["PhonePage"]

_TYPES: Final = {
    "phone.html": "text/html; charset=utf-8",
    "phone.js": "text/javascript; charset=utf-8",
    "phone-worklet.js": "text/javascript; charset=utf-8",
    "phone.css": "text/css; charset=utf-8",
}
_EVENTS_META: Final = b'<meta name="acdg-events" content="">'


class PhonePage:
    """The page and its assets, read once from the package."""

    def __init__(self, *, events_url: str | None = "live/events") -> None:
        web = files("acdg_asgi") / "web"
        self._files = {name: web.joinpath(name).read_bytes() for name in _TYPES}
        if events_url:
            meta = b'<meta name="acdg-events" content="%s">' % events_url.encode()
            self._files["phone.html"] = self._files["phone.html"].replace(_EVENTS_META, meta)

    def handles(self, path: str) -> bool:
        return path == "/phone" or path.startswith("/phone/")

    async def serve(self, scope: Scope, send: Send, path: str) -> None:
        """Answer a GET for ``path`` (below the mount, without a trailing slash)."""
        if path == "/phone":
            raw = scope.get("raw_path") or scope.get("path", "").encode()
            if raw.endswith(b"/"):  # "../phone" from ".../phone/" is ".../phone"
                query = scope.get("query_string", b"").decode("latin-1")
                await _redirect(send, "../phone" + (f"?{query}" if query else ""))
                return
            name = "phone.html"
        else:
            name = path.removeprefix("/phone/")
        body = self._files.get(name)
        if body is None:
            await respond(send, 404, b'{"error":"not found"}')
            return
        headers = [
            (b"content-type", _TYPES[name].encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else body})


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 308, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
