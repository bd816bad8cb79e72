"""Codecs: streaming resampling, incremental decoding to PCM16 frames, WAV encoding.

* :class:`Resampler`: stateful, streaming, any rate to any rate, on FFmpeg's swresample (PyAV).
* :class:`StreamDecoder`: fed bytes as they arrive (``mp3``, ``ogg`` Opus, ``wav``, raw ``pcm``), yields mono
  PCM16 frames of a chosen size and rate. MP3 is decoded gaplessly when the stream has a LAME/Info header,
  Ogg Opus honours its pre-skip and end trimming, so the output has the length that was encoded. ``aac`` and
  ``flac`` are accepted with ``buffer_whole=True``: kept until the end, then demuxed and decoded.
* :func:`decode_audio`: a whole file of any of these formats to mono PCM16.
* :func:`encode_wav`: an utterance as a WAV file for STT upload.

PyAV (``llmrtc[audio]``) is imported on first use.
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import CodecError

logger = logging.getLogger(__name__)

AudioFormat = Literal["mp3", "ogg", "opus", "ogg-opus", "wav", "pcm", "aac", "flac"]
FORMATS: tuple[str, ...] = ("mp3", "ogg", "opus", "ogg-opus", "wav", "pcm")
"""Formats decoded piece by piece as the bytes arrive."""
WHOLE_FORMATS: tuple[str, ...] = ("aac", "flac")
"""Formats decoded once the whole file is there (``StreamDecoder(..., buffer_whole=True)``, :func:`decode_audio`)."""


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CodecError("PyAV is not installed: pip install 'llmrtc[audio]'") from exc
    return av


def encode_wav(pcm: bytes, sample_rate: int = 16_000, channels: int = 1) -> bytes:
    """PCM16 little-endian samples as a WAV file (for STT upload)."""
    if len(pcm) % (2 * channels):
        raise CodecError(f"PCM16 with {channels} channel(s) needs a multiple of {2 * channels} bytes")
    return pcm16_to_wav(pcm, sample_rate, channels)


def _to_pcm16(samples: npt.NDArray[np.float32]) -> bytes:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


class Resampler:
    """Streaming resampler for mono PCM16: push any amount, get what is ready; :meth:`flush` at the end.

    Uses swresample's windowed-sinc filter with state carried across calls, so piecewise input gives the
    same output as one call. Equal rates pass through untouched.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise CodecError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._odd = b""
        self._av: Any = None
        self._rs: Any = None
        if in_rate != out_rate:
            self._av = _av()
            self._rs = self._av.AudioResampler(format="s16", layout="mono", rate=out_rate)

    def process(self, pcm: bytes) -> bytes:
        """Resample the next piece of the stream."""
        if self._rs is None:
            return bytes(pcm)
        data = self._odd + bytes(pcm)
        cut = len(data) - len(data) % 2
        data, self._odd = data[:cut], data[cut:]
        if not data:
            return b""
        arr = np.frombuffer(data, dtype="<i2").reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(arr, format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        return self._collect(self._rs.resample(frame))

    def flush(self) -> bytes:
        """The samples still held by the filter (call once, at the end of the stream)."""
        if self._rs is None:
            return b""
        return self._collect(self._rs.resample(None))

    @staticmethod
    def _collect(frames: list[Any]) -> bytes:
        return b"".join(bytes(f.to_ndarray().astype("<i2", copy=False).tobytes()) for f in frames)


def resample_pcm16(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole mono PCM16 buffer."""
    rs = Resampler(in_rate, out_rate)
    return rs.process(pcm) + rs.flush()


class _Framer:
    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self._buf = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        self._buf += data
        n = len(self._buf) // self.frame_bytes
        out = [bytes(self._buf[i * self.frame_bytes : (i + 1) * self.frame_bytes]) for i in range(n)]
        del self._buf[: n * self.frame_bytes]
        return out

    def rest(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


def _frame_to_mono(frame: Any) -> npt.NDArray[np.float32]:
    """A decoded PyAV audio frame as mono float32."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype == np.int32:
        arr = arr.astype(np.float32) / 2147483648.0
    else:
        arr = arr.astype(np.float32)
    mono: npt.NDArray[np.float32] = arr.mean(axis=0) if arr.shape[0] > 1 else arr[0]
    return mono


class _Trim:
    """Drops ``skip`` leading samples and anything beyond ``limit`` (counted after the skip)."""

    def __init__(self) -> None:
        self.skip = 0
        self.limit: int | None = None
        self.emitted = 0
        self.raw = 0

    def apply(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.raw += len(x)
        if self.skip:
            k = min(self.skip, len(x))
            x = x[k:]
            self.skip -= k
        if self.limit is not None:
            x = x[: max(self.limit - self.emitted, 0)]
        self.emitted += len(x)
        return x


class _Source:
    """Turns input bytes into mono float32 at ``rate``."""

    rate: int = 0

    def feed(self, data: bytes) -> list[npt.NDArray[np.float32]]:
        raise NotImplementedError

    def finish(self) -> list[npt.NDArray[np.float32]]:
        return []


class _PcmSource(_Source):
    def __init__(self, rate: int, channels: int, sample_format: str = "s16") -> None:
        if rate <= 0 or channels <= 0:
            raise CodecError(f"raw PCM needs a positive rate and channel count, got {rate} Hz x {channels}")
        widths = {"u8": 1, "s16": 2, "s24": 3, "s32": 4, "f32": 4}
        if sample_format not in widths:
            raise CodecError(f"unsupported PCM sample format {sample_format!r}")
        self.rate = rate
        self.channels = channels
        self.fmt = sample_format
        self.block = widths[sample_format] * channels
        self._rest = b""

    def feed(self, data: bytes) -> list[npt.NDArray[np.float32]]:
        data = self._rest + data
        cut = len(data) - len(data) % self.block
        data, self._rest = data[:cut], data[cut:]
        if not data:
            return []
        if self.fmt == "s16":
            x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        elif self.fmt == "u8":
            x = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        elif self.fmt == "s24":
            b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v >= 1 << 23, v - (1 << 24), v)
            x = v.astype(np.float32) / float(1 << 23)
        elif self.fmt == "s32":
            x = np.frombuffer(data, dtype="<i4").astype(np.float32) / 2147483648.0
        else:
            x = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1).astype(np.float32)
        return [x]

    def finish(self) -> list[npt.NDArray[np.float32]]:
        if self._rest:
            logger.warning("raw PCM stream ended with %d stray bytes (dropped)", len(self._rest))
        return []


class _WavSource(_Source):
    """Incremental RIFF/WAVE parser (PCM 8/16/24/32-bit, IEEE float 32, extensible)."""

    def __init__(self) -> None:
        self._buf = b""
        self._pcm: _PcmSource | None = None
        self._fmt: tuple[int, int, int, int] | None = None
        self._data_left: int | None = None
        self._header_done = False
        self._done = False

    def feed(self, data: bytes) -> list[npt.NDArray[np.float32]]:
        if self._done:
            return []
        if self._pcm is not None:
            return self._pcm_feed(data)
        self._buf += data
        if not self._header_done:
            if len(self._buf) < 12:
                return []
            if self._buf[:4] not in (b"RIFF", b"RF64") or self._buf[8:12] != b"WAVE":
                raise CodecError("not a WAV stream (no RIFF/WAVE header)")
            self._buf = self._buf[12:]
            self._header_done = True
        while len(self._buf) >= 8:
            cid, size = self._buf[:4], struct.unpack("<I", self._buf[4:8])[0]
            if cid == b"data":
                if self._fmt is None:
                    raise CodecError("WAV data chunk before its fmt chunk")
                tag, channels, rate, bits = self._fmt
                fmt = {(1, 8): "u8", (1, 16): "s16", (1, 24): "s24", (1, 32): "s32", (3, 32): "f32"}.get(
                    (tag, bits)
                )
                if fmt is None:
                    raise CodecError(f"unsupported WAV encoding (format tag {tag}, {bits}-bit)")
                self.rate = rate
                self._pcm = _PcmSource(rate, channels, fmt)
                # a streaming writer may not know the size yet (0 or 0xFFFFFFFF): read to the end then
                self._data_left = None if size in (0, 0xFFFFFFFF) else size
                rest, self._buf = self._buf[8:], b""
                return self._pcm_feed(rest)
            if len(self._buf) < 8 + size + (size & 1):
                return []
            body = self._buf[8 : 8 + size]
            if cid == b"fmt ":
                if size < 16:
                    raise CodecError("WAV fmt chunk too short")
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == 0xFFFE and size >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]
                if channels == 0 or rate == 0:
                    raise CodecError("WAV fmt chunk has no channels or no sample rate")
                self._fmt = (tag, channels, rate, bits)
            self._buf = self._buf[8 + size + (size & 1) :]
        return []

    def _pcm_feed(self, data: bytes) -> list[npt.NDArray[np.float32]]:
        assert self._pcm is not None
        if self._data_left is not None:
            data = data[: self._data_left]
            self._data_left -= len(data)
            if self._data_left == 0:
                self._done = True
        return self._pcm.feed(data)

    def finish(self) -> list[npt.NDArray[np.float32]]:
        if self._pcm is None:
            raise CodecError("WAV stream ended before its audio data")
        return self._pcm.finish()


