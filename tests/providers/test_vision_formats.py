"""Frames reach each vendor in its own format, on the wire; LLaVA describes them when the LLM cannot see.

The images are real JPEGs (a red picture with a word, made with Pillow); each vendor's fake records the
request the real SDK sent, and the test decodes the image back out of it. The tool path is the real one:
the ``look`` tool runs in the ``ToolExecutor`` and :func:`llmrtc.vision.tool_messages` builds the messages.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import AsyncIterator

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.providers.anthropic import AnthropicLLMProvider
from llmrtc.providers.base import LLMProvider
from llmrtc.providers.bedrock import BedrockLLMProvider
from llmrtc.providers.google import GeminiLLMProvider
from llmrtc.providers.ollama import LlavaVisionProvider, OllamaLLMProvider
from llmrtc.providers.openai import OpenAILLMProvider
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.testing import ScriptedLLM
from llmrtc.tools import ToolContext, ToolExecutor, ToolRegistry
from llmrtc.types import LLMRequest, Message, ToolCallRequest, VisionAttachment
from llmrtc.vision import (
    Look,
    LookVia,
    VideoSource,
    VisionUnavailableError,
    forget_images,
    look_tool,
    tool_messages,
)
from tests.integration.vision.media import openai_images
from tests.providers.conftest import Closer
from tests.providers.fakes.anthropic import FakeAnthropic
from tests.providers.fakes.anthropic import Turn as AnthropicTurn
from tests.providers.fakes.bedrock import FakeBedrock
from tests.providers.fakes.bedrock import Turn as BedrockTurn
from tests.providers.fakes.google import FakeGemini
from tests.providers.fakes.google import Turn as GeminiTurn
from tests.providers.fakes.ollama import FakeOllama, OllamaFailure, OllamaTurn
from tests.providers.fakes.openai import ChatTurn, FakeOpenAI
from tests.providers.helpers import FAST, serving

RED = (220, 30, 30)
BLUE = (30, 60, 220)


def card(color: tuple[int, int, int], word: str = "HELLO") -> bytes:
    """A 320x240 JPEG of ``color`` with ``word`` in large white letters."""
    image = Image.new("RGB", (320, 240), color)
    draw = ImageDraw.Draw(image)
    draw.text((40, 80), word, fill=(255, 255, 255), font=ImageFont.load_default(size=60))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def color_of(jpeg: bytes) -> tuple[int, int, int]:
    """The median colour of the image (the background of a :func:`card`)."""
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).reshape(-1, 3)
    r, g, b = np.median(pixels, axis=0)
    return (int(r), int(g), int(b))


def near(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return all(abs(x - y) <= 12 for x, y in zip(a, b, strict=True))


class Camera:
    """A FrameSource with Alice's camera."""

    def __init__(self, jpeg: bytes) -> None:
        self.attachment = VisionAttachment.from_bytes(jpeg, source="camera")

    async def look(
        self, participant: str, source: VideoSource, *, turn_id: str | None = None, via: LookVia = "tool"
    ) -> Look:
        if participant.lower() != "alice" or source != "camera":
            raise VisionUnavailableError(f"no {source} for {participant}")
        return Look("alice-1", "Alice", "camera", self.attachment, 320, 240)


LOOK = ToolCallRequest(
    call_id="call_look", name="look", arguments={"participant": "Alice", "source": "camera"}
)


async def look_round(can_see: bool = True, vision: LlavaVisionProvider | None = None) -> list[Message]:
    """A user question, the assistant's ``look`` call and what the tool round adds, as messages."""
    executor = ToolExecutor(ToolRegistry([look_tool(Camera(card(RED)), llm_can_see=can_see, vision=vision)]))
    results = await executor.execute([LOOK], ToolContext(session_id="s", turn_id="t1"))
    return [
        Message.system("You can see."),
        Message.user("What do you see?", name="Alice"),
        Message.assistant("", tool_calls=[LOOK]),
        *tool_messages(results),
    ]


