"""One agent connection's way to ready, as a sub-machine of the call.

Every connection of a call (the first, and each after a drop) goes the same way: the
agent's ``Welcome``; ``Settings`` once the configuration is also known (chosen by then
or later, by a factory): the configuration with its updates (:mod:`.agent_state`), the
conversation so far, the telephony tools declared; then ``SettingsApplied``, after which
what waited for it goes out in order: the updates that ``Settings`` could not carry
first, then what the application and the policies asked for meanwhile. Until then, an
application's update is kept for the next ``Settings`` or queued behind this one.
"""

from __future__ import annotations

import msgspec

from ..protocols import deepgram as dg
from .agent_link import AgentState
from .agent_state import AgentUpdate
from .base_parts import CallBase
from .tools import ToolRunner

__all__ = ["AgentSetup"]


class AgentSetup:
    __slots__ = ("_after_ready", "_settings_sent", "_tools", "_welcomed")

    def __init__(self, tools: ToolRunner) -> None:
        self._tools = tools  # declared in Settings and in every think update
        self._welcomed = False
        self._settings_sent = False
        self._after_ready: list[dg.ClientMessage] = []  # sent once SettingsApplied comes

    def connected(self) -> None:
        """A new connection: it needs a ``Welcome`` and ``Settings`` of its own."""
        self._welcomed = self._settings_sent = False

    def welcomed(self, call: CallBase, request_id: str, now: float) -> None:
        self._welcomed = True
        if request_id:
            call.request_ids.append(request_id)
        self.configure(call, now)

    def configure(self, call: CallBase, now: float) -> None:
        """Send ``Settings`` once the agent said ``Welcome`` and the config is known."""
        config = call.configuration.config
        if not self._welcomed or self._settings_sent or config is None:
            return
        history = call.transcript.history()
        settings, leftover = call.configuration.settings(call.media_format.deepgram_audio(),
                                                         history)
        call.to_agent.append(self._with_tools(call, settings, now))
        self._settings_sent = True
        self._after_ready[:0] = leftover  # the application's changes first
        call.link.last_send = now
        if history and config.stored:
            call.warn(now, "AGENT_HISTORY_NOT_REPLAYED", "a stored agent configuration cannot "
                      "be given the conversation so far: the new agent starts afresh")

    def ready(self) -> list[dg.ClientMessage]:
        """``SettingsApplied``: what waited for it."""
        waiting, self._after_ready = self._after_ready, []
        return [self._think_with_tools(m) for m in waiting]

    def update(self, call: CallBase, update: AgentUpdate, now: float) -> None:
        """An ``Update*`` from the application: kept for every connection to come, and
        sent to this one when it can take it."""
        call.configuration.apply(update)
        call.shared_changed()
        if call.link.ready:
            call.to_agent.append(self._think_with_tools(update))
            call.link.last_send = now
        elif self._settings_sent:
            self._after_ready.append(update)
        # else the next Settings carries it

    def when_ready(self, call: CallBase, msg: dg.ClientMessage, now: float) -> None:
        """``msg`` now if the agent is ready, else once it is (none once it is closed)."""
        if call.link.ready:
            call.to_agent.append(msg)
            call.link.last_send = now
        elif call.link.state is not AgentState.CLOSED:
            self._after_ready.append(msg)

    def _with_tools(self, call: CallBase, settings: dg.Settings, now: float) -> dg.Settings:
        """``Settings`` with the telephony tools declared to the agent."""
        tools = self._tools
        if not tools.functions:
            return settings
        agent = settings.agent
        if isinstance(agent, str):
            call.warn(now, "TOOLS_NOT_DECLARED", "a stored agent configuration cannot be "
                      "given the telephony tools: declare " + ", ".join(sorted(
                          tools.names)) + " in it (the bridge runs them)")
            return settings
        if agent.think is None:
            call.warn(now, "TOOLS_NOT_DECLARED", "the agent has no think settings to declare "
                      "the telephony tools in")
            return settings
        return msgspec.structs.replace(settings, agent=msgspec.structs.replace(
            agent, think=tools.declare(agent.think)))

    def _think_with_tools(self, msg: dg.ClientMessage) -> dg.ClientMessage:
        if isinstance(msg, dg.UpdateThink) and self._tools.functions:
            think = self._tools.declare(msg.think)
            assert think is not None
            return dg.UpdateThink(think=think)
        return msg
