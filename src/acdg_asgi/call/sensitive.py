"""Sensitive mode (payment details, identity checks) and the redaction hook.

While the mode is on, what the caller says or keys is masked where it enters the call:
the transcript (so the history, the shared store, a new agent connection and the record),
``conversation_text`` and the other events (so every handler and observer), what goes
back to VAIC (``userStream.speech.recognition``, captions). A caller turn that began
while the mode was on stays masked when its text comes after the mode ended. Keys go
raw only to :attr:`Masking.captured`, which the runtime hands to the ``sensitive()``
block's reader and no one else.

The redaction hook (``BridgeApp(redact=...)``) runs over every transcript text, of both
sides, at the same place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

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
        return self._redact(content) if self._redact is not None else content

    def said(self, text: str | None) -> str | None:
        """Text from VAIC (its own recognition) as everyone sees it."""
        if text is None:
            return None
        if self.on:
            return self.mode.mask
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
