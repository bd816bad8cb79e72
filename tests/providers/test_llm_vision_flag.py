"""Which LLMs see images (per model, ``LLM_VISION``) and the LLaVA description path on the wire (Ollama fake)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders
from llmrtc.providers.lmstudio import LMStudioLLMProvider
from llmrtc.providers.ollama import LlavaVisionProvider, OllamaLLMProvider, model_sees_images
from llmrtc.providers.openai_compatible import OpenAICompatibleLLMProvider
from llmrtc.providers.registry import create_llm_from_env
from llmrtc.providers.resilience import RetryPolicy
from llmrtc.tools import ToolRegistry
from llmrtc.types import VisionAttachment
from llmrtc.vision import Look, LookVia, VideoSource, look_tool
from tests.providers.conftest import Closer
from tests.providers.fakes.ollama import FakeOllama, OllamaToolCall, OllamaTurn


def frame() -> VisionAttachment:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (250, 200, 0)).save(out, "JPEG")
    return VisionAttachment.from_bytes(out.getvalue(), source="camera")


@pytest.mark.parametrize(
    ("model", "sees"),
    [
        ("llama3.2", False),
        ("qwen2.5:7b", False),
        ("mistral", False),
        ("llava:7b", True),
        ("llama3.2-vision:11b", True),
        ("gemma3:4b", True),
        ("qwen2.5vl:7b", True),
        ("moondream", True),
        ("minicpm-v", True),
    ],
)
def test_local_model_names_say_whether_they_see(model: str, sees: bool) -> None:
    assert model_sees_images(model) is sees
    assert OllamaLLMProvider(model=model).capabilities.vision is sees
    assert LMStudioLLMProvider(model=model).capabilities.vision is sees


async def test_constructor_flag_and_llm_vision_env_override_the_default(closing: Closer) -> None:
    assert OllamaLLMProvider(model="my-custom", vision=True).capabilities.vision
    assert not OllamaLLMProvider(model="llava", vision=False).capabilities.vision
    assert OllamaLLMProvider.capabilities.vision  # the class default is untouched
    compatible = closing(OpenAICompatibleLLMProvider(base_url="http://127.0.0.1:9/v1"))
    assert compatible.capabilities.vision  # the format carries images: assumed unless told
    blind = closing(OpenAICompatibleLLMProvider(base_url="http://127.0.0.1:9/v1", vision=False))
    assert not blind.capabilities.vision and blind.capabilities.tools
    env = {"LLM_PROVIDER": "openai-compatible", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    assert closing(create_llm_from_env(env)).capabilities.vision
    assert not closing(create_llm_from_env({**env, "LLM_VISION": "false"})).capabilities.vision
    assert closing(create_llm_from_env({**env, "LLM_VISION": ""})).capabilities.vision  # blank: unset
    ollama = {"LLM_PROVIDER": "ollama", "OLLAMA_MODEL": "llama3.2"}
    assert not closing(create_llm_from_env(ollama)).capabilities.vision
    assert closing(create_llm_from_env({**ollama, "LLM_VISION": "true"})).capabilities.vision
    assert closing(create_llm_from_env({**ollama, "OLLAMA_MODEL": "llava:13b"})).capabilities.vision


async def test_text_only_ollama_model_gets_llava_descriptions_on_the_wire(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    llm = closing(OllamaLLMProvider(model="llama3.2", base_url=fake_ollama.base_url, retry=fast_retry))
    llava = closing(LlavaVisionProvider(base_url=fake_ollama.base_url, retry=fast_retry))
    image = frame()
    fake_ollama.push(OllamaTurn(text="A yellow card with the word HELLO."), OllamaTurn(text="It says hello."))
    o = ConversationOrchestrator(ConversationProviders(llm=llm, vision=llava))
    out = await o.run_text_turn("what do you see?", [image], speaker="Ann")
    assert out.error is None and out.text == "It says hello."
    describe, chat = (r.body for r in fake_ollama.requests)
    assert describe["model"] == "llava:7b" and describe["stream"] is False
    assert describe["messages"][0]["images"] == [image.base64_data]
    assert base64.b64decode(describe["messages"][0]["images"][0]) == base64.b64decode(image.base64_data)
    assert chat["model"] == "llama3.2"
    user = chat["messages"][-1]
    assert "images" not in user and "HELLO" in user["content"] and "what do you see?" in user["content"]


class OneCamera:
    def __init__(self) -> None:
        self.image = frame()

    async def look(
        self, participant: str, source: VideoSource, *, turn_id: str | None = None, via: LookVia = "tool"
    ) -> Look:
        return Look("ann-1", "Ann", "camera", self.image, 64, 48)


async def test_look_tool_with_a_text_only_model_returns_the_llava_description(
    fake_ollama: FakeOllama, fast_retry: RetryPolicy, closing: Closer
) -> None:
    llm = closing(OllamaLLMProvider(model="llama3.2", base_url=fake_ollama.base_url, retry=fast_retry))
    llava = closing(LlavaVisionProvider(base_url=fake_ollama.base_url, retry=fast_retry))
    frames = OneCamera()
    tool = look_tool(frames, llm_can_see=lambda: llm.capabilities.vision, vision=llava)
    fake_ollama.push(
        OllamaTurn(tool_calls=[OllamaToolCall("look", {"source": "camera"})]),
        OllamaTurn(text="A yellow card."),
        OllamaTurn(text="Ann shows a yellow card."),
    )
    o = ConversationOrchestrator(ConversationProviders(llm=llm), tools=ToolRegistry([tool]))
    out = await o.run_text_turn("what do you see?", speaker="Ann")
    assert out.text == "Ann shows a yellow card."
    first, describe, answer = (r.body for r in fake_ollama.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["look"]
    assert describe["model"] == "llava:7b" and describe["messages"][0]["images"] == [frames.image.base64_data]
    tool_message = answer["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "Ann's camera shows: A yellow card."
    assert all("images" not in m for m in answer["messages"])
