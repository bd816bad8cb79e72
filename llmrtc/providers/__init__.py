"""Provider contracts and vendor implementations (one module per vendor)."""

from llmrtc.providers.base import (
    LLMCapabilities,
    LLMProvider,
    STTCapabilities,
    STTProvider,
    TTSCapabilities,
    TTSProvider,
    VisionProvider,
)

__all__ = [
    "LLMCapabilities",
    "LLMProvider",
    "STTCapabilities",
    "STTProvider",
    "TTSCapabilities",
    "TTSProvider",
    "VisionProvider",
]