class _Mp3Source(_Source):
    """MP3 through FFmpeg's parser and decoder; skips ID3v2 and honours the LAME/Info gapless header."""

    def __init__(self) -> None:
        self._av = _av()
        self._ctx = self._av.CodecContext.create("mp3", "r")
        self._head = b""
        self._started = False
        self._trim = _Trim()
        self._bad = 0
        self._fed = 0
        self._frames = 0

    def feed(self, data: bytes) -> list[npt.NDArray[np.float32]]:
        self._fed += len(data)
        if not self._started:
            self._head += data
            data = self._start()
            if not self._started:
                return []
        return self._decode(self._ctx.parse(data))

    def _start(self) -> bytes:
        buf = self._head
        if buf[:3] == b"ID3":
            if len(buf) < 10:
                return b""
            size = (buf[6] << 21) | (buf[7] << 14) | (buf[8] << 7) | buf[9]
            skip = 10 + size + (10 if buf[5] & 0x10 else 0)
            if len(buf) < skip:
                return b""
            buf = buf[skip:]
            self._head = buf
        if len(buf) < 4 + 32 + 120 + 24:
            return b""
        self._started = True
        self._head = b""
        info = _lame_info(buf)
        if info is not None:
            frame_len, frames, delay, padding = info
            # FFmpeg's convention: encoder delay plus the decoder's 529-sample delay
            self._trim.skip = delay + 529
            if frames:
                self._trim.limit = frames * _samples_per_frame(buf) - delay - padding
            buf = buf[frame_len:]
        return buf

    def _decode(self, packets: list[Any]) -> list[npt.NDArray[np.float32]]:
        out: list[npt.NDArray[np.float32]] = []
        for packet in packets:
            try:
                frames = self._ctx.decode(packet)
            except self._av.error.FFmpegError as exc:
                self._bad += 1
                logger.debug("skipping undecodable MP3 packet: %s", exc)
                if self._bad > 50:
                    raise CodecError(f"not a decodable MP3 stream: {exc}") from exc
                continue
            for f in frames:
                self.rate = f.sample_rate
                self._frames += 1
                out.append(self._trim.apply(_frame_to_mono(f)))
        return out

    def finish(self) -> list[npt.NDArray[np.float32]]:
        if not self._started:
            if not self._head:
                return []
            self._started = True
            rest, self._head = self._head, b""
            out = self._decode(self._ctx.parse(rest))
        else:
            out = []
        out += self._decode(self._ctx.parse(None))
        with contextlib.suppress(self._av.error.EOFError):
            out += self._decode([None])
        if self._fed and not self._frames:
            raise CodecError(f"no MP3 audio found in {self._fed} bytes")
        return out


