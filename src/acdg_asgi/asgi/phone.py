"""The bridge's pages, served below it: the browser phone and the supervisor page.

    GET <mount>/phone                  the browser phone (``BridgeApp(phone=True)``): a VAIC
                                       in the browser that calls <mount>
    GET <mount>/phone/                 redirects to <mount>/phone (the page's links are
                                       relative to it, so they work behind any prefix)
    GET <mount>/phone/phone.js, events.js, phone.css, phone-worklet.js
    GET <mount>/live                   the supervisor page (``live=True`` or ``phone=True``):
                                       the calls in progress, one call's transcript, and
                                       the control actions
    GET <mount>/live/live.js, events.js, live.css

The phone finds the bridge's event stream (``<mount>/live/events``) in its
``acdg-events`` meta tag. No page holds a secret: the token is typed into the page, and
the requests it makes are authenticated like any other.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from starlette.types import Scope, Send

from .responses import respond

__all__ = ["PhonePage", "SupervisorPage", "WebPage"]

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_EVENTS_META: Final = b'<meta name="acdg-events" content="">'


class WebPage:
    """A page at ``/<name>`` and its files below ``/<name>/``, read once from the package.

    ``reserved``: paths below ``/<name>/`` that are routes, not files (never served here).
    """

    def __init__(self, name: str, assets: tuple[str, ...],
                 reserved: tuple[str, ...] = ()) -> None:
        web = files("acdg_asgi") / "web"
        self.name = name
        self._reserved = reserved
        self._files = {n: web.joinpath(n).read_bytes() for n in (f"{name}.html", *assets)}

    def handles(self, path: str) -> bool:
        return (path == f"/{self.name}" or path.startswith(f"/{self.name}/")) and \
            path not in self._reserved

    async def serve(self, scope: Scope, send: Send, path: str) -> None:
        """Answer a GET for ``path`` (below the mount, without a trailing slash)."""
        if path == f"/{self.name}":
            raw = scope.get("raw_path") or scope.get("path", "").encode()
            if raw.endswith(b"/"):  # "../phone" from ".../phone/" is ".../phone"
                query = scope.get("query_string", b"").decode("latin-1")
                await _redirect(send, f"../{self.name}" + (f"?{query}" if query else ""))
                return
            name = f"{self.name}.html"
        else:
            name = path.removeprefix(f"/{self.name}/")
        body = self._files.get(name)
        if body is None:
            await respond(send, 404, b'{"error":"not found"}')
            return
        headers = [
            (b"content-type", _TYPES[name[name.rindex("."):]].encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else body})


class PhonePage(WebPage):
    """The browser phone; ``events_url`` (relative to the page) goes in its meta tag."""

    def __init__(self, *, events_url: str | None = "live/events") -> None:
        super().__init__("phone", ("phone.js", "events.js", "phone.css", "phone-worklet.js"))
        if events_url:
            meta = b'<meta name="acdg-events" content="%s">' % events_url.encode()
            self._files["phone.html"] = self._files["phone.html"].replace(_EVENTS_META, meta)


class SupervisorPage(WebPage):
    """The supervisor page, beside the live routes it reads (``/live/events``,
    ``/live/calls``) and the control route it posts to (``/calls/...``)."""

    def __init__(self) -> None:
        super().__init__("live", ("live.js", "events.js", "live.css"),
                         reserved=("/live/events", "/live/calls"))


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 308, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
