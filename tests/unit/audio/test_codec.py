"""Resampling, incremental decoding (PyAV-made MP3 and Ogg Opus, WAV, raw PCM) and WAV encoding."""

from __future__ import annotations

import io
import struct
from collections.abc import AsyncIterator

import av
import numpy as np
import pytest

from llmrtc.audio.codec import Resampler, StreamDecoder, decode_audio, encode_wav, resample_pcm16
from llmrtc.audio.wav import wav_to_pcm16
from llmrtc.errors import CodecError
from tests.fixtures import fixture_path


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp * 32767).astype(np.int16)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean((x.astype(np.float64) / 32768) ** 2)) + 1e-12))


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "freq"),
    [(48000, 16000, 440.0), (16000, 48000, 1000.0), (44100, 16000, 3000.0), (8000, 16000, 300.0)],
)
def test_resampling_keeps_frequency_and_level(in_rate: int, out_rate: int, freq: float) -> None:
    src = sine(freq, in_rate, 1.0)
    rs = Resampler(in_rate, out_rate)
    pieces = [rs.process(src[i : i + 441].tobytes()) for i in range(0, len(src), 441)]
    out = np.frombuffer(b"".join(pieces) + rs.flush(), dtype="<i2")
    assert abs(len(out) - out_rate) <= 2
    assert peak_hz(out, out_rate) == pytest.approx(freq, abs=2.0)
    mid = out[len(out) // 10 : -len(out) // 10]
    assert rms_db(mid) == pytest.approx(rms_db(src), abs=0.3)
    # streamed in pieces == all at once
    whole = np.frombuffer(resample_pcm16(src.tobytes(), in_rate, out_rate), dtype="<i2")
    assert np.array_equal(whole, out)


def test_downsampling_removes_what_the_new_rate_cannot_hold() -> None:
    src = sine(12000.0, 48000, 0.5)  # above the 8 kHz Nyquist of 16 kHz: must not alias into the band
    out = np.frombuffer(resample_pcm16(src.tobytes(), 48000, 16000), dtype="<i2")
    assert rms_db(out[800:-800]) < rms_db(src) - 40


def encode(codec: str, fmt: str, rate: int, pcm: np.ndarray, layout: str = "mono") -> bytes:
    buf = io.BytesIO()
    # Ogg pages of 100 ms, as a streaming producer writes them (FFmpeg's default is one second)
    options = {"page_duration": "100000"} if fmt == "ogg" else {}
    with av.open(buf, "w", format=fmt, options=options) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        for i in range(0, len(pcm), 1000):
            chunk = pcm[i : i + 1000]
            data = np.repeat(chunk, 2) if layout == "stereo" else chunk
            frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("codec", "fmt", "rate", "layout", "seconds"),
    [
        ("libmp3lame", "mp3", 48000, "mono", 1.5),
        ("libmp3lame", "mp3", 44100, "stereo", 1.2),
        ("libopus", "ogg", 48000, "mono", 1.5),
        ("libopus", "ogg", 48000, "stereo", 1.013),
    ],
)
def test_compressed_audio_decodes_incrementally_to_the_right_length(
    codec: str, fmt: str, rate: int, layout: str, seconds: float
) -> None:
    src = sine(440.0, rate, seconds)
    data = encode(codec, fmt, rate, src, layout)
    dec = StreamDecoder(fmt, out_rate=16000, frame_ms=20)
    frames: list[bytes] = []
    frames_before_end = 0
    for i in range(0, len(data), 500):
        frames += dec.feed(data[i : i + 500])
        if i + 500 < len(data) // 2:
            frames_before_end = len(frames)
    assert frames_before_end > 0, "nothing came out before the end: not incremental"
    frames += dec.flush()
    assert all(len(f) == 640 for f in frames)
    expected = round(len(src) * 16000 / rate)
    assert abs(dec.samples_out - expected) <= 2
    assert len(frames) == -(-dec.samples_out // 320)
    out = np.frombuffer(b"".join(frames), dtype="<i2")[:expected]
    assert peak_hz(out[2000:-2000], 16000) == pytest.approx(440.0, abs=3.0)
    assert rms_db(out[2000:-2000]) == pytest.approx(rms_db(src), abs=1.0)


def test_wav_fixture_decodes_incrementally() -> None:
    data = fixture_path("capital_48k.wav").read_bytes()
    pcm16k, _rate, _ = wav_to_pcm16(fixture_path("capital_16k.wav").read_bytes())
    dec = StreamDecoder("wav", out_rate=16000, frame_ms=32, pad_last=False)
    frames: list[bytes] = []
    for i in range(0, len(data), 777):  # the 44-byte header arrives in pieces too
        frames += dec.feed(data[i : i + 777])
    frames += dec.flush()
    assert abs(dec.samples_out - len(pcm16k) // 2) <= 2
    assert all(len(f) == 1024 for f in frames[:-1])


def test_raw_pcm_and_float_wav() -> None:
    src = sine(500.0, 24000, 0.5)
    out = decode_audio(src.tobytes(), "pcm", 16000, pcm_rate=24000)
    assert abs(len(out) // 2 - 8000) <= 2
    # a 32-bit float stereo WAV, written by hand
    stereo = np.repeat(src.astype(np.float32) / 32768, 2)
    body = stereo.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 2, 24000, 24000 * 8, 8, 32)
    wav = b"RIFF" + struct.pack("<I", 4 + 8 + 16 + 8 + len(body)) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
    wav += fmt + b"data" + struct.pack("<I", len(body)) + body
    got = np.frombuffer(decode_audio(wav, "wav", 16000), dtype="<i2")
    assert abs(len(got) - 8000) <= 2
    assert rms_db(got[500:-500]) == pytest.approx(rms_db(src), abs=0.3)


def test_bad_input_raises_codec_errors() -> None:
    with pytest.raises(CodecError):
        StreamDecoder("flac")
    with pytest.raises(CodecError):
        StreamDecoder("pcm")
    with pytest.raises(CodecError):
        StreamDecoder("wav").feed(b"not a wav file at all")
    with pytest.raises(CodecError):
        StreamDecoder("ogg").feed(b"definitely not an ogg page header")
    with pytest.raises(CodecError):
        decode_audio(b"\x12\x34" * 5000, "mp3")
    with pytest.raises(CodecError):
        Resampler(0, 16000)
    with pytest.raises(CodecError):
        encode_wav(b"\x00", 16000)


def test_encode_wav_round_trip() -> None:
    pcm = sine(200.0, 16000, 0.25).tobytes()
    back, rate, channels = wav_to_pcm16(encode_wav(pcm, 16000))
    assert (back, rate, channels) == (pcm, 16000, 1)


@pytest.mark.parametrize(
    ("codec", "fmt", "rate", "layout"),
    [("aac", "adts", 24000, "mono"), ("aac", "ipod", 44100, "stereo"), ("flac", "flac", 22050, "stereo")],
)
def test_whole_file_formats_decode_once_complete(codec: str, fmt: str, rate: int, layout: str) -> None:
    src = sine(440.0, rate, 0.8)
    data = encode(codec, fmt, rate, src, layout)
    name = "flac" if codec == "flac" else "aac"  # ADTS and M4A both come as "aac" and are probed
    dec = StreamDecoder(name, out_rate=16000, frame_ms=20, pad_last=False, buffer_whole=True)
    fed: list[bytes] = []
    for i in range(0, len(data), 300):
        fed += dec.feed(data[i : i + 300])
    assert fed == [], "kept until the end, not decoded piecewise"
    out = np.frombuffer(b"".join(dec.flush()), dtype="<i2")
    expected = round(len(src) * 16000 / rate)
    # AAC adds its encoder priming/padding (at most a few frames); FLAC keeps the exact length
    assert (len(out) == expected) if codec == "flac" else (expected <= len(out) <= expected + 2100)
    assert peak_hz(out[2000:-2000], 16000) == pytest.approx(440.0, abs=3.0)
    assert rms_db(out[2000:-2000]) == pytest.approx(rms_db(src), abs=1.0)


def test_flac_at_the_source_rate_is_lossless() -> None:
    src = sine(300.0, 24000, 0.5)
    assert decode_audio(encode("flac", "flac", 24000, src), "flac", 24000) == src.tobytes()


def test_whole_file_formats_need_buffering_and_valid_data() -> None:
    with pytest.raises(CodecError, match="buffer_whole"):
        StreamDecoder("aac", out_rate=16000)
    with pytest.raises(CodecError, match="flac"):
        decode_audio(b"\x00\x01" * 4000, "flac")
    # nothing fed: nothing out, no error (an empty answer is the provider's to judge)
    assert StreamDecoder("flac", buffer_whole=True).flush() == []


def test_wav_24_bit_and_streaming_size_are_read() -> None:
    src = sine(700.0, 16000, 0.25)
    wide = (src.astype(np.int32) << 8).astype("<i4")
    body = b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in wide)
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 16000 * 3, 3, 24)
    # a streaming writer's header: the data size is not known yet (0xFFFFFFFF)
    wav = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    wav += b"data" + struct.pack("<I", 0xFFFFFFFF) + body
    dec = StreamDecoder("wav", out_rate=16000, frame_ms=10, pad_last=False)
    frames = [f for i in range(0, len(wav), 101) for f in dec.feed(wav[i : i + 101])] + dec.flush()
    assert b"".join(frames) == src.tobytes(), "24-bit to 16-bit at the same rate is exact"