_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MP3_BITRATES_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_BITRATES_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def _samples_per_frame(buf: bytes) -> int:
    version = (buf[1] >> 3) & 3
    return 1152 if version == 3 else 576


def _lame_info(buf: bytes) -> tuple[int, int, int, int] | None:
    """From a first MP3 frame holding a Xing/Info header: (frame bytes, frames, encoder delay, padding)."""
    if buf[0] != 0xFF or (buf[1] & 0xE0) != 0xE0:
        return None
    version = (buf[1] >> 3) & 3
    if version == 1 or ((buf[1] >> 1) & 3) != 1:  # reserved version, or not layer III
        return None
    bitrate_idx, rate_idx, pad = buf[2] >> 4, (buf[2] >> 2) & 3, (buf[2] >> 1) & 1
    if bitrate_idx in (0, 15) or rate_idx == 3:
        return None
    rate = _MP3_RATES[version][rate_idx]
    mono = (buf[3] >> 6) == 3
    if version == 3:
        bitrate = _MP3_BITRATES_V1[bitrate_idx]
        frame_len = 144000 * bitrate // rate + pad
        side = 17 if mono else 32
    else:
        bitrate = _MP3_BITRATES_V2[bitrate_idx]
        frame_len = 72000 * bitrate // rate + pad
        side = 9 if mono else 17
    off = 4 + side
    if buf[off : off + 4] not in (b"Xing", b"Info"):
        return None
    flags = struct.unpack(">I", buf[off + 4 : off + 8])[0]
    pos = off + 8
    frames = 0
    if flags & 1:
        frames = struct.unpack(">I", buf[pos : pos + 4])[0]
        pos += 4
    if flags & 2:
        pos += 4
    if flags & 4:
        pos += 100
    if flags & 8:
        pos += 4
    delay = padding = 0
    if pos + 24 <= len(buf):
        d = buf[pos + 21 : pos + 24]
        delay = (d[0] << 4) | (d[1] >> 4)
        padding = ((d[1] & 0x0F) << 8) | d[2]
    return frame_len, frames, delay, padding


