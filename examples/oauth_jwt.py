"""OAuth 2.0 for VAIC / Live Hub: accept a call only with a valid JWT access token.

With "OAuth2.0" authentication, VAIC gets an access token from your identity provider
(client-credentials grant with ``oauthClientId``/``oauthClientSecret``) and presents it
as ``Authorization: Bearer <jwt>`` on every call's WebSocket upgrade. The hook below
checks its signature, expiry, issuer, audience and (optionally) a scope before the
socket is accepted: a missing or invalid token gets HTTP 401, a valid token without the
scope HTTP 403. No call state exists until it passes.

Needs PyJWT (``pip install "pyjwt[crypto]"``; ``crypto`` for RS256/ES256). Run it::

    DEEPGRAM_API_KEY=... JWT_JWKS_URL=https://idp.example.com/.well-known/jwks.json \\
    JWT_ISSUER=https://idp.example.com/ JWT_AUDIENCE=acme-voice-bot \\
        acdg serve examples.oauth_jwt:build_app --factory
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import anyio.to_thread

from acdg_asgi import AgentSettings, AuthError, BridgeApp, Connection
from acdg_asgi.auth import AuthHook

try:
    import jwt
except ImportError:  # the rest of the package works without it
    jwt = None  # type: ignore[assignment]

log = logging.getLogger("examples.oauth_jwt")


def jwt_auth(
    *,
    key: Any = None,
    jwks_url: str | None = None,
    algorithms: Sequence[str] = ("RS256",),
    issuer: str | None = None,
    audience: str | None = None,
    scope: str | None = None,
    leeway_s: float = 30.0,
) -> AuthHook:
    """An ``auth=`` hook that verifies the bearer token as a JWT.

    Give the verification ``key`` (an HMAC secret, or a public key / PEM) or the
    identity provider's ``jwks_url`` (keys picked by the token's ``kid``, cached).
    ``algorithms`` is an allow-list: never accept what the token's header asks for.
    """
    if jwt is None:
        raise RuntimeError('examples/oauth_jwt.py needs PyJWT: pip install "pyjwt[crypto]"')
    if (key is None) == (jwks_url is None):
        raise ValueError("pass exactly one of key= or jwks_url=")
    jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
    required = ["exp"] + (["iss"] if issuer else []) + (["aud"] if audience else [])

    async def check(conn: Connection) -> bool:
        token = conn.bearer_token
        if token is None:
            log.info("call refused from %s: no bearer token", conn.client)
            return False
        try:
            if jwks is not None:  # PyJWKClient fetches over blocking HTTP: keep it off the loop
                signing_key = await anyio.to_thread.run_sync(jwks.get_signing_key_from_jwt, token)
                verify_with = signing_key.key
            else:
                verify_with = key
            claims = jwt.decode(
                token,
                verify_with,
                algorithms=list(algorithms),
                issuer=issuer,
                audience=audience,
                leeway=leeway_s,
                options={"require": required},
            )
        except jwt.PyJWTError as exc:
            log.info("call refused from %s: %s", conn.client, exc)
            return False
        if scope is not None and scope not in str(claims.get("scope", "")).split():
            raise AuthError(f"token lacks the {scope!r} scope", status_code=403)
        return True

    return check


def build_bridge(
    deepgram_url: str | None = None,
    *,
    deepgram_api_key: str | None = None,
    auth: AuthHook | None = None,
) -> BridgeApp:
    """The bridge behind JWT auth; without ``auth=`` the hook is built from ``$JWT_*``."""
    if auth is None:
        auth = jwt_auth(
            jwks_url=os.environ["JWT_JWKS_URL"],
            issuer=os.environ.get("JWT_ISSUER"),
            audience=os.environ.get("JWT_AUDIENCE"),
            scope=os.environ.get("JWT_SCOPE"),
        )
    return BridgeApp(
        agent=AgentSettings(greeting="Hello! How can I help?"),
        deepgram_api_key=deepgram_api_key,
        auth=auth,
        deepgram_url=deepgram_url,
    )


build_app = build_bridge  # the bridge is an ASGI app on its own


if __name__ == "__main__":
    from acdg_asgi.cli import serve_main

    raise SystemExit(serve_main(build_app, factory=True))
