"""``acdg serve`` configuration: a TOML file, then environment variables, then flags.

``acdg serve --print-config`` prints a sample ``acdg.toml`` with every key and its
default (:func:`sample_config`). Every flag of ``acdg serve`` has its key in
``[server]``; ``[bridge]``, ``[playout]``, ``[limits]``, ``[reconnect]`` and ``[agent]``
configure the bridge that ``acdg serve`` builds when no ``APP`` is given.

Keys are checked: a misspelt one is refused, naming the nearest known key. A partial
``[agent]`` is merged into the default agent: ``[agent] greeting = "Hi"`` keeps the
default listen, think and speak settings; a provider table replaces the default's whole.

Secrets come from the environment only: ``DEEPGRAM_API_KEY`` and ``ACDG_TOKEN`` (the
bearer token configured in VAIC / Live Hub; ``AC_TOKEN`` is read too, as the predecessor
bridge did). ``ACDG_HOST``, ``ACDG_PORT``, ``ACDG_PATH`` and ``DEEPGRAM_URL`` override
the file; flags override both.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ..app import DEFAULT_DRAIN_TIMEOUT_S
from ..asgi.mount import normalise_path
from ..audio import DEFAULT_PREFERENCE
from ..config import AgentConfig, Limits, Playout, Reconnect, Secret, check_keys
from ..errors import ConfigError
from ..protocols import deepgram as dg
from . import values

__all__ = ["ServeSettings", "in_container", "load_settings", "sample_config"]

DEFAULT_AGENT = dg.AgentSettings(
    listen=dg.ListenSettings(provider={"type": "deepgram", "model": "nova-3"}),
    think=dg.ThinkSettings(
        provider={"type": "open_ai", "model": "gpt-4o-mini"},
        prompt="You are a helpful, concise phone assistant.",
    ),
    speak=dg.SpeakSettings(provider={"type": "deepgram", "model": "aura-2-thalia-en"}),
    greeting="Hello! How can I help you today?",
)


_CHOICES = {
    "drain": ("wait", "migrate"),
    "log_format": ("text", "json"),
    "log_level": ("debug", "info", "warning", "error"),
    "loop": ("auto", "uvloop", "asyncio"),
    "http": ("auto", "httptools", "h11"),
}


class Server(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    app: str | None = None
    factory: bool = False
    app_dir: str = "."
    host: str | None = None
    port: int = 8000
    ops_port: int | None = None  # /ready and /metrics here only, off the bot URL
    path: str = "/"
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    proxy_headers: bool = True
    forwarded_allow_ips: str | None = None
    drain: str = "wait"
    drain_timeout_s: float | None = None
    workers: int = 1
    ws: str = "acdg_asgi.serving:DirectWebSocketProtocol"  # uvicorn's, plus the direct path
    loop: str = "auto"
    http: str = "auto"
    log_format: str = "text"
    log_level: str = "info"
    metrics: bool = True  # GET <path>/metrics, when prometheus-client is installed
    records: str | None = None  # append one JSON line per finished call to this file

    def __post_init__(self) -> None:
        self.path = normalise_path(self.path)
        for key in ("port", "ops_port"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= 65535:
                raise ConfigError(f"{key} {value} is out of range: use 1-65535 (0 picks a "
                                  "free one)")
        if self.ops_port is not None and self.ops_port == self.port != 0:
            raise ConfigError(f"ops_port {self.ops_port} is the bot's port too: give "
                              "/ready and /metrics a port of their own, e.g. 9090")
        for key, choices in _CHOICES.items():
            if getattr(self, key) not in choices:
                raise ConfigError(f"{key} must be one of {', '.join(choices)}, "
                                  f"not {getattr(self, key)!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be 1 or more, not {self.workers}")
        if self.drain_timeout_s is not None and not self.drain_timeout_s >= 0:
            raise ConfigError(f"drain_timeout_s must be 0 or more, not {self.drain_timeout_s}")
        if self.app is not None and ":" not in self.app:
            raise ConfigError(f"app {self.app!r}: use module:attribute, e.g. myapp:app")

    @property
    def bind_host(self) -> str:
        """``host``, else all interfaces in a container and loopback elsewhere."""
        if self.host:
            return self.host
        return "0.0.0.0" if in_container() else "127.0.0.1"


def in_container() -> bool:
    """Docker, Podman or Kubernetes: loopback there cannot be reached from outside."""
    return (Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
            or "KUBERNETES_SERVICE_HOST" in os.environ)


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


# Environment variables acdg serve reads (the secrets apart), each checked as it is read.
_ENV: tuple[tuple[str, tuple[str, str], Callable[[str], object]], ...] = (
    ("ACDG_HOST", ("server", "host"), str.strip),
    ("ACDG_PORT", ("server", "port"), values.port),
    ("ACDG_PATH", ("server", "path"), normalise_path),
    ("DEEPGRAM_URL", ("bridge", "deepgram_url"), str.strip),
)


def load_settings(path: Path | None, overrides: dict[str, dict[str, Any]]) -> ServeSettings:
    """Merge the TOML file (if any), ``ACDG_*`` environment variables and flag overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    for variable, (section, key), read in _ENV:
        text = os.environ.get(variable)
        if text:
            try:
                data.setdefault(section, {})[key] = read(text)
            except ConfigError as exc:
                raise ConfigError(f"{variable}: {exc}") from None
    for section, given in overrides.items():
        data.setdefault(section, {}).update({k: v for k, v in given.items() if v is not None})
    where = str(path) if path is not None else "settings"
    check_keys(data, ServeSettings, where)
    if isinstance(data.get("agent"), dict):
        data["agent"] = merged(msgspec.to_builtins(DEFAULT_AGENT), data["agent"],
                               msgspec.inspect.type_info(dg.AgentSettings))
    try:
        return msgspec.convert(data, ServeSettings)
    except (msgspec.ValidationError, ConfigError) as exc:
        raise ConfigError(_located(str(exc), path)) from None


