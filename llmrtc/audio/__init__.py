"""Audio: Silero VAD, the speech segmenter, interruption detection and codecs.

Importing this package loads no model and neither torch nor PyAV; those come on first use.
"""

from llmrtc.audio.codec import Resampler, StreamDecoder, decode_audio, encode_wav, resample_pcm16
from llmrtc.audio.interruption import FalseInterruptionPolicy, Interruption, InterruptionDetector, OnsetRule
from llmrtc.audio.listener import ListenerEvent, SpeechListener
from llmrtc.audio.segmenter import (
    Probability,
    Segmenter,
    SegmenterConfig,
    SegmenterEvent,
    SpeechEnd,
    SpeechStart,
)
from llmrtc.audio.vad import (
    DEFAULT_RUNTIME,
    BatchScheduler,
    SileroOnnxModel,
    SileroTorchModel,
    VADEngine,
    VADRuntime,
    VADStream,
    get_shared_engine,
    load_model,
)
from llmrtc.audio.wav import pcm16_to_wav, wav_to_pcm16

__all__ = [
    "DEFAULT_RUNTIME",
    "BatchScheduler",
    "FalseInterruptionPolicy",
    "Interruption",
    "InterruptionDetector",
    "ListenerEvent",
    "OnsetRule",
    "Probability",
    "Resampler",
    "Segmenter",
    "SegmenterConfig",
    "SegmenterEvent",
    "SileroOnnxModel",
    "SileroTorchModel",
    "SpeechEnd",
    "SpeechListener",
    "SpeechStart",
    "StreamDecoder",
    "VADEngine",
    "VADRuntime",
    "VADStream",
    "decode_audio",
    "encode_wav",
    "get_shared_engine",
    "load_model",
    "pcm16_to_wav",
    "resample_pcm16",
    "wav_to_pcm16",
]
