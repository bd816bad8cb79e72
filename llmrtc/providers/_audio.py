"""Adapter for TTS providers: a vendor's audio byte stream in, PCM16 mono :class:`TTSChunk` pieces out.

All decoding is :class:`llmrtc.audio.codec.StreamDecoder`'s: ``pcm`` (PCM16 mono at the vendor's
``pcm_rate``) passes through on whole samples when that is the asked rate and is resampled (swresample's
windowed sinc) otherwise; ``wav`` / ``mp3`` / Ogg Opus are decoded as the bytes arrive, ``aac`` / ``flac``
once complete. Everything comes out at the asked rate.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from typing import Any

import numpy as np

from llmrtc.audio.codec import Resampler, StreamDecoder
from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import CodecError
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
    try:
        async for piece in source:
            pending += b"".join(decoder.feed(piece))
            if len(pending) >= min_bytes:
                yield TTSChunk(pcm=bytes(pending), sample_rate=sample_rate)
                pending.clear()
    finally:
        await _close(source)  # now, in this task, also when decoding failed or the caller stopped
    pending += b"".join(decoder.flush())
    # a format decoded once complete arrives here all at once: hand it on in pieces of ~200 ms
    step = max(min_bytes, sample_rate // 5 * 2)
    step -= step % 2
    for i in range(0, len(pending), step):
        yield TTSChunk(pcm=bytes(pending[i : i + step]), sample_rate=sample_rate)


async def at_rate(chunks: AsyncIterable[TTSChunk], rate: int) -> AsyncGenerator[TTSChunk, None]:
    """``chunks`` resampled to ``rate`` (a stateful resampler, so pieces join seamlessly); word timings,
    in seconds, stay as they are. Chunks already at ``rate`` pass untouched."""
    resampler: Resampler | None = None
    try:
        async for chunk in chunks:
            if chunk.sample_rate == rate and resampler is None:
                yield chunk
                continue
            if resampler is None or resampler.in_rate != chunk.sample_rate:
                if resampler is not None:
                    tail = resampler.flush()
                    if tail:
                        yield TTSChunk(pcm=tail, sample_rate=rate)
                resampler = Resampler(chunk.sample_rate, rate)
            pcm = resampler.process(chunk.pcm)
            if pcm or chunk.words:
                yield TTSChunk(pcm=pcm, sample_rate=rate, words=chunk.words)
        if resampler is not None:
            tail = resampler.flush()
            if tail:
                yield TTSChunk(pcm=tail, sample_rate=rate)
    finally:
        await _close(chunks)  # close the source now (a barge-in), not when it is collected


async def _close(source: object) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


#: PyAV container and codec for each encoded format :func:`encode_audio` writes, and the rates the codec takes.
_ENCODERS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "mp3": ("mp3", "libmp3lame", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "opus": ("ogg", "libopus", (8000, 12000, 16000, 24000, 48000)),
    "ogg": ("ogg", "libopus", (8000, 12000, 16000, 24000, 48000)),
    "flac": ("flac", "flac", ()),
    "aac": ("adts", "aac", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
}


def encoded_rate(fmt: str, rate: int) -> int:
    """The rate ``fmt`` will be encoded at for PCM at ``rate`` (Opus takes only 8/12/16/24/48 kHz)."""
    entry = _ENCODERS.get(fmt)
    if entry is None or not entry[2] or rate in entry[2]:
        return rate
    return min(entry[2], key=lambda r: (r < rate, abs(r - rate)))


def encode_audio(pcm: bytes, rate: int, fmt: str) -> tuple[bytes, int]:
    """PCM16 mono at ``rate`` as a file in ``fmt`` (``pcm``, ``wav``, ``mp3``, ``opus``/``ogg`` as Ogg Opus,
    ``flac``, ``aac`` as ADTS), and the rate it was encoded at. Raises :class:`CodecError` for other formats."""
    fmt = fmt.lower()
    if fmt == "pcm":
        return pcm, rate
    if fmt == "wav":
        return pcm16_to_wav(pcm, rate), rate
    entry = _ENCODERS.get(fmt)
    if entry is None:
        raise CodecError(f"cannot encode {fmt!r}: use pcm, wav, mp3, opus, ogg, flac or aac")
    container, codec, _ = entry
    out_rate = encoded_rate(fmt, rate)
    if out_rate != rate:
        resampler = Resampler(rate, out_rate)
        pcm = resampler.process(pcm) + resampler.flush()
    from llmrtc.audio.codec import _av

    av: Any = _av()
    buf = io.BytesIO()
    try:
        with av.open(buf, mode="w", format=container) as out:
            stream = out.add_stream(codec, rate=out_rate, layout="mono")
            if pcm:
                frame = av.AudioFrame.from_ndarray(
                    np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
                )
                frame.sample_rate = out_rate
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise CodecError(f"could not encode {fmt}: {exc}") from exc
    return buf.getvalue(), out_rate


__all__ = ["at_rate", "encode_audio", "encoded_rate", "pcm_chunks"]
