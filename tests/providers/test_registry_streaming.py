"""Environment selection of the streaming vendors (Deepgram, Cartesia, OpenAI realtime), on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from llmrtc.errors import ConfigError
from llmrtc.providers.cartesia import CartesiaTTSProvider
from llmrtc.providers.deepgram import DeepgramSTTProvider, DeepgramTTSProvider
from llmrtc.providers.openai_realtime import OpenAIRealtimeSTTProvider
from llmrtc.providers.registry import create_stt_from_env, create_tts_from_env, env_vars
from tests.providers.conftest import Closer
from tests.providers.fakes.cartesia import FakeCartesia
from tests.providers.fakes.cartesia import tone as cartesia_tone
from tests.providers.fakes.deepgram import FakeDeepgram, Utterance
from tests.providers.fakes.deepgram import tone as aura_tone
from tests.providers.fakes.openai_realtime import FakeOpenAIRealtime, Speech
from tests.providers.helpers import serving


def test_keys_select_the_streaming_vendors(closing: Closer) -> None:
    stt = closing(create_stt_from_env({"DEEPGRAM_API_KEY": "dg", "OPENAI_API_KEY": "sk"}))
    assert isinstance(stt, DeepgramSTTProvider) and stt.capabilities.interim_results
    tts = closing(create_tts_from_env({"CARTESIA_API_KEY": "car", "OPENAI_API_KEY": "sk"}))
    assert isinstance(tts, CartesiaTTSProvider) and tts.capabilities.word_timestamps
    # ElevenLabs keeps winning when both TTS keys are set; a Deepgram key alone also gives Aura TTS.
    both = closing(create_tts_from_env({"CARTESIA_API_KEY": "car", "ELEVENLABS_API_KEY": "xi"}))
    assert both.name == "elevenlabs"
    aura = closing(create_tts_from_env({"DEEPGRAM_API_KEY": "dg", "DEEPGRAM_TTS_MODEL": "aura-2-zeus-en"}))
    assert isinstance(aura, DeepgramTTSProvider) and aura.model == "aura-2-zeus-en"


def test_explicit_choices_aliases_and_missing_keys(closing: Closer) -> None:
    env = {
        "STT_PROVIDER": "openai-realtime",
        "OPENAI_API_KEY": "sk",
        "OPENAI_REALTIME_STT_MODEL": "gpt-4o-mini-transcribe",
    }
    realtime = closing(create_stt_from_env({**env, "STT_LANGUAGE": "fr"}))
    assert isinstance(realtime, OpenAIRealtimeSTTProvider)
    assert realtime.model == "gpt-4o-mini-transcribe" and realtime.language == "fr"
    assert isinstance(
        closing(create_tts_from_env({"TTS_PROVIDER": "aura", "DEEPGRAM_API_KEY": "dg"})), DeepgramTTSProvider
    )
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        create_stt_from_env({"STT_PROVIDER": "deepgram"})
    with pytest.raises(ConfigError, match="CARTESIA_API_KEY"):
        create_tts_from_env({"TTS_PROVIDER": "cartesia", "OPENAI_API_KEY": "sk"})
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        create_stt_from_env({})
    assert {"DEEPGRAM_API_KEY", "CARTESIA_API_KEY", "CARTESIA_VOICE_ID", "OPENAI_REALTIME_STT_MODEL"} <= set(
        env_vars()
    )


async def test_env_selected_deepgram_and_cartesia_work_on_the_wire(closing: Closer) -> None:
    async with serving(FakeDeepgram()) as deepgram, serving(FakeCartesia()) as cartesia:
        deepgram.utterances = [Utterance.of("hello from the environment", 0.0)]
        env = {
            "DEEPGRAM_API_KEY": deepgram.api_key,
            "DEEPGRAM_BASE_URL": deepgram.base_url,
            "CARTESIA_API_KEY": cartesia.api_key,
            "CARTESIA_BASE_URL": cartesia.base_url,
            "CARTESIA_VOICE_ID": "voice-from-env",
            "PROVIDER_TIMEOUT_S": "5",
        }
        stt = closing(create_stt_from_env(env))

        async def audio() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"\x00\x00" * 1600

        finals = [r.text async for r in stt.transcribe_stream(audio()) if r.is_final and r.text]
        assert finals == ["hello from the environment"]
        tts = closing(create_tts_from_env(env))
        assert (await tts.speak("hi there")).audio == cartesia_tone(8, 24000)
        (context,) = cartesia.connections[0].contexts.values()
        assert context.requests[0]["voice"]["id"] == "voice-from-env"
        aura = closing(create_tts_from_env({**env, "TTS_PROVIDER": "deepgram"}))
        assert (await aura.speak("ok")).audio == aura_tone(2, 24000)
        await tts.aclose()  # its socket stays open until then; the fake waits for open sockets on shutdown


async def test_env_selected_openai_realtime_works_on_the_wire(closing: Closer) -> None:
    async with serving(FakeOpenAIRealtime()) as fake:
        fake.speech = [Speech("realtime from env", 0.1, 0.5)]
        env = {"STT_PROVIDER": "realtime", "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url}
        stt = closing(create_stt_from_env(env))

        async def audio() -> AsyncIterator[bytes]:
            for _ in range(12):
                yield b"\x00\x00" * 1600

        finals = [r.text async for r in stt.transcribe_stream(audio()) if r.is_final]
        assert finals == ["realtime from env"]


def test_modules_import_without_their_sdks_and_name_the_extra() -> None:
    """The streaming vendors' modules import with their SDKs missing; using one names the extra to install."""
    import subprocess
    import sys

    code = (
        "import asyncio, sys\n"
        "for m in ('deepgram', 'cartesia', 'mcp', 'websockets'): sys.modules[m] = None\n"
        "import llmrtc.providers.deepgram, llmrtc.providers.cartesia, llmrtc.providers.openai_realtime, llmrtc.mcp\n"
        "from llmrtc.errors import ConfigError\n"
        "from llmrtc.providers.registry import create_stt_from_env, create_tts_from_env\n"
        "async def main():\n"
        "    for provider, call in [\n"
        "        (create_tts_from_env({'CARTESIA_API_KEY': 'k'}), 'speak'),\n"
        "        (create_tts_from_env({'TTS_PROVIDER': 'deepgram', 'DEEPGRAM_API_KEY': 'k'}), 'speak'),\n"
        "    ]:\n"
        "        try:\n"
        "            await getattr(provider, call)('hi')\n"
        "        except ConfigError as e:\n"
        "            print('CONFIG', e)\n"
        "    async def silence():\n"
        "        yield b'\\x00\\x00' * 160\n"
        "    try:\n"
        "        async for _ in create_stt_from_env({'DEEPGRAM_API_KEY': 'k'}).transcribe_stream(silence()):\n"
        "            pass\n"
        "    except ConfigError as e:\n"
        "        print('CONFIG', e)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("CONFIG") == 3, out.stdout
    assert "llmrtc[cartesia]" in out.stdout and out.stdout.count("llmrtc[deepgram]") == 2
