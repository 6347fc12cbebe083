"""Who may open a call: checked on the HTTP upgrade, before the WebSocket is accepted.

``auth=`` on :class:`~acdg_asgi.BridgeApp` takes one of:

* ``None``: no authentication (VAIC sends no ``Authorization`` header when its token is
  empty);
* a string or :class:`~acdg_asgi.config.Secret`: the static bearer token configured in
  VAIC / Live Hub, compared in constant time;
* an async callable ``hook(conn: Connection) -> bool``: anything else (OAuth 2.0 JWTs,
  IP allow-lists). Return ``False`` or raise :class:`~acdg_asgi.errors.AuthError` to
  refuse; the refusal is an HTTP 401 (or the error's status) before the upgrade.

Browsers cannot set headers on a WebSocket, so a token may also come as the subprotocols
``acdg.bearer, <token>`` (what the browser phone sends): it counts as
``Authorization: Bearer <token>``, and the upgrade is answered with ``acdg.bearer``, never
the token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from .config import Secret
from .errors import ConfigError

__all__ = ["BEARER_SUBPROTOCOL", "AuthHook", "BearerToken", "Connection", "build_auth"]

BEARER_SUBPROTOCOL = "acdg.bearer"


class Connection(msgspec.Struct, frozen=True):
    """The upgrade request as an auth hook or agent factory sees it."""

    path: str  # relative to where the bridge is mounted, e.g. "/" or "/tenant-a"
    headers: Mapping[str, str]  # lower-cased names; repeated headers joined with ", "
    client: tuple[str, int] | None
    query_string: str = ""
    subprotocol: str | None = None  # to answer the upgrade with: acdg.bearer if offered

    @property
    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any], path: str) -> Connection:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        offered = list(scope.get("subprotocols", ()))
        subprotocol = None
        if offered[:1] == [BEARER_SUBPROTOCOL]:
            subprotocol = BEARER_SUBPROTOCOL
            if len(offered) > 1 and "authorization" not in headers:
                headers["authorization"] = f"Bearer {offered[1]}"
        client = scope.get("client")
        return cls(
            path=path,
            headers=headers,
            client=(str(client[0]), int(client[1])) if client else None,
            query_string=scope.get("query_string", b"").decode("latin-1"),
            subprotocol=subprotocol,
        )


AuthHook = Callable[[Connection], Awaitable[bool]]


class BearerToken:
    """The static token of VAIC's "Permanent token" mode, compared in constant time."""

    def __init__(self, token: str | Secret) -> None:
        secret = token if isinstance(token, Secret) else Secret(token)
        if not secret:
            raise ConfigError("the bearer token is empty; use auth=None for no authentication")
        self._expected = secret.reveal().encode()

    def __repr__(self) -> str:
        return "BearerToken('****')"

    async def __call__(self, conn: Connection) -> bool:
        given = (conn.bearer_token or "").encode()
        return hmac.compare_digest(given, self._expected)


async def _allow_all(conn: Connection) -> bool:
    return True


def build_auth(auth: str | Secret | AuthHook | None) -> AuthHook:
    """Normalise the ``auth=`` argument into one hook."""
    if auth is None:
        return _allow_all
    if isinstance(auth, str | Secret):
        return BearerToken(auth)
    if callable(auth):
        return auth
    raise ConfigError(f"auth must be None, a token or an async callable, not {auth!r}")
