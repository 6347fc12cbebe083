"""Call commands are defined once: every command has its Session method with the same
arguments, and ``bridge.control(cid)`` offers the same methods. No sockets here."""

from __future__ import annotations

import inspect

import msgspec
import pytest

from acdg_asgi import Session
from acdg_asgi.call import commands as cmd
from acdg_asgi.cluster.control import CallControl
from acdg_asgi.session import CallCommands


def command_methods() -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(CallCommands).items()
        if not name.startswith("_") and name != "run" and inspect.iscoroutinefunction(fn)
    }


def test_every_command_has_its_method_and_no_method_lacks_a_command() -> None:
    assert set(command_methods()) == set(cmd.COMMANDS)


@pytest.mark.parametrize("name", sorted(cmd.COMMANDS))
def test_a_method_takes_exactly_its_commands_fields(name: str) -> None:
    signature = command_methods()[name]
    params = [p for p in signature.parameters.values() if p.name != "self"]
    info = msgspec.inspect.type_info(cmd.COMMANDS[name])
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f for f in info.fields}
    assert [p.name for p in params] == list(fields)
    for p in params:
        field = fields[p.name]
        assert (p.default is inspect.Parameter.empty) == field.required, p.name
        if not field.required:
            assert p.default == field.default, p.name


def test_session_and_remote_control_share_the_methods() -> None:
    for name in cmd.COMMANDS:
        assert getattr(Session, name) is getattr(CallCommands, name)
        assert getattr(CallControl, name) is getattr(CallCommands, name)


def test_bad_arguments_are_refused_by_name_before_anything_is_sent() -> None:
    with pytest.raises(cmd.InvalidCommand, match="DTMF"):
        cmd.make_command("send_dtmf", {"digits": "12A"})  # VAIC ignores A-D
    with pytest.raises(cmd.InvalidCommand, match="destinaton"):
        cmd.make_command("transfer", {"destinaton": "sip:x@y"})
    with pytest.raises(cmd.InvalidCommand, match="no call command 'explode'"):
        cmd.make_command("explode", {})
    with pytest.raises(ValueError, match="invalid activity"):
        cmd.SendActivity(activity={"type": "event", "name": 5})


def test_commands_travel_as_json_and_come_back_equal() -> None:
    decoder = msgspec.json.Decoder(cmd.CommandUnion)
    for command in (
        cmd.Transfer(destination="sip:queue@pbx", handover_reason="asked for a human"),
        cmd.UpdateSpeak(speak=cmd.build(cmd.UpdateSpeak, {"speak": {
            "provider": {"type": "deepgram", "model": "aura-2-thalia-en"}}}).speak),
        cmd.RespondToFunctionCall(id="f1", name="lookup", content={"status": "shipped"}),
        cmd.AbortPrompts(),
        cmd.EnterSensitiveMode(keep_audio_from_agent=False),
        cmd.SendAgentMessage(content="This call is recorded.", interruptible=False),
    ):
        assert decoder.decode(msgspec.json.encode(command)) == command
