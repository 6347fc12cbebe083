"""The bridge as granian's worker process builds it (``test_servers.py``); the stand-in
agent's URL and the token come in the environment."""

from __future__ import annotations

import os

from acdg_asgi import AgentSettings, BridgeApp


def app() -> BridgeApp:
    return BridgeApp(agent=AgentSettings(greeting="Hi"), deepgram_url=os.environ["AGENT_URL"],
                     auth=os.environ["TOKEN"], tracing=False)
