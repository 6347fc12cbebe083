"""The agent's configuration as it stands: the one chosen for the call, and every update
the application made since.

A reconnect or a take-over on another instance must not undo a mid-call change (an agent
switched to Spanish must not come back in English), so each ``update_*`` is kept here
and the next ``Settings`` is built from the result. Updates that cannot be folded into
``Settings`` (every update of a configuration stored at Deepgram, a prompt update with
no think settings to add it to) are sent again once the new connection is ready.

Only what a fresh connection needs is kept: a later ``UpdateThink`` replaces earlier
think and prompt updates, ``UpdateSpeak`` and ``UpdateThink_Live`` replace their kind,
``UpdateListen`` updates merge as Deepgram merges them.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from ..config import AgentConfig
from ..protocols import deepgram as dg

__all__ = ["AgentUpdate", "CurrentAgent", "listen_merged"]

AgentUpdate = dg.UpdatePrompt | dg.UpdateThink | dg.UpdateSpeak | dg.UpdateListen \
    | dg.UpdateThinkLive
_PROMPT_JOIN = "\n"  # Deepgram adds an UpdatePrompt to the prompt; it does not replace it


class CurrentAgent:
    __slots__ = ("config", "updates")

    def __init__(self, config: AgentConfig | None, updates: Iterable[AgentUpdate] = ()) -> None:
        self.config = config  # None until chosen (a per-call factory waiting for ``start``)
        self.updates: list[AgentUpdate] = []
        for update in updates:
            self.apply(update)

    def apply(self, update: AgentUpdate) -> None:
        """Keep ``update`` for the connections to come."""
        kept = self.updates
        if isinstance(update, dg.UpdateThink):
            kept = [u for u in kept if not isinstance(u, dg.UpdateThink | dg.UpdatePrompt)]
        elif isinstance(update, dg.UpdateSpeak | dg.UpdateThinkLive):
            kept = [u for u in kept if type(u) is not type(update)]
        elif isinstance(update, dg.UpdateListen):
            for earlier in kept:
                if isinstance(earlier, dg.UpdateListen):
                    provider = listen_merged(earlier.listen.provider, update.listen.provider)
                    update = dg.UpdateListen(listen=dg.ListenSettings(provider=provider))
            kept = [u for u in kept if not isinstance(u, dg.UpdateListen)]
        self.updates = [*kept, update]

    def settings(
        self, audio: dg.AudioSettings, history: tuple[dg.History, ...]
    ) -> tuple[dg.Settings, list[AgentUpdate]]:
        """``Settings`` for a new connection, and the updates to send once it is ready."""
        config = self.config
        if config is None:
            raise RuntimeError("the agent's configuration is not chosen yet")
        agent = config.agent
        if isinstance(agent, str):
            return config.settings(audio, history=history), list(self.updates)
        leftover: list[AgentUpdate] = []
        for update in self.updates:
            folded = _fold(agent, update)
            if folded is None:
                leftover.append(update)
            else:
                agent = folded
        current = msgspec.structs.replace(config, agent=agent)
        return current.settings(audio, history=history), leftover


def listen_merged(old: dict[str, object], new: dict[str, object]) -> dict[str, object]:
    """A listen provider after ``UpdateListen``: given fields change, the rest stays,
    except ``language_hints``, which Deepgram resets when an update leaves it out."""
    merged = {**old, **new}
    if "language_hints" not in new:
        merged.pop("language_hints", None)
    return merged


def _fold(agent: dg.AgentSettings, update: AgentUpdate) -> dg.AgentSettings | None:
    replace = msgspec.structs.replace
    if isinstance(update, dg.UpdateThink):
        return replace(agent, think=update.think)
    if isinstance(update, dg.UpdateSpeak):
        return replace(agent, speak=update.speak)
    if isinstance(update, dg.UpdateThinkLive):
        return replace(agent, think_live=update.think_live)
    if isinstance(update, dg.UpdateListen):
        if agent.listen is None:
            return None  # Deepgram's default listen settings are not known here
        provider = listen_merged(agent.listen.provider, update.listen.provider)
        return replace(agent, listen=dg.ListenSettings(provider=provider))
    think = agent.think
    if think is None:
        return None

    def added(item: dg.ThinkSettings) -> dg.ThinkSettings:
        prompt = update.prompt if not item.prompt else item.prompt + _PROMPT_JOIN + update.prompt
        return replace(item, prompt=prompt)

    if isinstance(think, tuple):
        return replace(agent, think=tuple(added(item) for item in think))
    return replace(agent, think=added(think))
