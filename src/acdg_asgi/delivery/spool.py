"""Where records wait for delivery: in memory, or in a directory that survives restarts.

Both are bounded: past ``max_records`` the oldest waiting record is dropped, with one
warning per hundred drops, so a receiver that is down for days cannot fill the disk.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import anyio

__all__ = ["DirectorySpool", "MemoryQueue", "Spool"]

log = logging.getLogger("acdg_asgi.delivery")


class Spool(Protocol):
    def put(self, data: bytes) -> object:
        """Keep ``data`` until :meth:`done`; never blocks."""
        ...

    async def next(self) -> tuple[str, bytes]:
        """The oldest record waiting (its key and bytes); waits for one."""
        ...

    async def done(self, key: str) -> None:
        """Record ``key`` was delivered: forget it."""
        ...

    async def flush(self) -> None:
        """Before the process stops: keep what waits where it survives, if anywhere."""
        ...

    def __len__(self) -> int: ...


class MemoryQueue:
    """Records waiting in memory: lost when the process ends."""

    def __init__(
        self, max_records: int, *, what: str = "records",
        keys: Iterator[str] | None = None, initial: Iterable[tuple[str, bytes]] = (),
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        self.max_records = max_records
        self.dropped = 0
        self._what = what
        self._items: deque[tuple[str, bytes]] = deque(initial)
        self._keys = keys if keys is not None else (str(n) for n in itertools.count())
        self._on_drop = on_drop
        self._arrived = anyio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, data: bytes) -> str:
        key = next(self._keys)
        self._items.append((key, data))
        while len(self._items) > self.max_records:
            gone, _ = self._items.popleft()
            self._dropped(gone)
        self._arrived.set()
        return key

    async def next(self) -> tuple[str, bytes]:
        while not self._items:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        return self._items[0]

    async def done(self, key: str) -> None:
        if self._items and self._items[0][0] == key:
            self._items.popleft()

    async def flush(self) -> None:
        pass  # nowhere to keep it

    async def take_all(self) -> list[bytes]:
        """Everything waiting, at once; waits for something."""
        await self.next()
        items = [data for _, data in self._items]
        self._items.clear()
        return items

    def _dropped(self, key: str) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(key)
        if self.dropped % 100 == 1:
            log.warning("%s: %d waiting at most; dropped the oldest (%d dropped so far)",
                        self._what, self.max_records, self.dropped)


class DirectorySpool:
    """Records waiting as files in ``directory``, one file each, so a restart delivers
    what an outage left waiting. Files are written and removed off the event loop; a
    record is on disk before its delivery is first tried."""

    def __init__(self, directory: str | Path, *, max_records: int = 10_000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()
        self._unwritten: dict[str, bytes] = {}
        waiting = [(p.name, p.read_bytes()) for p in sorted(self.directory.glob("*.json"))]
        self._queue = MemoryQueue(max_records, what=f"spool {self.directory}",
                                  keys=self._names(), initial=waiting, on_drop=self._forget)

    def __repr__(self) -> str:
        return f"DirectorySpool({str(self.directory)!r}, waiting={len(self)})"

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def put(self, data: bytes) -> None:
        self._unwritten[self._queue.put(data)] = data

    async def next(self) -> tuple[str, bytes]:
        key, data = await self._queue.next()
        await self.flush()
        return key, data

    async def flush(self) -> None:
        if self._unwritten:
            pending, self._unwritten = self._unwritten, {}
            await anyio.to_thread.run_sync(self._write, pending)

    async def done(self, key: str) -> None:
        await self._queue.done(key)
        await anyio.to_thread.run_sync(self._remove, key)

    def _names(self) -> Iterator[str]:
        while True:  # sortable: the directory lists them oldest first after a restart
            yield f"{time.time_ns():020d}-{next(self._seq):06d}.json"

    def _forget(self, key: str) -> None:
        if self._unwritten.pop(key, None) is None:
            self._remove(key)

    def _remove(self, key: str) -> None:
        (self.directory / key).unlink(missing_ok=True)

    def _write(self, items: dict[str, bytes]) -> None:
        for key, data in items.items():
            tmp = self.directory / f".{key}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.directory / key)