async def test_provider_adapter_chunks_every_format_at_the_declared_rate() -> None:
    from llmrtc.providers._audio import pcm_chunks

    async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    src = sine(440.0, 24000, 1.0)
    raw = [c async for c in pcm_chunks(pieces(src.tobytes() + b"\x01", 777), "pcm", 24000)]
    assert b"".join(c.pcm for c in raw) == src.tobytes(), "pcm passes through; a stray odd byte is dropped"
    assert all(len(c.pcm) >= 960 for c in raw[:-1]) and all(c.sample_rate == 24000 for c in raw)
    flac48k = encode("flac", "flac", 48000, sine(440.0, 48000, 1.0))
    flac = [c async for c in pcm_chunks(pieces(flac48k, 500), "FLAC", 24000)]
    assert len(flac) >= 5 and all(len(c.pcm) <= 24000 // 5 * 2 for c in flac), "handed on in ~200 ms pieces"
    assert abs(sum(len(c.pcm) for c in flac) // 2 - 24000) <= 2, "resampled to the declared rate"
    with pytest.raises(CodecError):
        [c async for c in pcm_chunks(pieces(b"RIFF\x00\x00\x00\x00JUNK", 4), "wav", 24000)]
    with pytest.raises(CodecError, match="unsupported"):
        [c async for c in pcm_chunks(pieces(b"", 1), "vorbis", 24000)]
