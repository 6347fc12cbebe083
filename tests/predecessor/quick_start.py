"""The predecessor README's Quick Start, as written there: only its imports differ.

tests/test_migration.py runs it as a script, with ACDG_HOST/ACDG_PORT choosing where it
listens and DEEPGRAM_URL pointing it at the stand-in agent.
"""
# ruff: noqa
# fmt: off
import asyncio
import logging

from acdg_asgi.compat import (  # import changed
    DeepgramBridge,
    Session,
    BridgeConfig,
    SessionStartEvent,
)
from acdg_asgi.compat.types import (  # import changed
    DeepgramAgent,
    DeepgramAgentConfig,
    DeepgramListen,
    DeepgramSpeak,
    DeepgramSpeakProviderDeepgram,
    DeepgramThink,
    DeepgramThinkProviderOpenAI,
    CartesiaSpeakVoice,
    DeepgramSpeakProviderCartesia,
    DeepgramThinkProviderAnthropic,
    BridgeErrorEvent,
    WarningEvent
)

logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s [%(levelname)s] %(name)s: %(message)s",
)

deepgram_config: DeepgramAgentConfig = DeepgramAgentConfig(
    # You don't need to configure or set the Audio input/output settings.
    # It will be pulled dynamically from AudioCodes Bot API.

    agent=DeepgramAgent(
        listen=DeepgramListen(
            provider={"type": "deepgram", "model": "flux-general-en"},
        ),

    # It's highly recommended to configure multiple LLM providers so you have a fallback mechanism
    # https://developers.deepgram.com/docs/voice-agent-llm-models#using-multiple-llm-providers
        think=[
            DeepgramThink(
                provider=DeepgramThinkProviderOpenAI(
                    type="open_ai",
                    model="gpt-5.4-mini",
                ),
                prompt="You are a helpful assistant.",
            ),
            DeepgramThink(
                provider=DeepgramThinkProviderAnthropic(
                    type="anthropic",
                    model="claude-sonnet-4-6"
                )
            )
        ],

    # It's also highly recommended to configure multiple providers for TTS, for the same reasons.
    # https://developers.deepgram.com/docs/voice-agent-tts-models#using-multiple-tts-providers
        speak=[
            DeepgramSpeak(
                provider=DeepgramSpeakProviderDeepgram(
                    type="deepgram",
                    model="aura-2-helena-en"
                )
            ),
            DeepgramSpeak(
                provider=DeepgramSpeakProviderCartesia(
                    type="cartesia",
                    model_id="sonic-2",
                    voice=CartesiaSpeakVoice(
                        mode="id",
                        id="<your-desired-voice-id>"
                    # Sign up for a Cartesia account and then see the Voice Library for the Voice ID values.
                    # https://play.cartesia.ai/voices
                    )
                )
            )
        ],
        greeting="Hello from the otter slide!"
    ),
)

# The Deepgram___* config classes are helper types (autocomplete, etc.)
# You can also just pass a generic JSON object if you prefer, for example:
"""
deepgram_config = {
  "agent": {
    "listen": {
        "provider": {
            "type": "deepgram",
            "model": "flux-general-en"
        }
    },
    "think" {
    ...[etc.]...
    }
  }
}
"""


### This is how you initiate your bridge.
bridge = DeepgramBridge(BridgeConfig(
    deepgram_api_key="your-api-key",
    deepgram_config=deepgram_config,
    ac_token="your-audiocodes-token",  # Validates the Header Authentication configured in LiveHub / VAIC Bot Connection
    port=8000,  # default is port 8081. You can change it here.
))

@bridge.on("session_start")
async def on_start(session: Session, event: SessionStartEvent) -> None:
    print(f"Call started: {session.session_id}")
    print(event)

@bridge.on("error")
async def on_error(session: Session, event: BridgeErrorEvent) -> None:
    print(event)

@bridge.on("warning")
async def on_warning(session: Session, event: WarningEvent) -> None:
    print(event)

## Register your other bridge event handlers here!

asyncio.run(bridge.run())