class _OggOpusSource(_Source):
    """Ogg pages parsed here; Opus packets decoded by FFmpeg at 48 kHz; pre-skip and end trim applied."""

    rate = 48_000

    def __init__(self) -> None:
        self._av = _av()
        self._buf = b""
        self._packet = b""
        self._serial: int | None = None
        self._packets_seen = 0
        self._ctx: Any = None
        self._trim = _Trim()
        self._pre_skip = 0
        self._prev_granule: int | None = None

    def feed(self, data: bytes) -> list[npt.NDArray[np.float32]]:
        self._buf += data
        out: list[npt.NDArray[np.float32]] = []
        while True:
            if len(self._buf) < 27:
                return out
            if self._buf[:4] != b"OggS":
                raise CodecError("not an Ogg stream (bad page sync)")
            nseg = self._buf[26]
            if len(self._buf) < 27 + nseg:
                return out
            lacing = self._buf[27 : 27 + nseg]
            body_len = sum(lacing)
            if len(self._buf) < 27 + nseg + body_len:
                return out
            header_type = self._buf[5]
            granule, serial = struct.unpack("<qI", self._buf[6:18])
            body = self._buf[27 + nseg : 27 + nseg + body_len]
            self._buf = self._buf[27 + nseg + body_len :]
            if self._serial is None:
                self._serial = serial
            elif serial != self._serial:
                continue  # another logical stream (e.g. a video track): not ours
            if header_type & 0x04 and granule >= 0:
                # end trimming: the last page's packets hold (granule - previous granule) valid samples;
                # relative to the previous page so that a stream starting at a non-zero granule (as
                # FFmpeg's muxer writes them) is trimmed right too
                if self._prev_granule is None:
                    valid = granule - self._pre_skip
                else:
                    valid = self._trim.raw + granule - self._prev_granule
                self._trim.limit = max(valid, 0)
            if granule >= 0:
                self._prev_granule = granule
            pos = 0
            for seg in lacing:
                self._packet += body[pos : pos + seg]
                pos += seg
                if seg < 255:
                    out += self._on_packet(self._packet)
                    self._packet = b""

    def _on_packet(self, packet: bytes) -> list[npt.NDArray[np.float32]]:
        self._packets_seen += 1
        if self._packets_seen == 1:
            if packet[:8] != b"OpusHead" or len(packet) < 19:
                raise CodecError("Ogg stream is not Opus (no OpusHead)")
            channels = packet[9]
            # FFmpeg's decoder drops the pre-skip itself (it reads it from the OpusHead extradata)
            self._pre_skip = struct.unpack("<H", packet[10:12])[0]
            self._ctx = self._av.CodecContext.create("opus", "r")
            self._ctx.extradata = packet
            self._ctx.sample_rate = 48_000
            self._ctx.layout = "stereo" if channels == 2 else "mono"
            return []
        if self._packets_seen == 2:
            return []  # OpusTags
        try:
            frames = self._ctx.decode(self._av.Packet(packet))
        except self._av.error.FFmpegError as exc:
            raise CodecError(f"undecodable Opus packet: {exc}") from exc
        return [self._trim.apply(_frame_to_mono(f)) for f in frames]

    def finish(self) -> list[npt.NDArray[np.float32]]:
        if self._ctx is None:
            if self._buf or self._packets_seen:
                raise CodecError("Ogg Opus stream ended before its audio")
            return []
        return [self._trim.apply(_frame_to_mono(f)) for f in self._ctx.decode(None)]


