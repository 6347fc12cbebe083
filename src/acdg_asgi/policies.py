"""How a call behaves where VAIC and Deepgram leave a choice: the contact-centre policies.

Each is opt-in, one per bridge, given to :class:`~acdg_asgi.BridgeApp`::

    BridgeApp(
        agent=...,
        tools=TelephonyTools(end_call=True, transfer=TransferTargets({"sales": "sip:sales@pbx"}),
                             send_dtmf=True, play_url=PlayUrls({"terms": "https://x/terms.wav"})),
        interruption=Interruption(greeting=False, min_speech_ms=300),
        no_input=NoInput(timeout_s=8, reprompts=2),
        dtmf=DtmfInput(max_digits=6, terminator="#"),
        sensitive=SensitiveMode(pause_recording=True),
        redact=redact_card_numbers,
    )

:class:`CallOptions` carries them (and the older choices: VAIC session parameters,
participants, the failed-transfer message) into every call.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import msgspec

from .config import (
    DEFAULT_TRANSFER_FAILED,
    TRANSFER_REASONS,
    Participants,
    VaicSessionParams,
    _at_least,
    _check_types,
    _Checked,
)
from .errors import ConfigError
from .events import ToolRequest
from .protocols._codec import CheckedKeywords

__all__ = [
    "CallOptions",
    "DtmfInput",
    "Handled",
    "Interruption",
    "NoInput",
    "PlayUrls",
    "Proceed",
    "Prompt",
    "Refuse",
    "SensitiveMode",
    "TelephonyTools",
    "ToolCheck",
    "ToolVerdict",
    "TransferTarget",
    "TransferTargets",
    "redact_card_numbers",
    "transfer_reason",
]

_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DTMF_KEYS: Final = frozenset("0123456789*#ABCD")


# --- telephony tools ---------------------------------------------------------------------


class TransferTarget(_Checked, frozen=True):
    """Where ``transfer_call`` may send the caller: a ``sip:``/``sips:``/``tel:`` URI, what
    the agent is told it is for, and what goes with the transfer."""

    uri: str
    description: str = ""
    handover_reason: str | None = None
    sip_headers: tuple[dict[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.uri.startswith(("sip:", "sips:", "tel:")):
            raise ConfigError(f"TransferTarget(uri={self.uri!r}): a sip:, sips: or tel: URI")
        for header in self.sip_headers:
            if set(header) != {"name", "value"}:
                raise ConfigError(f"TransferTarget(sip_headers=...): each header is "
                                  f"{{'name': ..., 'value': ...}}, not {header!r}")


class Prompt(_Checked, frozen=True):
    """An audio file ``play_url`` may play: its URL (VAIC fetches it) and what it is."""

    url: str
    description: str = ""

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.url.startswith(("https://", "http://", "data:")):
            raise ConfigError(f"Prompt(url={self.url[:60]!r}): an http(s):// or data: URL")


def _named(kind: str, entries: dict[str, Any], make: Callable[[str], Any]) -> dict[str, Any]:
    if not entries:
        raise ConfigError(f"{kind}: name at least one")
    out = {}
    for name, entry in entries.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{kind}: name {name!r} must be 1-64 of A-Z a-z 0-9 _ -")
        out[name] = make(entry) if isinstance(entry, str) else entry
    return out


class TransferTargets(msgspec.Struct, frozen=True, metaclass=CheckedKeywords):
    """The named places the agent may transfer to, and nowhere else:
    ``TransferTargets({"sales": "sip:sales@pbx", "billing": TransferTarget("tel:+1...",
    description="invoices and refunds")})``. The agent chooses by name."""

    targets: dict[str, str | TransferTarget]

    def __post_init__(self) -> None:
        _check_types(self)
        msgspec.structs.force_setattr(self, "targets", _named(
            "TransferTargets", self.targets, lambda uri: TransferTarget(uri=uri)))

    def get(self, name: str) -> TransferTarget | None:
        target = self.targets.get(name)
        return target if isinstance(target, TransferTarget) else None


class PlayUrls(msgspec.Struct, frozen=True, metaclass=CheckedKeywords):
    """The named audio files the agent may play: ``PlayUrls({"terms": "https://.../terms.wav"})``."""

    prompts: dict[str, str | Prompt]

    def __post_init__(self) -> None:
        _check_types(self)
        msgspec.structs.force_setattr(self, "prompts", _named(
            "PlayUrls", self.prompts, lambda url: Prompt(url=url)))

    def get(self, name: str) -> Prompt | None:
        prompt = self.prompts.get(name)
        return prompt if isinstance(prompt, Prompt) else None


class Proceed(msgspec.Struct, frozen=True, kw_only=True):
    """Run the tool; ``params`` join its activity's ``activityParams`` (SIP headers on a
    transfer or hangup, ``playUrlMediaFormat``, ...)."""

    params: dict[str, Any] = msgspec.field(default_factory=dict)


class Refuse(msgspec.Struct, frozen=True):
    """Do not run the tool; the agent is told ``reason`` as the function's result."""

    reason: str


