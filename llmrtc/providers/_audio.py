"""Turn a vendor's audio byte stream into PCM16 mono :class:`TTSChunk` pieces.

``pcm`` passes through (kept on whole samples); ``wav`` is parsed incrementally (header, then PCM); mp3 and
Ogg Opus are decoded as they arrive by :class:`llmrtc.audio.codec.StreamDecoder`; other compressed formats
(aac, flac) are decoded with PyAV once complete. Everything comes out PCM16 mono at the declared rate.
"""

from __future__ import annotations

import io
import struct
from collections.abc import AsyncIterable, AsyncIterator

import numpy as np

from llmrtc.errors import CodecError
from llmrtc.types import TTSChunk


class PcmAligner:
    """Keeps PCM16 pieces on whole-sample boundaries (a network read may split a sample)."""

    def __init__(self) -> None:
        self._rest = b""

    def push(self, data: bytes) -> bytes:
        data = self._rest + data
        cut = len(data) - (len(data) % 2)
        self._rest = data[cut:]
        return data[:cut]


def to_mono16(pcm: bytes, channels: int) -> bytes:
    """Average interleaved PCM16 channels down to mono."""
    if channels <= 1:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % (2 * channels)], dtype="<i2").reshape(-1, channels)
    return bytes(samples.mean(axis=1).astype("<i2").tobytes())


