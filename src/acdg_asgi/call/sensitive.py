"""Sensitive mode (payment details, identity checks) and the redaction hook.

While the mode is on, what the caller says or keys is masked where it enters the call:
the transcript (so the history, the shared store, a new agent connection and the record),
``conversation_text`` and the other events (so every handler and observer), what goes
back to VAIC (``userStream.speech.recognition``, captions). A caller turn that began
while the mode was on stays masked when its text comes after the mode ended. Keys go
raw only to :attr:`Masking.captured`, which the runtime hands to the ``sensitive()``
block's reader and no one else.

The redaction hook (``BridgeApp(redact=...)``) runs over every transcript text, of both
sides, at the same place, and over every value in the arguments and answers of function
calls as the history keeps them (in sensitive mode the arguments' values are masked
there, and so observers get them). The application's handlers get a function call's
arguments as the agent sent them: they are what it must act on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from .. import events as ev
from ..policies import SensitiveMode
from ..protocols import audiocodes as ac
from .base_parts import CallBase

__all__ = ["Masking"]

# Activities that carry what the caller said or keyed, and the fields that carry it.
_CALLER_INPUT: Final = {"dtmf": ("value",), "speechhypothesis": ("value", "text", "parameters")}


class Masking:
    __slots__ = ("_redact", "captured", "mode", "on", "policy", "turn_masked")

    def __init__(self, policy: SensitiveMode, redact: Callable[[str], str] | None) -> None:
        self.policy = policy
        self.mode = policy  # the one in force (sensitive() may override per block)
        self._redact = redact
        self.on = False
        self.turn_masked = False  # the caller's turn began while the mode was on
        self.captured: list[str] = []  # raw keys, for the sensitive() block only

    # --- on and off ------------------------------------------------------------------------

    def enter(self, call: CallBase, now: float, mode: SensitiveMode) -> None:
        if self.on:
            return
        self.on, self.mode = True, mode
        call.shared_changed()
        if mode.pause_recording:
            call.send_activities((ac.Activity(type="event", name="pauseCallRecording"),), now)
        call.emit(ev.SensitiveModeEvent, now, on=True, recording_paused=mode.pause_recording)
        call.watch_caller_audio()

    def leave(self, call: CallBase, now: float) -> None:
        if not self.on:
            return
        self.on = False
        call.shared_changed()
        if self.mode.pause_recording:
            call.send_activities((ac.Activity(type="event", name="resumeCallRecording"),), now)
        call.emit(ev.SensitiveModeEvent, now, on=False, recording_paused=self.mode.pause_recording)
        self.mode = self.policy
        call.watch_caller_audio()

    @property
    def mutes_caller(self) -> bool:
        return self.on and self.mode.keep_audio_from_agent

    @property
    def mask(self) -> str:
        return self.mode.mask

    # --- what is masked ------------------------------------------------------------------

    def caller_started(self) -> None:
        """The caller started a turn (Deepgram's ``UserStartedSpeaking``)."""
        self.turn_masked = self.on

    def text(self, role: str, content: str) -> str:
        """A transcript text as everyone sees it: masked if the caller said it in
        sensitive mode, then through the redaction hook."""
        if role == "user" and (self.on or self.turn_masked):
            self.turn_masked = False
            return self.mode.mask
        return self._redacted(content)

    def said(self, text: str | None) -> str | None:
        """Text from VAIC (its own recognition) as everyone sees it."""
        if text is None:
            return None
        if self.on:
            return self.mode.mask
        return self._redacted(text)

    def arguments(self, text: str) -> str:
        """A function call's arguments (JSON text) as the history keeps them: in sensitive
        mode every value masked (the agent took them from what the caller said), else each
        through the redaction hook."""
        if not self.on and self._redact is None:
            return text
        return self._json_text(text, mask_all=self.on)

    def answer(self, text: str) -> str:
        """A function's answer as the history keeps it: through the redaction hook."""
        if self._redact is None:
            return text
        return self._json_text(text, mask_all=False)

    def _json_text(self, text: str, *, mask_all: bool) -> str:
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError:  # not JSON: text like any other
            return self.mode.mask if mask_all else self._redacted(text)
        return msgspec.json.encode(self._values(value, mask_all)).decode()

    def _values(self, value: Any, mask_all: bool) -> Any:
        if isinstance(value, dict):
            return {key: self._values(item, mask_all) for key, item in value.items()}
        if isinstance(value, list):
            return [self._values(item, mask_all) for item in value]
        if value is None or isinstance(value, bool):
            return value
        if mask_all:
            return self.mode.mask
        if isinstance(value, str):
            return self._redacted(value)
        number = str(value)  # a card number may come as a JSON number
        redacted = self._redacted(number)
        return value if redacted == number else redacted

    def _redacted(self, text: str) -> str:
        return self._redact(text) if self._redact is not None else text

    def keys(self, digits: str) -> str:
        return self.mode.mask if self.on else digits

    def activity(self, raw: dict[str, Any]) -> dict[str, Any]:
        """VAIC's activity as the application sees it (``activity`` event)."""
        if not self.on:
            return raw
        name = raw.get("name")
        fields = _CALLER_INPUT.get(name.lower(), ()) if isinstance(name, str) else ()
        if raw.get("type") == "message":
            fields = ("text", "value", "parameters")
        if not fields:
            return raw
        return {k: (self.mode.mask if k in fields else v) for k, v in raw.items()}