class Handled(msgspec.Struct, frozen=True):
    """The application did it; ``result`` (a string, or JSON) goes back to the agent."""

    result: Any


ToolVerdict = Proceed | Refuse | Handled
ToolCheck = Callable[[Any, ToolRequest], Awaitable[ToolVerdict | None]]
"""``async def check(session, request) -> Proceed | Refuse | Handled | None`` (None: run
it as it is)."""


class TelephonyTools(_Checked, frozen=True):
    """Functions the agent may call to act on the phone line, declared to Deepgram as
    client-side functions (``defer_until_eot``: never for a turn the caller continues) and
    run by the bridge once the agent's words have played:

    ``end_call``      hang up (``hangup`` activity)
    ``transfer_call`` transfer to one of the named ``transfer`` targets; VAIC's outcome
                      (answered, or failed with its reason) is the function's result
    ``send_dtmf``     send keys to the far end (``sendDtmf``), e.g. an IVR's menu
    ``play_url``      play one of the named ``play_url`` prompts (``playUrl``); with
                      ``play_wait_s`` the result waits for VAIC's ``playFinished`` (list
                      it in ``sendEventsToBot``) or ``playUrlFailed``

    ``check``: an async hook ``(session, ToolRequest)`` run before each tool, which may
    :class:`Refuse` it, add to it (:class:`Proceed` with ``params``) or do it itself
    (:class:`Handled`). A caller who talks over the agent's last words withdraws the tool
    (Deepgram's ``FunctionCallCancelled``).
    """

    end_call: bool = False
    transfer: TransferTargets | None = None
    send_dtmf: bool = False
    play_url: PlayUrls | None = None
    play_wait_s: float = 0.0
    check: ToolCheck | None = None

    def __post_init__(self) -> None:
        _check_types(self, skip=("check",))
        _at_least(self, 0, "play_wait_s")
        if self.check is not None and not callable(self.check):
            raise ConfigError(f"TelephonyTools(check={self.check!r}): an async function "
                              "(session, request)")

    @property
    def names(self) -> tuple[str, ...]:
        """The functions these tools declare."""
        return tuple(name for name, on in (
            ("end_call", self.end_call), ("transfer_call", self.transfer is not None),
            ("send_dtmf", self.send_dtmf), ("play_url", self.play_url is not None)) if on)


# --- interruption, no input, DTMF --------------------------------------------------------


class Interruption(_Checked, frozen=True):
    """What may cut the agent short.

    ``by``: ``"speech"`` (the caller talking, the default), ``"dtmf"`` (a key only),
    ``"any"`` (either) or ``"none"``. ``greeting=False``: the call's first utterance (the
    greeting) plays in full whatever the caller does; ``send_agent_message(...,
    interruptible=False)`` does the same for one utterance (a legal disclosure).
    ``min_speech_ms``: caller speech (counted by the bridge in the caller's audio) that a
    barge-in needs before it cuts; a cough or an "mhm" then does not.

    An utterance that is not cut plays in full from the audio already received: Deepgram
    stops synthesising at the caller's first word, hears what the caller says and answers
    after it.
    """

    by: Literal["speech", "dtmf", "any", "none"] = "speech"
    greeting: bool = True
    min_speech_ms: int = 0

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 0, "min_speech_ms")


class NoInput(_Checked, frozen=True):
    """When the caller says nothing: reprompt, then hang up politely.

    ``timeout_s`` of silence after the agent's words have played (or VAIC's
    ``noUserInput``, once it sends one: list it in ``sendEventsToBot``) makes the agent
    say ``reprompt`` (``reprompt_as="agent"``) or hands it to the agent as if the caller
    had said it (``"user"``, e.g. ``"NO-USER-INPUT-{count}"`` for the LLM to handle).
    After ``reprompts`` of them in a row the agent says ``goodbye`` and the call is hung
    up with ``reason`` (``session_end`` reason ``no_input``). The caller's voice or a key
    starts the count again. ``bridge_timer=False`` leaves the timing to VAIC alone.
    """

    timeout_s: float = 8.0
    reprompts: int = 2
    reprompt: str = "Are you still there?"
    reprompt_as: Literal["agent", "user"] = "agent"
    goodbye: str | None = "I haven't heard from you, so I'll end the call now. Goodbye."
    reason: str = "no input from the caller"
    bridge_timer: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 1e-9, "timeout_s")
        _at_least(self, 0, "reprompts")

    def reprompt_text(self, count: int) -> str:
        return self.reprompt.replace("{count}", str(count))