class _WholeFileSource(_Source):
    """aac / flac: the bytes are kept until the end, then demuxed and decoded by FFmpeg in one go."""

    def __init__(self, fmt: str) -> None:
        self._av = _av()
        self._fmt = fmt
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[npt.NDArray[np.float32]]:
        self._buf += data
        return []

    def finish(self) -> list[npt.NDArray[np.float32]]:
        if not self._buf:
            return []
        out: list[npt.NDArray[np.float32]] = []
        try:
            # probed rather than forced: AAC comes as ADTS or in an MP4/M4A container
            with self._av.open(io.BytesIO(bytes(self._buf)), mode="r") as container:
                stream = next((s for s in container.streams if s.type == "audio"), None)
                if stream is None:
                    raise CodecError(f"no audio stream in the {len(self._buf)} bytes of {self._fmt}")
                for frame in container.decode(stream):
                    self.rate = frame.sample_rate
                    out.append(_frame_to_mono(frame))
        except (self._av.error.FFmpegError, ValueError, OSError) as exc:
            raise CodecError(f"could not decode {self._fmt} audio ({len(self._buf)} bytes): {exc}") from exc
        finally:
            self._buf.clear()
        if not out:
            raise CodecError(f"no {self._fmt} audio found")
        return out


class StreamDecoder:
    """Decode an audio stream fed in pieces into mono PCM16 frames of ``frame_ms`` at ``out_rate``.

    ``format`` is ``"mp3"``, ``"ogg"`` (Ogg Opus; also ``"opus"``/``"ogg-opus"``), ``"wav"`` or ``"pcm"``
    (raw PCM16 little-endian at ``pcm_rate`` with ``pcm_channels``). :meth:`feed` returns the frames that are
    complete so far; :meth:`flush` ends the stream and returns the rest, the last frame zero-padded unless
    ``pad_last=False``. With ``buffer_whole=True`` the formats that cannot be decoded piecewise here (``aac``,
    ``flac``) are accepted too: :meth:`feed` keeps their bytes and :meth:`flush` decodes them. Equal source and
    output rates pass the samples through unresampled. Malformed input raises :class:`~llmrtc.errors.CodecError`.
    """

    def __init__(
        self,
        format: str,
        out_rate: int = 16_000,
        frame_ms: float = 20.0,
        *,
        pcm_rate: int | None = None,
        pcm_channels: int = 1,
        pad_last: bool = True,
        buffer_whole: bool = False,
    ) -> None:
        fmt = format.lower()
        if fmt in WHOLE_FORMATS and not buffer_whole:
            raise CodecError(f"{fmt} is decoded once complete: pass buffer_whole=True or use decode_audio")
        if fmt not in FORMATS + WHOLE_FORMATS:
            raise CodecError(
                f"unsupported audio format {format!r}; use one of {', '.join(FORMATS + WHOLE_FORMATS)}"
            )
        frame_samples = round(out_rate * frame_ms / 1000)
        if out_rate <= 0 or frame_samples <= 0:
            raise CodecError(f"bad output: {out_rate} Hz, {frame_ms} ms frames")
        self.format = fmt
        self.out_rate = out_rate
        self.frame_samples = frame_samples
        self.pad_last = pad_last
        self._source: _Source
        if fmt == "pcm":
            if pcm_rate is None:
                raise CodecError("raw PCM needs pcm_rate")
            self._source = _PcmSource(pcm_rate, pcm_channels)
        elif fmt == "wav":
            self._source = _WavSource()
        elif fmt == "mp3":
            self._source = _Mp3Source()
        elif fmt in WHOLE_FORMATS:
            self._source = _WholeFileSource(fmt)
        else:
            self._source = _OggOpusSource()
        self._resampler: Resampler | None = None
        self._framer = _Framer(frame_samples * 2)
        self.samples_out = 0
        self._closed = False

    def feed(self, data: bytes) -> list[bytes]:
        """The next bytes of the stream; returns the frames completed by them."""
        if self._closed:
            raise CodecError("decoder already flushed")
        return self._emit(self._source.feed(bytes(data)))

    def flush(self) -> list[bytes]:
        """End of the stream: the remaining frames."""
        if self._closed:
            return []
        self._closed = True
        frames = self._emit(self._source.finish())
        tail = self._resampler.flush() if self._resampler is not None else b""
        frames += self._framer.push(tail)
        rest = self._framer.rest()
        if rest:
            frames.append(rest + b"\x00" * (self._framer.frame_bytes - len(rest)) if self.pad_last else rest)
        self.samples_out += len(tail) // 2
        return frames

    def _emit(self, chunks: list[npt.NDArray[np.float32]]) -> list[bytes]:
        out: list[bytes] = []
        for chunk in chunks:
            if len(chunk) == 0:
                continue
            if self._resampler is None:
                self._resampler = Resampler(self._source.rate, self.out_rate)
            pcm = self._resampler.process(_to_pcm16(chunk))
            self.samples_out += len(pcm) // 2
            out += self._framer.push(pcm)
        return out


def decode_audio(
    data: bytes, format: str, out_rate: int = 16_000, *, pcm_rate: int | None = None, pcm_channels: int = 1
) -> bytes:
    """Decode a whole file (any of :data:`FORMATS` or :data:`WHOLE_FORMATS`) to mono PCM16 at ``out_rate``
    (exact length, no padding)."""
    dec = StreamDecoder(
        format, out_rate, pcm_rate=pcm_rate, pcm_channels=pcm_channels, pad_last=False, buffer_whole=True
    )
    return b"".join(dec.feed(data) + dec.flush())