def resample16(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Linear-interpolation resampling of PCM16 mono (good enough for speech between common rates)."""
    if src_rate == dst_rate or not pcm:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    n_out = round(len(x) * dst_rate / src_rate)
    if n_out <= 0:
        return b""
    pos = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    y = np.interp(pos, np.arange(len(x)), x)
    return bytes(np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes())


class LinearResampler:
    """Stateful linear-interpolation resampler for PCM16 mono: pieces join without clicks or drift."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._step = src_rate / dst_rate
        self._pos = 0.0
        self._prev: np.ndarray | None = None

    def push(self, pcm: bytes) -> bytes:
        if self.src_rate == self.dst_rate or not pcm:
            return pcm
        new = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        x = new if self._prev is None else np.concatenate([self._prev, new])
        last = len(x) - 1
        if self._pos > last:
            self._pos -= last
            self._prev = x[-1:]
            return b""
        n = int((last - self._pos) // self._step) + 1
        pos = self._pos + np.arange(n) * self._step
        y = np.interp(pos, np.arange(len(x)), x)
        self._pos = pos[-1] + self._step - last
        self._prev = x[-1:]
        return bytes(np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes())


class WavStreamParser:
    """Incremental WAV parser: feed bytes, get PCM16 mono once the ``data`` chunk starts."""

    def __init__(self) -> None:
        self._buf = b""
        self._in_data = False
        self.sample_rate: int | None = None
        self.channels = 1
        self._aligner = PcmAligner()

    def push(self, data: bytes) -> bytes:
        if self._in_data:
            return self._emit(data)
        self._buf += data
        if len(self._buf) < 12:
            return b""
        if self._buf[:4] != b"RIFF" or self._buf[8:12] != b"WAVE":
            raise CodecError("expected a RIFF/WAVE stream")
        pos = 12
        while len(self._buf) >= pos + 8:
            cid = self._buf[pos : pos + 4]
            size = struct.unpack("<I", self._buf[pos + 4 : pos + 8])[0]
            if cid == b"data":
                if self.sample_rate is None:
                    raise CodecError("WAV data chunk before its fmt chunk")
                self._in_data = True
                rest = self._buf[pos + 8 :]
                self._buf = b""
                return self._emit(rest)
            if len(self._buf) < pos + 8 + size:
                return b""
            if cid == b"fmt ":
                fmt, channels, rate = struct.unpack("<HHI", self._buf[pos + 8 : pos + 16])
                bits = struct.unpack("<H", self._buf[pos + 22 : pos + 24])[0]
                if fmt not in (1, 0xFFFE) or bits != 16:
                    raise CodecError(f"only 16-bit PCM WAV is supported (format {fmt}, {bits} bits)")
                self.sample_rate, self.channels = rate, channels
            pos += 8 + size + (size & 1)
        return b""

    def _emit(self, data: bytes) -> bytes:
        pcm = self._aligner.push(data)
        if self.channels > 1:
            frame = 2 * self.channels
            keep = len(pcm) - len(pcm) % frame
            self._aligner._rest = pcm[keep:] + self._aligner._rest
            pcm = to_mono16(pcm[:keep], self.channels)
        return pcm


def decode_compressed(data: bytes, sample_rate: int) -> bytes:
    """Decode a whole compressed audio file (mp3, aac, flac, ogg/opus, ...) to PCM16 mono at ``sample_rate``."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a core dependency of the worker
        raise CodecError("decoding compressed audio needs PyAV: pip install 'llmrtc[audio]'") from exc
    out = bytearray()
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = next(s for s in container.streams if s.type == "audio")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            for frame in container.decode(stream):
                if not isinstance(frame, av.AudioFrame):
                    continue
                for res in resampler.resample(frame):
                    out.extend(bytes(res.planes[0])[: res.samples * 2])
            for res in resampler.resample(None):
                out.extend(bytes(res.planes[0])[: res.samples * 2])
    except (av.FFmpegError, StopIteration, ValueError) as exc:
        raise CodecError(f"could not decode audio: {exc}") from exc
    return bytes(out)


async def pcm_chunks(
    source: AsyncIterable[bytes], audio_format: str, sample_rate: int, *, min_bytes: int = 960
) -> AsyncIterator[TTSChunk]:
    """PCM16 mono chunks at ``sample_rate`` from a byte stream in ``audio_format``.

    ``pcm`` is assumed to be PCM16 mono at ``sample_rate`` already. ``wav`` streams are parsed on the fly and
    resampled if their rate differs; mp3 and Ogg Opus are decoded incrementally; aac and flac once complete.
    """
    if audio_format == "pcm":
        aligner = PcmAligner()
        pending = b""
        async for piece in source:
            pending += aligner.push(piece)
            if len(pending) >= min_bytes:
                yield TTSChunk(pcm=pending, sample_rate=sample_rate)
                pending = b""
        if pending:
            yield TTSChunk(pcm=pending, sample_rate=sample_rate)
        return
    if audio_format == "wav":
        parser = WavStreamParser()
        resampler: LinearResampler | None = None
        pending = b""
        async for piece in source:
            pending += parser.push(piece)
            if len(pending) >= min_bytes and parser.sample_rate is not None:
                resampler = resampler or LinearResampler(parser.sample_rate, sample_rate)
                yield TTSChunk(pcm=resampler.push(pending), sample_rate=sample_rate)
                pending = b""
        if parser.sample_rate is None:
            raise CodecError("WAV stream ended before its audio data")
        if pending:
            resampler = resampler or LinearResampler(parser.sample_rate, sample_rate)
            out = resampler.push(pending)
            if out:
                yield TTSChunk(pcm=out, sample_rate=sample_rate)
        return
    if audio_format in ("mp3", "opus", "ogg"):
        from llmrtc.audio.codec import StreamDecoder

        decoder = StreamDecoder(audio_format, out_rate=sample_rate, frame_ms=20.0, pad_last=False)
        async for piece in source:
            frames = decoder.feed(piece)
            if frames:
                yield TTSChunk(pcm=b"".join(frames), sample_rate=sample_rate)
        tail = decoder.flush()
        if tail:
            yield TTSChunk(pcm=b"".join(tail), sample_rate=sample_rate)
        return
    body = bytearray()
    async for piece in source:
        body.extend(piece)
    pcm = decode_compressed(bytes(body), sample_rate)
    step = max(min_bytes, sample_rate // 5 * 2)
    for i in range(0, len(pcm), step):
        yield TTSChunk(pcm=pcm[i : i + step], sample_rate=sample_rate)


__all__ = [
    "LinearResampler",
    "PcmAligner",
    "WavStreamParser",
    "decode_compressed",
    "pcm_chunks",
    "resample16",
    "to_mono16",
]