class DtmfInput(_Checked, frozen=True):
    """Keys the caller presses, into the conversation.

    Each ``DTMF`` activity goes to the agent at once as a user message, ``format`` with
    ``{digits}`` (``"DTMF-{digits}"``, as Live Hub's agents get them), unless collection is
    asked for: ``max_digits`` keys, or up to the ``terminator`` key (not included), or
    what was keyed when ``timeout_s`` passes without a key. On the terminator the bridge
    also sends ``ForceEndTurn`` (``force_end_turn``; Flux listen models) so what the
    caller said before it is answered now. Each input is a ``dtmf_collected`` event.
    ``to_agent=False`` only collects.
    """

    to_agent: bool = True
    format: str = "DTMF-{digits}"
    max_digits: int | None = None
    terminator: str | None = None
    timeout_s: float = 3.0
    force_end_turn: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 1, "max_digits", none_ok=True)
        _at_least(self, 1e-9, "timeout_s")
        if self.terminator is not None and (
                len(self.terminator) != 1 or self.terminator not in _DTMF_KEYS):
            raise ConfigError(f"DtmfInput(terminator={self.terminator!r}): one of 0-9 * # A-D")

    @property
    def collects(self) -> bool:
        return self.max_digits is not None or self.terminator is not None

    def message(self, digits: str) -> str:
        return self.format.replace("{digits}", digits)


# --- sensitive mode ----------------------------------------------------------------------


class SensitiveMode(_Checked, frozen=True):
    """What ``session.sensitive()`` does (payment details, identity checks).

    ``pause_recording``: VAIC's call recording pauses (``pauseCallRecording``) and resumes
    after. ``keep_audio_from_agent``: the agent hears silence instead of the caller;
    ``keep_digits_from_agent``: keys reach the agent masked (``DTMF-[redacted]``). What
    the caller says or keys meanwhile is ``mask`` in the transcript, the record, the
    events and what goes back to VAIC; the keys themselves reach only the code inside
    the ``sensitive()`` block (``await sensitive.digits()``).
    """

    pause_recording: bool = True
    keep_audio_from_agent: bool = True
    keep_digits_from_agent: bool = True
    mask: str = "[redacted]"

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.mask:
            raise ConfigError("SensitiveMode(mask=''): the mask must show something")


_CARD: Final = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def redact_card_numbers(text: str) -> str:
    """``text`` with every payment card number (13-19 digits, spaces or dashes between,
    passing the Luhn check) replaced by ``[card]``: a ``redact`` hook for the bridge."""

    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "[card]" if _luhn(digits) else match.group()

    return _CARD.sub(replace, text)


# --- all of them, for every call ---------------------------------------------------------


class CallOptions(msgspec.Struct, kw_only=True, frozen=True):
    """How a call behaves where VAIC and Deepgram leave a choice (one per bridge).

    ``transfer_failed_message``: what the agent says when VAIC reports a failed transfer
    (``{reason}`` becomes e.g. "the line is busy"); ``None`` leaves it to the application's
    ``transfer_failed`` handler. A transfer the agent asked for with ``transfer_call``
    gets the outcome as the function's result instead. ``redact``: a function over every
    transcript text (both sides) before anyone sees it (:func:`redact_card_numbers`), and
    over every value in function calls' arguments and answers as the history keeps them
    (the handler gets the arguments as sent).
    """

    vaic_session: VaicSessionParams | None = None
    participants: Participants = Participants()
    transfer_failed_message: str | None = DEFAULT_TRANSFER_FAILED
    tools: TelephonyTools | None = None
    interruption: Interruption = Interruption()
    no_input: NoInput | None = None
    dtmf: DtmfInput | None = None
    sensitive: SensitiveMode = SensitiveMode()
    redact: Callable[[str], str] | None = None

    def transfer_failed_text(self, reason_code: str | None, reason: str | None) -> str | None:
        if self.transfer_failed_message is None:
            return None
        return self.transfer_failed_message.replace("{reason}", transfer_reason(
            reason_code, reason))


def transfer_reason(reason_code: str | None, reason: str | None) -> str:
    """VAIC's reason a transfer failed, as the agent would say it."""
    return TRANSFER_REASONS.get(reason_code or "") or reason or "it did not go through"
