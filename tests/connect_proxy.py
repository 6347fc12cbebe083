"""A small HTTP CONNECT proxy on loopback, as an egress proxy in a contact centre is.

It answers ``CONNECT host:port`` with 200 and then relays bytes both ways, or with 407
when it wants credentials (``Proxy-Authorization: Basic``) that were not given. Every
tunnel it opened is kept in :attr:`ConnectProxy.tunnels` as ``"host:port"``.

Usage::

    async with ConnectProxy(credentials=("user", "secret")) as proxy:
        connector = LeanConnector(proxy=proxy.url_with("user", "secret"))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from types import TracebackType
from typing import Self

__all__ = ["ConnectProxy"]


class ConnectProxy:
    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.tunnels: list[str] = []
        self.refused: list[int] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    def url_with(self, user: str, password: str) -> str:
        return self.url.replace("http://", f"http://{user}:{password}@")

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._relays):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._relays, return_exceptions=True)
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            fields = {k.strip().lower(): v.strip()
                      for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if method != "CONNECT":
                await self._answer(writer, 405)
                return
            if self.credentials is not None:
                expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
                if fields.get("proxy-authorization") != expected:
                    await self._answer(writer, 407)
                    return
            host, _, port = target.rpartition(":")
            try:
                up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            except OSError:
                await self._answer(writer, 502)
                return
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            self._relays.discard(task)

    async def _answer(self, writer: asyncio.StreamWriter, status: int) -> None:
        self.refused.append(status)
        extra = b"Proxy-Authenticate: Basic realm=\"egress\"\r\n" if status == 407 else b""
        writer.write(b"HTTP/1.1 %d No\r\n%sContent-Length: 0\r\n\r\n" % (status, extra))
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()
