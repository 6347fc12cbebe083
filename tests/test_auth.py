"""Who may open a call: refused upgrades get an HTTP status before any call exists.

A real uvicorn server, real WebSocket upgrades; accepted calls go on to the stand-in
agent, which itself requires the bridge's Deepgram key.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from rig import Rig, load_example, rig, standin, upgrade_status
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from vaic_raw import vaic

from acdg_asgi import AuthError, Connection, Secret
from acdg_asgi.testing.server import serve

pytestmark = pytest.mark.anyio

TOKEN = "vaic-token-5b1f9c"
DEEPGRAM_KEY = "dg-key-7e2a4d"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def guarded(auth: Any) -> contextlib.AbstractAsyncContextManager[Rig]:
    """A bridge behind ``auth``; the stand-in accepts only the bridge's Deepgram key (HTTP
    401 otherwise)."""
    return rig(agent_api_key=DEEPGRAM_KEY, auth=auth)


async def test_static_token() -> None:
    async with guarded(TOKEN) as r:
        assert await upgrade_status(r.host) == 401
        assert await upgrade_status(r.host, headers=bearer("wrong")) == 401
        assert await upgrade_status(r.host, headers=bearer(TOKEN + "x")) == 401
        assert await upgrade_status(r.host, headers={"Authorization": f"Token {TOKEN}"}) == 401
        assert await upgrade_status(r.host, headers={"Authorization": TOKEN}) == 401
        assert r.log.events == []  # refused before any call existed

        async with vaic(r.host, headers=bearer(TOKEN)) as caller:
            assert (await caller.initiate())["type"] == "session.accepted"
            # The stand-in accepted the bridge's own upgrade: the Deepgram key went along.
            await r.agent_ready()
            await caller.end()
            await caller.wait_closed()
        end = await r.log.wait_for("session_end")
        assert end.reason == "caller"
        assert r.log.of("error") == [] and r.log.of("warning") == []
        assert r.agent.refused == 0

    bridge = r.bridge
    for text in (repr(bridge), str(bridge), repr(bridge.deepgram_api_key)):
        assert TOKEN not in text and DEEPGRAM_KEY not in text
    assert "auth=token" in repr(bridge)


async def test_token_given_as_secret_is_masked_too() -> None:
    async with guarded(Secret(TOKEN)) as r:
        assert await upgrade_status(r.host, headers=bearer(TOKEN)) == 101
        assert await upgrade_status(r.host, headers=bearer("nope")) == 401
    assert TOKEN not in repr(r.bridge)


async def test_custom_hook_sees_the_upgrade() -> None:
    seen: list[Connection] = []

    async def tenant_allow_list(conn: Connection) -> bool:
        seen.append(conn)
        return conn.headers.get("x-tenant") == "acme"

    async with guarded(tenant_allow_list) as r:
        assert await upgrade_status(r.host, "/acme?region=eu", {"X-Tenant": "acme"}) == 101
        assert await upgrade_status(r.host, "/acme", {"X-Tenant": "globex"}) == 401
        assert await upgrade_status(r.host, "/acme") == 401
        assert r.log.events == []
    accepted = seen[0]
    assert accepted.path == "/acme"
    assert accepted.query_string == "region=eu"
    assert accepted.headers["x-tenant"] == "acme"  # names arrive lower-cased
    assert accepted.client is not None and accepted.client[0] == "127.0.0.1"
    assert len(seen) == 3
    assert "tenant_allow_list" in repr(r.bridge)


async def test_auth_error_sets_the_status() -> None:
    async def hook(conn: Connection) -> bool:
        if conn.bearer_token is None:
            raise AuthError("no token")
        if conn.bearer_token != TOKEN:
            raise AuthError("not for you", status_code=403)
        return True

    async with guarded(hook) as r:
        assert await upgrade_status(r.host) == 401
        assert await upgrade_status(r.host, headers=bearer("other")) == 403
        async with vaic(r.host, headers=bearer(TOKEN)) as caller:
            assert (await caller.initiate())["type"] == "session.accepted"
            await caller.end()
            await caller.wait_closed()
        await r.log.wait_for("session_end")


# --- examples/oauth_jwt.py ----------------------------------------------------------------

ISSUER = "https://idp.example.com/"
AUDIENCE = "acme-voice-bot"
HS_SECRET = "hs256-secret-for-tests-0123456789abcdef"  # PyJWT wants >= 32 bytes for HS256


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "vaic", "iat": now, "exp": now + 300,
            "scope": "voice.calls other"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def test_jwt_example_hs256() -> None:
    jwt = pytest.importorskip("jwt")
    example = load_example("oauth_jwt")
    hook = example.jwt_auth(key=HS_SECRET, algorithms=["HS256"], issuer=ISSUER,
                            audience=AUDIENCE, scope="voice.calls")

    def token(key: str = HS_SECRET, **overrides: Any) -> dict[str, str]:
        return bearer(jwt.encode(claims(**overrides), key, algorithm="HS256"))

    async with standin() as agent:
        bridge = example.build_bridge(agent.url, auth=hook)
        async with serve(bridge) as host:
            assert await upgrade_status(host, headers=token()) == 101
            assert await upgrade_status(host) == 401
            assert await upgrade_status(host, headers=bearer("not-a-jwt")) == 401
            assert await upgrade_status(host, headers=token(key="x" * 40)) == 401
            assert await upgrade_status(host, headers=token(exp=int(time.time()) - 3600)) == 401
            assert await upgrade_status(host, headers=token(exp=None)) == 401
            assert await upgrade_status(host, headers=token(aud="someone-else")) == 401
            assert await upgrade_status(host, headers=token(iss="https://evil.example/")) == 401
            assert await upgrade_status(host, headers=token(scope="other")) == 403
            unsigned = jwt.encode(claims(), None, algorithm="none")
            assert await upgrade_status(host, headers=bearer(unsigned)) == 401

            async with vaic(host, headers=token()) as caller:
                assert (await caller.initiate())["type"] == "session.accepted"
                start = await caller.wait_for("playStream.start")
                assert start.msg["altText"] == "Hello! How can I help?"
                await caller.end()
                await caller.wait_closed()


@asynccontextmanager
async def jwks_server(jwks: dict[str, Any]) -> AsyncIterator[str]:
    async def serve_jwks(request: Any) -> JSONResponse:
        return JSONResponse(jwks)

    async with serve(Starlette(routes=[Route("/jwks.json", serve_jwks)])) as host:
        yield f"http://{host}/jwks.json"


async def test_jwt_example_rs256_with_a_jwks_url() -> None:
    jwt = pytest.importorskip("jwt")
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    example = load_example("oauth_jwt")
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(signing.public_key(), as_dict=True), "kid": "k1",
           "use": "sig", "alg": "RS256"}

    def token(key: Any = signing, kid: str = "k1", **overrides: Any) -> dict[str, str]:
        return bearer(jwt.encode(claims(**overrides), key, algorithm="RS256",
                                 headers={"kid": kid}))

    async with jwks_server({"keys": [jwk]}) as jwks_url, standin() as agent:
        by_url = example.jwt_auth(jwks_url=jwks_url, issuer=ISSUER, audience=AUDIENCE)
        by_key = example.jwt_auth(key=signing.public_key(), issuer=ISSUER, audience=AUDIENCE)
        for hook in (by_url, by_key):
            async with serve(example.build_bridge(agent.url, auth=hook)) as host:
                assert await upgrade_status(host, headers=token()) == 101
                assert await upgrade_status(host, headers=token(key=stranger)) == 401
                assert await upgrade_status(host, headers=token(aud="other")) == 401
                # An HS256 token is refused: only RS256 is allowed, whatever the header says.
                hs = jwt.encode(claims(), HS_SECRET, algorithm="HS256", headers={"kid": "k1"})
                assert await upgrade_status(host, headers=bearer(hs)) == 401
        async with serve(example.build_bridge(agent.url, auth=by_url)) as host:
            assert await upgrade_status(host, headers=token(kid="unknown")) == 401


async def test_jwt_example_needs_one_key_source() -> None:
    pytest.importorskip("jwt")
    example = load_example("oauth_jwt")
    with pytest.raises(ValueError, match="exactly one"):
        example.jwt_auth()
    with pytest.raises(ValueError, match="exactly one"):
        example.jwt_auth(key="k" * 32, jwks_url="http://127.0.0.1:1/jwks.json")
