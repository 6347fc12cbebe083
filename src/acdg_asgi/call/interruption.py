"""What may cut the agent short (the ``Interruption`` policy), and the cut itself.

Every agent utterance is marked, as it begins, with what may cut it (:data:`BY_SPEECH`,
:data:`BY_DTMF`): the call's policy, or nothing for the greeting (``greeting=False``) and
for a message sent ``interruptible=False``. The caller's first word (Deepgram's
``UserStartedSpeaking``) then cuts at once, waits for ``min_speech_ms`` of the caller's
voice (counted here, in the caller's audio, only while such a barge-in is pending), or
leaves the utterance to play out from the audio already received: Deepgram stops
synthesising at the caller's first word either way, hears the caller, and answers after.
"""

from __future__ import annotations

from typing import Any, Final

from .. import events as ev
from ..audio import MediaFormat, is_loud
from ..policies import Interruption
from ..protocols import audiocodes as ac
from .base_parts import CallBase
from .playout import BY_DTMF, BY_SPEECH
from .state import CallState, Measure, Timer
from .tools import ToolRunner

__all__ = ["BargeIn"]

_BY: Final = {"speech": BY_SPEECH, "dtmf": BY_DTMF, "any": BY_SPEECH | BY_DTMF, "none": 0}
_PENDING_GRACE_S: Final = 1.5  # a pending barge-in waits this long past min_speech_ms
_PROTECTED_KEPT: Final = 8  # texts of uninterruptible messages waiting for their utterance


class BargeIn:
    """One call's interruption policy at work."""

    __slots__ = ("_fmt", "_grace", "_min_ms", "_protected", "by", "first", "pending", "tools",
                 "voiced_ms")

    def __init__(self, policy: Interruption, fmt: MediaFormat, tools: ToolRunner) -> None:
        self.tools = tools  # what waits for the agent's words is off when they are cut
        self.by = _BY[policy.by]
        self.first = not policy.greeting  # the call's first utterance cannot be cut
        self._min_ms = float(policy.min_speech_ms)
        self._grace = self._min_ms / 1000 + _PENDING_GRACE_S
        self._fmt = fmt
        self._protected: list[str] = []  # the newest _PROTECTED_KEPT (an empty deque: 760 B)
        self.pending = False  # a barge-in waits for min_speech_ms of the caller's voice
        self.voiced_ms = 0.0

    def protect(self, text: str) -> None:
        """The agent was asked to say ``text``, which the caller may not cut."""
        self._protected.append(text.strip())
        del self._protected[:-_PROTECTED_KEPT]

    def cut_by(self, text: str) -> int:
        """What may cut the agent utterance ``text``, which begins now."""
        if self.first:
            self.first = False
            return 0
        key = text.strip()
        if key in self._protected:
            self._protected.remove(key)
            return 0
        return self.by

    def caller_spoke(self) -> None:
        """The caller said something: the greeting is behind us."""
        self.first = False

    # --- the cut -------------------------------------------------------------------------

    def cut(self, call: CallBase, now: float) -> dict[str, Any]:
        """Stop the agent's utterance now: the play stream stops, what was not sent is
        dropped, the transcript marks what the caller heard. The cut's fields for an event:
        sent/heard/dropped ms, and the heard/unheard text if the agent was speaking."""
        speaking = call.playout.speaking
        cut, stop = call.playout.cut(now)
        if stop is not None and call.state is CallState.ACTIVE:
            call.to_vaic.append(stop)
            call.barge_in_at = now
        fields: dict[str, Any] = {"agent_audio_sent_ms": cut.sent_ms,
                                  "agent_audio_heard_ms": cut.heard_ms,
                                  "agent_audio_dropped_ms": cut.dropped_ms}
        if speaking:
            call.stats.barge_ins += 1
            call.observations.append((Measure.BARGE_IN_TAIL, (cut.sent_ms - cut.heard_ms) / 1000))
            call.discard_agent_audio = True
            self.tools.barged_in(call, now)
            fields["agent_heard_text"], fields["agent_unheard_text"] = call.heard(
                cut.tag, cut.heard, cut.unplayed)
        return fields

    # --- the caller's first word -------------------------------------------------------

    def started_speaking(self, call: CallBase, now: float) -> bool:
        """Deepgram heard the caller start while the agent speaks: whether to cut now.
        Otherwise the utterance plays on (or waits for ``min_speech_ms``)."""
        if not call.playout.cuttable(BY_SPEECH):
            return False
        if not self._min_ms:
            return True
        self.pending = True
        self.voiced_ms = 0.0
        call.timers.set(Timer.BARGE_IN, now + self._grace)
        call.watch_caller_audio()
        return False

    def heard(self, audio: bytes) -> bool:
        """Caller audio while a barge-in is pending: whether it now has enough voice."""
        if is_loud(audio, self._fmt):
            self.voiced_ms += self._fmt.duration_ms(len(audio))
        return self.voiced_ms >= self._min_ms

    def confirmed(self, call: CallBase, now: float) -> None:
        """The caller kept talking past ``min_speech_ms``: cut the agent now."""
        self.drop_pending(call)
        if call.playout.speaking:
            fields = self.cut(call, now)
            call.to_vaic.append(ac.UserStreamSpeechStarted(participant=call.hearing))
            call.emit(ev.AgentInterruptedEvent, now, by="speech", **_interrupted(fields))

    def drop_pending(self, call: CallBase) -> None:
        if self.pending:
            self.pending = False
            call.timers.clear(Timer.BARGE_IN)
            call.watch_caller_audio()

    # --- a key ---------------------------------------------------------------------------

    def key(self, call: CallBase, now: float) -> None:
        """The caller pressed a key: cut the agent if the policy lets keys do it."""
        if not call.playout.speaking or not call.playout.cuttable(BY_DTMF):
            return
        self.drop_pending(call)
        fields = self.cut(call, now)
        call.emit(ev.AgentInterruptedEvent, now, by="dtmf", **_interrupted(fields))


def _interrupted(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "agent_audio_dropped_ms"}
