"""The calls of one bridge, by conversation id, and whether the bridge is draining.

Admission adds and removes calls here, the HTTP routes and the metrics read it, the drain
waits on it, and the cluster runs other instances' commands through it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import anyio

from ..call import Call, CallState
from ..call.commands import Command
from ..errors import CallNotFound
from ..runtime.call_runtime import CallRuntime

__all__ = ["CallRegistry"]


class CallRegistry(Mapping[str, CallRuntime]):
    """Read as a mapping: conversation id to the call's runtime."""

    def __init__(self) -> None:
        self._calls: dict[str, CallRuntime] = {}
        self.draining = False
        self._no_calls = anyio.Event()

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[str]:
        return iter(self._calls)

    def __getitem__(self, cid: str) -> CallRuntime:
        return self._calls[cid]

    def runtimes(self) -> list[CallRuntime]:
        """A copy, for loops that await: calls come and go meanwhile."""
        return list(self._calls.values())

    def add(self, runtime: CallRuntime) -> None:
        self._calls[runtime.call.conversation_id] = runtime

    def remove(self, runtime: CallRuntime) -> None:
        cid = runtime.call.conversation_id
        if self._calls.get(cid) is runtime:
            del self._calls[cid]
        if not self._calls:
            self._no_calls.set()

    def live(self) -> list[Call]:
        """The calls in progress (for metrics): not yet finished."""
        return [r.call for r in self._calls.values() if not r.finished]

    def awaiting_resume(self) -> bool:
        """Whether some call lost its VAIC socket and waits for ``session.resume``: while
        draining, upgrades are still let in for those (new calls get ``session.error``)."""
        return any(r.call.state is CallState.DETACHED for r in self._calls.values())

    async def wait_for_no_calls(self, timeout_s: float) -> None:
        if not self._calls:
            return
        if self._no_calls.is_set():  # set when calls last ran out; shared by every waiter
            self._no_calls = anyio.Event()
        with anyio.move_on_after(timeout_s):
            await self._no_calls.wait()

    # --- for the cluster (LocalCalls) ------------------------------------------------------

    async def run_command(self, cid: str, command: Command) -> None:
        runtime = self._calls.get(cid)
        if runtime is None:
            raise CallNotFound(f"no call {cid!r} on this instance")
        await runtime.session.run(command)

    async def vaic_alive(self, cid: str, probe_s: float) -> bool:
        runtime = self._calls.get(cid)
        return runtime is not None and await runtime.vaic_alive(probe_s)

    async def let_go(self, cid: str) -> None:
        runtime = self._calls.get(cid)
        if runtime is not None:
            runtime.log.info("call taken over by another instance")
            await runtime.command(lambda call, now: call.end(now, "migrated"))
