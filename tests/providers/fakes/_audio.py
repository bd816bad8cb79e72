"""Test audio the fakes speak and the tests send: sine tones as PCM16/WAV and compressed encodes (PyAV)."""

from __future__ import annotations

import io

import numpy as np

from llmrtc.audio.wav import pcm16_to_wav


def sine_pcm16(n_samples: int, rate: int, *, freq: float, amplitude: float, channels: int = 1) -> bytes:
    """``n_samples`` frames of a sine tone as PCM16 little-endian (each sample repeated per channel)."""
    t = np.arange(n_samples) / rate
    samples = (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2")
    if channels > 1:
        samples = np.repeat(samples, channels)
    return samples.tobytes()


def sine_wav(seconds: float, rate: int, *, freq: float, amplitude: float, channels: int = 1) -> bytes:
    """A WAV file of a sine tone lasting ``seconds``."""
    pcm = sine_pcm16(int(rate * seconds), rate, freq=freq, amplitude=amplitude, channels=channels)
    return pcm16_to_wav(pcm, rate, channels)


def encode_pcm16(pcm: bytes, rate: int, *, container: str, codec: str, bit_rate: int | None = None) -> bytes:
    """Mono PCM16 compressed with PyAV into ``container`` with ``codec`` (e.g. ``mp3``/``libmp3lame``)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
