"""Whether a call worked for its caller, beside whether the bot kept to the protocol.

A bot can follow every rule of the Bot API and still fail its caller: a bridge whose
agent is unreachable accepts the call, says nothing and hangs up with "agent
unavailable". These findings are judged from the finished :class:`~.report.CallReport`
and make ``report.ok`` false, as violations do, so that ``acdg call`` can serve as a
deployment smoke test.
"""

from __future__ import annotations

import re
from typing import Final

from .report import CallReport
from .rules import Failure

__all__ = ["ERROR_REASON", "FAILURE_CODES", "Failure", "judge"]

FAILURE_CODES: Final[dict[str, str]] = {
    "never-heard-agent": "the call was accepted, but no agent audio (nor a playUrl) came",
    "error-hangup": "the bot hung up with a reason that names an error",
    "no-answer": "the caller spoke and no agent audio followed within the reply timeout",
}
"""Every failure code, with what it means."""

ERROR_REASON: Final = re.compile(
    r"error|unavailable|fail|invalid|refused|denied|unauthori[sz]ed|forbidden|exception|"
    r"timed? ?out|unreachable|not found",
    re.IGNORECASE,
)
"""A hangup reason that names one of these is an error (the bridge's: "agent unavailable",
"agent error INVALID_SETTINGS")."""


def judge(report: CallReport, *, reply_timeout_ms: float) -> list[Failure]:
    """What did not work in a finished call that was accepted; [] for one never accepted."""
    if report.media_format is None:
        return []  # refused or unreachable: said in refused_reason / connect_error
    failures: list[Failure] = []
    heard = any(s.audio_ms > 0 for s in report.play_streams)
    played_url = any(a.activity.name == "playUrl" for a in report.activities)
    if not heard and not played_url:
        failures.append(Failure("never-heard-agent", "the caller never heard the agent: "
                                f"{len(report.play_streams)} play streams with no audio"))
    reason = report.hangup_reason
    if reason and ERROR_REASON.search(reason):
        hangup = next((a.t_ms for a in report.activities if a.activity.name == "hangup"), None)
        failures.append(Failure("error-hangup",
                                f"the bot hung up with an error reason: {reason!r}", hangup))
    failures.extend(_unanswered(report, reply_timeout_ms))
    return failures


def _unanswered(report: CallReport, timeout_ms: float) -> list[Failure]:
    """Utterances followed by silence from the bot for ``timeout_ms`` or more."""
    firsts = [s.first_chunk_ms for s in report.play_streams if s.first_chunk_ms is not None]
    speech = report.caller_speech
    out: list[Failure] = []
    for i, said in enumerate(speech):
        if said.end_ms is None:
            continue
        until = speech[i + 1].start_ms if i + 1 < len(speech) else report.duration_ms
        if until - said.end_ms < timeout_ms:
            continue  # the caller did not wait that long
        if not any(said.end_ms < t <= said.end_ms + timeout_ms for t in firsts):
            out.append(Failure("no-answer", f"no answer to utterance {said.utterance} within "
                               f"{timeout_ms:.0f} ms", said.end_ms + timeout_ms))
    return out
