"""WAV encoding and parsing for PCM16 mono (stdlib only, no decoder needed)."""

from __future__ import annotations

import io
import wave

from llmrtc.errors import CodecError


def pcm16_to_wav(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap PCM16 little-endian samples in a WAV container (for STT upload)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def wav_to_pcm16(data: bytes) -> tuple[bytes, int, int]:
    """Parse a 16-bit PCM WAV into ``(pcm, sample_rate, channels)``."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2:
                raise CodecError(f"expected 16-bit WAV, got {8 * w.getsampwidth()}-bit")
            return w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()
    except (wave.Error, EOFError) as exc:
        raise CodecError(f"not a valid WAV file: {exc}") from exc
