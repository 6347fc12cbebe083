"""Records appended to a file, one JSON object per line."""

from __future__ import annotations

from pathlib import Path

import anyio

from ..events import CallRecord
from .spool import MemoryQueue

__all__ = ["JsonLines"]


class JsonLines:
    """Append each record to ``path`` as one JSON line (written off the event loop)."""

    def __init__(self, path: str | Path, *, max_pending: int = 10_000) -> None:
        self.path = Path(path)
        self._pending = MemoryQueue(max_pending, what=f"records for {self.path}")

    def __repr__(self) -> str:
        return f"JsonLines({str(self.path)!r})"

    def put(self, record: CallRecord) -> None:
        self._pending.put(record.to_json())

    async def run(self) -> None:
        while True:
            lines = await self._pending.take_all()
            await anyio.to_thread.run_sync(self._append, lines)

    async def flush(self) -> None:
        if len(self._pending):
            await anyio.to_thread.run_sync(self._append, await self._pending.take_all())

    def _append(self, lines: list[bytes]) -> None:
        with self.path.open("ab") as f:
            f.write(b"".join(line + b"\n" for line in lines))