def _located(message: str, path: Path | None) -> str:
    """msgspec's ``... - at `$.server.port``` as ``acdg.toml [server] port: ...``."""
    text, _, at = message.rpartition(" - at `$.")
    if not text:
        return f"{path}: {message}" if path is not None else message
    section, _, key = at.rstrip("`").partition(".")
    place = f"[{section}]" + (f" {key}" if key else "")
    return f"{path} {place}: {text}" if path is not None else f"{place}: {text}"


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


# --- the sample acdg.toml ------------------------------------------------------------------

_SECTIONS: dict[str, str] = {
    "server": "How acdg serve listens, drains and logs (each key is also a flag).",
    "bridge": "The bridge acdg serve builds when no APP is given.",
    "playout": "Agent audio toward VAIC.",
    "limits": "Bounds per call and per instance.",
    "reconnect": "Retries of the agent connection.",
    "agent": "The Deepgram agent (Settings.agent), when no APP is given.",
}
_KEYS: dict[str, str] = {
    "app": "module:attribute of your ASGI app (Starlette, FastAPI, Litestar) or BridgeApp",
    "factory": "app names a function that returns the app",
    "app_dir": "directory put first on the import path for app",
    "host": "interface to listen on; default 127.0.0.1, or 0.0.0.0 in a container",
    "port": "TCP port",
    "ops_port": "serve /ready and /metrics on this port only, not on the bot's (probes, "
                "Prometheus)",
    "path": "URL path of the bridge (without APP): /audiocodes serves /audiocodes and "
            "/audiocodes/",
    "ssl_certfile": "serve wss:// with this certificate chain (PEM); with ssl_keyfile",
    "ssl_keyfile": "the certificate's private key (PEM)",
    "proxy_headers": "trust X-Forwarded-For/-Proto from forwarded_allow_ips",
    "forwarded_allow_ips": "proxies trusted for those headers (comma-separated, or *); "
                           "default $FORWARDED_ALLOW_IPS or 127.0.0.1",
    "drain": "on SIGTERM: wait for calls (then hang up politely), or migrate them to "
             "another instance (needs ACDG_REDIS_URL)",
    "drain_timeout_s": f"how long calls may go on after SIGTERM (default "
                       f"{DEFAULT_DRAIN_TIMEOUT_S:.0f}, or the app's own drain_timeout_s)",
    "workers": "worker processes; each is an instance, so more than 1 needs a shared store",
    "ws": "uvicorn WebSocket protocol (the default adds the bridge's direct path)",
    "loop": "event loop: auto (uvloop where installed), uvloop, asyncio",
    "http": "HTTP parser: auto (httptools where installed), httptools, h11",
    "log_format": "text or json (one object per line, conversation_id as a field)",
    "log_level": "debug, info, warning, error",
    "metrics": "serve Prometheus metrics at <path>/metrics (needs acdg-asgi[metrics])",
    "records": "append one JSON line per finished call to this file (holds caller numbers "
               "and transcripts)",
    "deepgram_url": "agent endpoint (the EU host, the stand-in agent)",
    "media_formats": "formats accepted from VAIC, in order of preference",
    "tags": "Deepgram tags for usage reports",
    "mip_opt_out": "opt out of Deepgram's model improvement program",
    "vaic_budget": "how fast each VAIC socket may send; a socket over it is read slower, "
                   "warned, then closed",
    "dead_air_s": "the longest silence agent trouble may leave a caller in; then the hold "
                  "prompt, or a polite hang-up",
    "hold_prompt_url": "played (playUrl) to a caller waiting past dead_air_s while the agent "
                       "reconnects",
}
_EXAMPLES: dict[str, object] = {
    "app": "myapp:app", "host": "0.0.0.0", "ssl_certfile": "/etc/acdg/tls/tls.crt",
    "ssl_keyfile": "/etc/acdg/tls/tls.key", "ops_port": 9090, "forwarded_allow_ips": "10.0.0.0/8",
    "drain_timeout_s": DEFAULT_DRAIN_TIMEOUT_S, "records": "/var/log/acdg/calls.jsonl",
    "tags": ["acme"], "mip_opt_out": True, "max_calls": 1000,
    "hold_prompt_url": "https://example.com/hold.wav",
}


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, msgspec.Struct):  # a setting of its own (Limits.vaic_budget)
        return _toml(msgspec.to_builtins(value))
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _table(name: str, data: dict[str, Any], out: list[str]) -> None:
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if plain or name.count(".") == 0:
        out.append(f"[{name}]")
        out.extend(f"{k} = {_toml(v)}" for k, v in plain.items())
        out.append("")
    for key, value in data.items():
        if isinstance(value, dict):
            _table(f"{name}.{key}", value, out)


def sample_config() -> str:
    """A complete ``acdg.toml``: every key with its default (unset ones commented out)."""
    out = ["# acdg.toml: acdg serve --config acdg.toml", "# Secrets only from the "
           "environment: DEEPGRAM_API_KEY, ACDG_TOKEN, ACDG_REDIS_URL.", ""]
    defaults = ServeSettings()
    for section, doc in _SECTIONS.items():
        out.append(f"# {doc}")
        if section == "agent":
            _table("agent", msgspec.to_builtins(DEFAULT_AGENT), out)
            continue
        out.append(f"[{section}]")
        struct = getattr(defaults, section)
        for field in struct.__struct_fields__:
            value = getattr(struct, field)
            if field in _KEYS:
                out.append(f"# {_KEYS[field]}")
            if value is None:
                out.append(f"# {field} = {_toml(_EXAMPLES.get(field, ''))}")
            else:
                out.append(f"{field} = {_toml(value)}")
        out.append("")
    return "\n".join(out)
