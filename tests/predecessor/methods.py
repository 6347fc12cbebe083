"""The predecessor README's handler and method examples, as one app.

The README's code is kept as written there, imports aside ("import changed"). What the
README leaves to the reader is marked "glue": the bridge's config, ``lookup_order``,
which caller keys run the examples that are bare statements, and printing what
happened for the test to read. tests/test_migration.py runs it as a script.
"""
# ruff: noqa
# fmt: off

import asyncio
import json
import os

from acdg_asgi.compat import (  # import changed
    BridgeConfig,
    ConversationTextEvent,
    DeepgramBridge,
    FunctionCallRequestEvent,
    Session,
    SessionEndEvent,
    SessionStartEvent,
)

bridge = DeepgramBridge(BridgeConfig(  # glue
    deepgram_api_key=os.environ["DEEPGRAM_API_KEY"],
    deepgram_config={"agent": {"greeting": "Hello, how can I help?"}},
    ac_token="your-audiocodes-token",
))


async def lookup_order(arguments: str) -> str:  # glue
    return f"order {json.loads(arguments)['order_id']} has shipped"


# --- "Concurrency and the Session object" ---------------------------------------------------

@bridge.on("conversation_text")
async def on_text(session: Session, event: ConversationTextEvent) -> None:
    if "transfer me" in event.content.lower():
        await session.transfer("sip:queue@example.com")


# --- "Handling inbound AudioCodes activities" -----------------------------------------------

from acdg_asgi.compat import InboundActivityEvent  # import changed

@bridge.on("activity")
async def on_activity(event: InboundActivityEvent) -> None:
    name = event.activity.get("name")

    if name == "DTMF":
        digits = str(event.activity.get("value", ""))
        print(f"Caller pressed: {digits}")
        # e.g. route to a menu handler, append to an account-number buffer, etc.

    elif name == "noUserInput":
        count = event.activity.get("value", 0)
        print(f"Silence timeout fired (#{count})")
        # e.g. reprompt the caller, or hang up after N timeouts.

    else:
        # Unknown / future event — log it so you notice new activity types.
        print(f"unhandled activity: {name} {event.activity}")


# --- "Methods" ------------------------------------------------------------------------------

@bridge.on("conversation_text")
async def on_text(session: Session, event: ConversationTextEvent) -> None:
    if "agent" in event.content.lower():
        await session.send_agent_message("I'm here, how can I help?")


async def deepgram_voice_agent_control(session: Session) -> None:  # glue: caller key 1
    # Push the agent to speak something specific (e.g. after a long DB lookup).
    await session.send_agent_message("Thanks for waiting — I found your account.")

    # Swap to a different LLM mid-call (e.g. on user request, or as a fallback).
    await session.update_think({
        "provider": {"type": "anthropic", "model": "claude-sonnet-4-6"},
        "prompt": "You are a billing specialist."
    })

# Handle a function call from the agent.
@bridge.on("function_call_request")
async def on_function_call(session: Session, event: FunctionCallRequestEvent) -> None:
    for fc in event.functions:
        if fc.name == "get_order_status":
            result = await lookup_order(fc.arguments)
            await session.respond_to_function_call(fc.id, fc.name, result)


async def warm_transfer(session: Session) -> None:  # glue: caller key 8
    # Warm transfer to a queue.
    await session.transfer(
        "sip:queue@example.com",
        handover_reason="caller asked for a human",
    )

async def end_the_call(session: Session) -> None:  # glue: caller key 9
    # End the call from the bot side.
    await session.end_session()

async def audiocodes_bot_api_control(session: Session) -> None:  # glue: caller key 2
    # Play a pre-recorded prompt instead of TTS.
    await session.play_url("https://cdn.example.com/hold-music.wav")

    # Send DTMF (e.g. navigating an IVR after transfer).
    await session.send_dtmf("1234#")

    # Generic activity for anything the SDK doesn't wrap.
    await session.send_activity({
        "type": "event",
        "name": "customEvent",
        "activityParams": {"foo": "bar"},
    })


@bridge.on("session_start")
async def on_start(session: Session, event: SessionStartEvent) -> None:
    await session.start_call_recording({"recordingName": event.session_id})


async def archive_call(session_id, conversation_id, transcript):
    # Do something here
    # For example, POST to external CRM
    pass

@bridge.on("session_end")
async def on_end(session: Session, event: SessionEndEvent) -> None:
    transcript = session.get_transcript()
    await archive_call(session.session_id, session.conversation_id, transcript)


# --- glue: which key runs which example, and what the test reads --------------------------

KEYS = {"1": deepgram_voice_agent_control, "2": audiocodes_bot_api_control,
        "8": warm_transfer, "9": end_the_call}

@bridge.on("activity")
async def run_example(session: Session, event: InboundActivityEvent) -> None:
    if event.activity.get("name") == "DTMF" and event.activity.get("value") in KEYS:
        await KEYS[event.activity["value"]](session)

@bridge.on("session_end")
async def report(session: Session, event: SessionEndEvent) -> None:
    lines = [(line.role, line.content) for line in session.get_transcript()]
    print(f"ended {session.conversation_id} {session.session_id} {event.reason} "
          f"{json.dumps(lines)}", flush=True)


asyncio.run(bridge.run())
