"""Shared fixtures: real servers on loopback ports chosen by the kernel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from acdg_asgi.testing.agent import AgentScript, StandInAgent
from acdg_asgi.testing.server import serve

__all__ = ["serve", "standin"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def standin(script: AgentScript | None = None, **kwargs: Any) -> AsyncIterator[StandInAgent]:
    async with StandInAgent(script=script, **kwargs) as agent:
        yield agent
