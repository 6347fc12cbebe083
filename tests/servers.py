"""Servers as users run them, in processes of their own: ``acdg serve``, ``uvicorn``,
``gunicorn``, ``hypercorn``, ``nginx``. Their log goes to a file the test reads after."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx

__all__ = ["Process", "free_port", "process", "wait_for_http"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log_path = log

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)


@contextmanager
def process(argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
            cwd: Path = ROOT) -> Iterator[Process]:
    """Run ``argv`` (``python -m`` style when it starts with ``-m``) until the block ends."""
    command = [sys.executable, *argv] if argv[0] == "-m" else list(argv)
    with log.open("wb") as out:
        # A session of its own: the server's worker processes go with it at the end.
        proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Process(proc, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def wait_for_http(url: str, proc: Process | None = None, within_s: float = 30) -> None:
    """Until ``url`` answers at all (any status)."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient() as http:
        while True:
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                if proc is not None and proc.proc.poll() is not None:
                    raise AssertionError(f"the server exited:\n{proc.log}") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} never answered") from None
                await anyio.sleep(0.05)