@pytest.fixture
async def anthropic() -> AsyncIterator[FakeAnthropic]:
    async with serving(FakeAnthropic()) as server:
        yield server


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    async with serving(FakeGemini()) as server:
        yield server


@pytest.fixture
async def bedrock(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> AsyncIterator[FakeBedrock]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", f"{tmp_path}/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", f"{tmp_path}/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    async with serving(FakeBedrock()) as server:
        yield server


async def ask(provider: LLMProvider, closing: Closer, messages: list[Message]) -> None:
    closing(provider)
    await provider.complete(LLMRequest(messages=messages))


async def test_openai_tool_image_follows_the_tool_message(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_openai.push_chat(ChatTurn(text="A red card."))
    provider = OpenAILLMProvider(
        api_key="sk-test", model="gpt-test", base_url=fake_openai.base_url, retry=fast_retry
    )
    await ask(provider, closing, await look_round())
    sent = fake_openai.requests[0].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert sent[3]["tool_call_id"] == "call_look" and "Alice's camera" in sent[3]["content"]
    assert [near(color_of(i), RED) for i in openai_images(sent)] == [True]
    text, image = sent[4]["content"]
    assert text["type"] == "text" and image["type"] == "image_url"
    url = image["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert near(color_of(base64.b64decode(url.split(",", 1)[1])), RED)


async def test_openai_turn_frames_in_order(
    fake_openai: FakeOpenAI, fast_retry: RetryPolicy, closing: Closer
) -> None:
    screen = VisionAttachment.from_bytes(card(BLUE, "CODE"), source="screen")
    camera = VisionAttachment.from_bytes(card(RED), source="camera")
    fake_openai.push_chat(ChatTurn(text="ok"))
    provider = OpenAILLMProvider(
        api_key="sk-test", model="gpt-test", base_url=fake_openai.base_url, retry=fast_retry
    )
    await ask(provider, closing, [Message.user("Look", name="Alice", attachments=[screen, camera])])
    parts = fake_openai.requests[0].body["messages"][0]["content"]
    colors = [color_of(base64.b64decode(p["image_url"]["url"].split(",", 1)[1])) for p in parts[1:]]
    assert near(colors[0], BLUE) and near(colors[1], RED)


async def test_anthropic_tool_result_then_image_in_one_user_turn(
    anthropic: FakeAnthropic, closing: Closer
) -> None:
    anthropic.push(AnthropicTurn(text="A red card."))
    provider = AnthropicLLMProvider(
        api_key="sk-ant-test", base_url=anthropic.base_url, retry=FAST, timeout_s=10
    )
    await ask(provider, closing, await look_round())
    body = anthropic.requests[0].body
    assert body["system"] == "You can see."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    blocks = body["messages"][2]["content"]
    assert [b["type"] for b in blocks] == ["tool_result", "image", "text"]  # tool results must come first
    assert blocks[0]["tool_use_id"] == "call_look"
    assert blocks[1]["source"]["type"] == "base64" and blocks[1]["source"]["media_type"] == "image/jpeg"
    assert near(color_of(base64.b64decode(blocks[1]["source"]["data"])), RED)


async def test_gemini_function_response_then_inline_image(gemini: FakeGemini, closing: Closer) -> None:
    gemini.push(GeminiTurn(text="A red card."))
    provider = GeminiLLMProvider(api_key="AIza-test", base_url=gemini.base_url, retry=FAST, timeout_s=10)
    await ask(provider, closing, await look_round())
    contents = gemini.requests[0].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    parts = contents[2]["parts"]
    keys = [next(iter(p)) for p in parts]
    assert keys[0] in ("functionResponse", "function_response") and keys[1] in ("inlineData", "inline_data")
    inline = parts[1][keys[1]]
    assert inline.get("mimeType", inline.get("mime_type")) == "image/jpeg"
    assert near(color_of(base64.urlsafe_b64decode(inline["data"])), RED)


async def test_bedrock_tool_result_then_image_block(bedrock: FakeBedrock, closing: Closer) -> None:
    bedrock.push(BedrockTurn(text="A red card."))
    provider = BedrockLLMProvider(
        region="eu-west-1",
        credentials={"accessKeyId": "AKIAFAKEKEY", "secretAccessKey": "fake-secret"},
        endpoint_url=bedrock.endpoint_url,
        retry=FAST,
        timeout_s=10,
    )
    await ask(provider, closing, await look_round())
    messages = bedrock.requests[0].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    blocks = messages[2]["content"]
    assert [next(iter(b)) for b in blocks] == ["toolResult", "image", "text"]
    assert blocks[1]["image"]["format"] == "jpeg"
    assert near(color_of(base64.b64decode(blocks[1]["image"]["source"]["bytes"])), RED)


async def test_ollama_images_on_the_follow_up_message(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    fake_ollama.push(OllamaTurn(text="A red card."))
    provider = OllamaLLMProvider(model="llava:7b", base_url=fake_ollama.base_url, retry=fast_retry)
    await ask(provider, closing, await look_round())
    sent = fake_ollama.requests[0].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert "images" not in sent[3] and len(sent[4]["images"]) == 1
    assert near(color_of(base64.b64decode(sent[4]["images"][0])), RED)


async def test_llava_describes_the_frame_for_a_blind_llm_turn(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    """``VISION=turn`` with an LLM that cannot see: LLaVA gets the JPEG, the LLM gets words only."""
    fake_ollama.push(OllamaTurn(text=" A red card with the word HELLO. "))
    llava = closing(LlavaVisionProvider(base_url=fake_ollama.base_url, retry=fast_retry))
    llm = ScriptedLLM(["It is a red card."], vision=False)
    orchestrator = ConversationOrchestrator(
        ConversationProviders(llm=llm, vision=llava), OrchestratorConfig(system_prompt="Be brief.")
    )
    frame = VisionAttachment.from_bytes(card(RED), source="camera")
    events = [
        e async for e in orchestrator.run_text_turn_stream("What do you see?", [frame], speaker="Alice")
    ]
    assert type(events[-1]).__name__ == "TurnCompleteEvent"
    asked = fake_ollama.requests[0].body
    assert asked["model"] == "llava:7b" and asked["stream"] is False
    assert near(color_of(base64.b64decode(asked["messages"][0]["images"][0])), RED)
    user = llm.requests[0].messages[-1]
    assert user.attachments == [] and "[Attached image: A red card with the word HELLO.]" in user.content


async def test_llava_answers_the_look_tool_for_a_blind_llm(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    """``VISION=tool`` with an LLM that cannot see: the tool result is LLaVA's description, no image."""
    fake_ollama.push(OllamaTurn(text="A red card."))
    llava = closing(LlavaVisionProvider(base_url=fake_ollama.base_url, retry=fast_retry))
    messages = await look_round(can_see=False, vision=llava)
    assert [m.role for m in messages[-1:]] == ["tool"]
    assert messages[-1].content == "Alice's camera shows: A red card."
    assert near(color_of(base64.b64decode(fake_ollama.requests[0].body["messages"][0]["images"][0])), RED)
    fake_ollama.push(OllamaFailure(500, "crash"), OllamaFailure(500, "crash"), OllamaFailure(500, "crash"))
    failed = await look_round(can_see=False, vision=llava)
    assert failed[-1].role == "tool" and "could not be described" in failed[-1].content


async def test_history_forgets_the_bytes(fake_openai: FakeOpenAI) -> None:
    messages = forget_images(await look_round())
    assert all(not m.attachments for m in messages)
    assert messages[-1].content.endswith("[image seen, not kept: camera]")
    assert sum(len(m.model_dump_json()) for m in messages) < 2000
