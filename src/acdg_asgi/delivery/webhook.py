"""Records POSTed to an HTTP endpoint, signed, retried until the receiver has them.

Each record is one ``POST`` of its JSON with these headers:

    Content-Type:      application/json
    X-Acdg-Record:     the call's session id: deliveries are at least once, so a
                       receiver that sees the same id twice keeps one
    X-Acdg-Signature:  t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>, with the
                       shared secret (see :func:`verify`)

A 2xx answer is a delivery. Connection errors, timeouts, 408, 429 and 5xx are retried
with exponential backoff, oldest record first, for as long as it takes; the records wait
in the spool meanwhile (in memory, or in a directory that survives restarts). Any other
answer means the receiver will never take that record: it is logged as an error and set
aside (a directory spool keeps it as ``<name>.rejected``) so the rest can go on.

Needs ``pip install 'acdg-asgi[webhooks]'`` (httpx).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec

from ..config import Secret
from ..errors import ConfigError
from ..events import CallRecord
from .spool import DirectorySpool, MemoryQueue, Spool

__all__ = ["RecordWebhook", "sign", "verify"]

log = logging.getLogger("acdg_asgi.delivery")

_RETRY_STATUS: Final = frozenset({408, 425, 429})


class _Ids(msgspec.Struct):
    session_id: str = ""
    conversation_id: str = ""


_ids: Final = msgspec.json.Decoder(_Ids)


def sign(secret: str | Secret, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Acdg-Signature`` value for ``body``."""
    key = (secret.reveal() if isinstance(secret, Secret) else secret).encode()
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str | Secret, body: bytes, header: str, *, tolerance_s: float = 300) -> bool:
    """For the receiver: is ``header`` (``X-Acdg-Signature``) a valid signature of
    ``body``, made within ``tolerance_s`` of now?"""
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    try:
        t = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp=t).partition("v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


class RecordWebhook:
    """POST each record to ``url``, signed with ``secret``.

    ``spool``: a directory (or a :class:`~acdg_asgi.delivery.DirectorySpool`) where records
    wait, so an outage or a restart loses nothing; ``None`` keeps them in memory.
    ``max_records``: how many may wait; beyond it the oldest are dropped (counted, warned).
    """

    def __init__(
        self, url: str, *, secret: str | Secret, spool: str | Path | Spool | None = None,
        max_records: int = 10_000, timeout_s: float = 10.0, max_backoff_s: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise ConfigError("RecordWebhook needs httpx: pip install 'acdg-asgi[webhooks]'"
                              ) from None
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"RecordWebhook needs an http(s):// URL, not {url!r}")
        self.url = url
        self._secret = secret if isinstance(secret, Secret) else Secret(secret)
        if not self._secret:
            raise ConfigError("RecordWebhook needs a secret to sign records with")
        if spool is None:
            self.spool: Spool = MemoryQueue(max_records, what=f"records for {url}")
        elif isinstance(spool, str | Path):
            self.spool = DirectorySpool(spool, max_records=max_records)
        else:
            self.spool = spool
        self._httpx = httpx
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s
        self._headers = dict(headers or {})
        self.delivered = 0

    def __repr__(self) -> str:
        return f"RecordWebhook({self.url!r}, secret={self._secret!r}, spool={self.spool!r})"

    def put(self, record: CallRecord) -> None:
        self.spool.put(record.to_json())

    async def flush(self) -> None:
        await self.spool.flush()

    async def run(self) -> None:
        failures = 0
        async with self._httpx.AsyncClient(timeout=self._timeout_s) as client:
            while True:
                key, body = await self.spool.next()
                outcome = await self._post(client, body)
                if outcome.startswith("retry"):
                    failures += 1
                    if failures == 1 or failures % 10 == 0:  # not a line per attempt
                        log.warning("webhook %s not reached (%s); %d records wait, retrying",
                                    self.url, outcome.partition(": ")[2], len(self.spool))
                    await anyio.sleep(self._backoff(failures))
                    continue
                if failures:
                    log.info("webhook %s takes records again (%d waiting)", self.url,
                             len(self.spool) - 1)
                failures = 0
                if outcome == "rejected":
                    await self._set_aside(key, body)
                else:
                    self.delivered += 1
                await self.spool.done(key)

    async def _post(self, client: Any, body: bytes) -> str:
        ids = _ids.decode(body)
        headers = {**self._headers, "Content-Type": "application/json",
                   "X-Acdg-Record": ids.session_id,
                   "X-Acdg-Signature": sign(self._secret, body)}
        try:
            response = await client.post(self.url, content=body, headers=headers)
        except self._httpx.HTTPError as exc:
            return f"retry: {type(exc).__name__} {exc}"
        status = response.status_code
        if 200 <= status < 300:
            return "ok"
        if status >= 500 or status in _RETRY_STATUS:
            return f"retry: HTTP {status}"
        log.error("[%s] webhook %s refused the call's record with HTTP %d; set aside, not "
                  "retried: check the receiver and its secret", ids.conversation_id, self.url,
                  status)
        return "rejected"

    def _backoff(self, failures: int) -> float:
        delay = min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 16))
        return delay * random.uniform(0.8, 1.0)

    async def _set_aside(self, key: str, body: bytes) -> None:
        if isinstance(self.spool, DirectorySpool):
            path = self.spool.directory / f"{key}.rejected"
            await anyio.to_thread.run_sync(path.write_bytes, body)
