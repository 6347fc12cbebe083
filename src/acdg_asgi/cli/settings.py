"""``acdg serve`` configuration: a TOML file, then environment variables, then flags.

Example ``acdg.toml``::

    [server]
    host = "0.0.0.0"
    port = 8000

    [bridge]
    deepgram_url = "wss://agent.deepgram.com/v1/agent/converse"
    media_formats = ["raw/lpcm16", "raw/mulaw"]

    [playout]
    lead_ms = 100

    [limits]
    max_calls = 300

    [agent]
    greeting = "Thanks for calling. How can I help?"

    [agent.listen.provider]
    type = "deepgram"
    model = "nova-3"

    [agent.think]
    provider = { type = "open_ai", model = "gpt-4o-mini" }
    prompt = "You are a friendly phone agent for Acme."

    [agent.speak.provider]
    type = "deepgram"
    model = "aura-2-thalia-en"

Keys are checked: a misspelt one is refused, naming the nearest known key. A partial
``[agent]`` is merged into the default agent: ``[agent] greeting = "Hi"`` keeps the
default listen, think and speak settings; a provider table replaces the default's whole.

Secrets come from the environment only: ``DEEPGRAM_API_KEY`` and ``ACDG_TOKEN`` (the
bearer token configured in VAIC / Live Hub; ``AC_TOKEN`` is read too, as the predecessor
bridge did).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from ..audio import DEFAULT_PREFERENCE
from ..config import AgentConfig, Limits, Playout, Reconnect, Secret, check_keys
from ..errors import ConfigError
from ..protocols import deepgram as dg

__all__ = ["ServeSettings", "load_settings"]

DEFAULT_AGENT = dg.AgentSettings(
    listen=dg.ListenSettings(provider={"type": "deepgram", "model": "nova-3"}),
    think=dg.ThinkSettings(
        provider={"type": "open_ai", "model": "gpt-4o-mini"},
        prompt="You are a helpful, concise phone assistant.",
    ),
    speak=dg.SpeakSettings(provider={"type": "deepgram", "model": "aura-2-thalia-en"}),
    greeting="Hello! How can I help you today?",
)


class Server(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8000
    path: str = "/"
    ws: str = "acdg_asgi.serving:DirectWebSocketProtocol"  # uvicorn's, plus the direct path
    loop: str = "auto"
    log_format: str = "text"
    log_level: str = "info"
    metrics: bool = True  # GET <path>/metrics, when prometheus-client is installed
    records: str | None = None  # append one JSON line per finished call to this file


class Bridge(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    deepgram_url: str = dg.DEFAULT_URL
    media_formats: tuple[str, ...] = DEFAULT_PREFERENCE
    tags: tuple[str, ...] | None = None
    mip_opt_out: bool | None = None


class ServeSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    server: Server = msgspec.field(default_factory=Server)
    bridge: Bridge = msgspec.field(default_factory=Bridge)
    playout: Playout = msgspec.field(default_factory=Playout)
    limits: Limits = msgspec.field(default_factory=Limits)
    reconnect: Reconnect = msgspec.field(default_factory=Reconnect)
    agent: dg.AgentSettings = DEFAULT_AGENT

    def agent_config(self) -> AgentConfig:
        return AgentConfig(agent=self.agent, tags=self.bridge.tags,
                           mip_opt_out=self.bridge.mip_opt_out)

    @property
    def token(self) -> Secret | None:
        value = os.environ.get("ACDG_TOKEN") or os.environ.get("AC_TOKEN")
        return Secret(value) if value else None


def load_settings(path: Path | None, overrides: dict[str, dict[str, Any]]) -> ServeSettings:
    """Merge the TOML file (if any), ``ACDG_*`` environment variables and flag overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    env = {
        ("server", "host"): os.environ.get("ACDG_HOST"),
        ("server", "port"): os.environ.get("ACDG_PORT"),
        ("bridge", "deepgram_url"): os.environ.get("DEEPGRAM_URL"),
    }
    for (section, key), value in env.items():
        if value:
            data.setdefault(section, {})[key] = int(value) if key == "port" else value
    for section, values in overrides.items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    check_keys(data, ServeSettings, str(path) if path is not None else "settings")
    if isinstance(data.get("agent"), dict):
        data["agent"] = merged(msgspec.to_builtins(DEFAULT_AGENT), data["agent"],
                               msgspec.inspect.type_info(dg.AgentSettings))
    try:
        return msgspec.convert(data, ServeSettings)
    except (msgspec.ValidationError, ConfigError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def merged(default: Any, given: Any, info: msgspec.inspect.Type) -> Any:
    """``given`` laid over ``default`` (plain data of the type ``info``): settings objects
    merge key by key; anything else given (a provider's dict, a list) replaces the
    default's."""
    inspect = msgspec.inspect
    if isinstance(info, inspect.UnionType) and isinstance(given, dict):
        structs = [t for t in info.types if isinstance(t, inspect.StructType)]
        info = structs[0] if len(structs) == 1 else info
    if not (isinstance(info, inspect.StructType) and isinstance(default, dict)
            and isinstance(given, dict)):
        return given
    fields = {f.encode_name: f.type for f in info.fields}
    out = dict(default)
    for key, value in given.items():
        out[key] = merged(default.get(key), value, fields[key]) if key in fields else value
    return out
