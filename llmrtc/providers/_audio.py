"""Adapter for TTS providers: a vendor's audio byte stream in, PCM16 mono :class:`TTSChunk` pieces out.

All decoding is :class:`llmrtc.audio.codec.StreamDecoder`'s: ``pcm`` (PCM16 mono at the vendor's
``pcm_rate``) passes through on whole samples when that is the asked rate and is resampled (swresample's
windowed sinc) otherwise; ``wav`` / ``mp3`` / Ogg Opus are decoded as the bytes arrive, ``aac`` / ``flac``
once complete. Everything comes out at the asked rate.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from llmrtc.audio.codec import StreamDecoder
from llmrtc.types import TTSChunk


async def pcm_chunks(
    source: AsyncIterable[bytes],
    audio_format: str,
    sample_rate: int,
    *,
    pcm_rate: int | None = None,
    min_bytes: int = 960,
) -> AsyncIterator[TTSChunk]:
    """PCM16 mono chunks at ``sample_rate`` (each at least ``min_bytes`` but the last) from a byte stream in
    ``audio_format``. Raw ``pcm`` is at ``pcm_rate`` (the vendor's fixed rate; ``sample_rate`` if not given)
    and is resampled when that differs. Undecodable input raises :class:`~llmrtc.errors.CodecError`."""
    fmt = audio_format.lower()
    decoder = StreamDecoder(
        fmt,
        out_rate=sample_rate,
        frame_ms=20.0,
        pcm_rate=(pcm_rate or sample_rate) if fmt == "pcm" else None,
        pad_last=False,
        buffer_whole=True,
    )
    pending = bytearray()
    async for piece in source:
        pending += b"".join(decoder.feed(piece))
        if len(pending) >= min_bytes:
            yield TTSChunk(pcm=bytes(pending), sample_rate=sample_rate)
            pending.clear()
    pending += b"".join(decoder.flush())
    # a format decoded once complete arrives here all at once: hand it on in pieces of ~200 ms
    step = max(min_bytes, sample_rate // 5 * 2)
    step -= step % 2
    for i in range(0, len(pending), step):
        yield TTSChunk(pcm=bytes(pending[i : i + step]), sample_rate=sample_rate)


__all__ = ["pcm_chunks"]
