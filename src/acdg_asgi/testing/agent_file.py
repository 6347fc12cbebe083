"""The stand-in agent's script from a TOML or JSON file, for ``acdg agent --script FILE``.

The file holds :class:`~._agent_turns.AgentScript`'s fields by name, plus ``api_key``
(the key clients must send) and ``path`` (where it listens). In TOML::

    api_key = "test-key"            # clients must send it (Authorization: Token test-key)
    ms_per_word = 180               # reply audio per word
    end_of_turn_ms = 300            # caller silence that ends the caller's turn
    # drop_after_turns = 2          # abort the connection once turn 2 is answered
    # fail_settings = ["INVALID_SETTINGS", "no such voice"]   # refuse every Settings

    [[turns]]                       # one per caller utterance, in order
    heard = "Where is my order?"    # what the caller is "heard" saying
    reply = "Let me look that up."
    function = "lookup_order"       # a client-side function call before the reply
    arguments = {order_id = "A123"} # a table, or the JSON text itself

    [[turns]]
    heard = "Thanks."
    reply = "Goodbye!"

Caller speech while the agent talks is a barge-in: the agent stops (``UserStartedSpeaking``)
and drops the rest of that reply, so a long ``reply`` leaves room for one. Past the last
turn the agent answers :data:`~._agent_turns.AFTER_SCRIPT`. Unknown keys are an error,
so a typo is never silently dropped.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from ..errors import ConfigError
from ._agent_turns import AgentScript, Turn

__all__ = ["AgentFile", "load_agent_file", "parse_agent_file"]

_SCRIPT_FIELDS = frozenset(f.name for f in msgspec.structs.fields(AgentScript))
_TURN_FIELDS = frozenset(f.name for f in msgspec.structs.fields(Turn))
_FILE_FIELDS = frozenset({"api_key", "path"})


class AgentFile(msgspec.Struct, frozen=True, kw_only=True):
    """What a script file says: the script, and the key and path if it names them."""

    script: AgentScript
    api_key: str | None = None
    path: str | None = None


def load_agent_file(path: Path) -> AgentFile:
    """Read ``path`` (``.toml``, or JSON otherwise). Raises :class:`ConfigError` with the
    file and what is wrong in one line."""
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top")
    return parse_agent_file(data, where=str(path))


def parse_agent_file(data: dict[str, Any], *, where: str = "script") -> AgentFile:
    _known(data, _SCRIPT_FIELDS | _FILE_FIELDS, where)
    fields = {k: v for k, v in data.items() if k not in _FILE_FIELDS}
    turns = fields.get("turns", [])
    if not isinstance(turns, list):
        raise ConfigError(f"{where}: turns must be a list of tables ([[turns]] in TOML)")
    fields["turns"] = [_turn(t, f"{where}: turns[{i}]") for i, t in enumerate(turns)]
    if "turns" not in data:
        del fields["turns"]  # the default script
    try:
        script = msgspec.convert(fields, AgentScript)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    api_key, path = data.get("api_key"), data.get("path")
    for name, value in (("api_key", api_key), ("path", path)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string")
    return AgentFile(script=script, api_key=api_key or None, path=path)


def _turn(turn: Any, where: str) -> dict[str, Any]:
    if not isinstance(turn, dict):
        raise ConfigError(f"{where}: expected a table with reply, heard, function, arguments")
    _known(turn, _TURN_FIELDS, where)
    fields: dict[str, Any] = dict(turn)
    if isinstance(fields.get("arguments"), dict):  # a table: the JSON text the agent sends
        fields["arguments"] = json.dumps(fields["arguments"])
    return fields


def _known(data: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(known))}")
