"""Build a tiny, deterministic CTranslate2 Whisper model offline (no hub, no transformers).

The network is one encoder and one decoder layer with every attention and feed-forward weight at zero, so
the decoder's output at position ``p`` depends only on its position embedding, and the projection maps
position ``p`` to a chosen token: whatever the audio, the model transcribes :data:`WORDS` then stops. It is
not a speech model; it exercises the real in-process path (WAV -> features -> CTranslate2 -> tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ("hello", "world")
D_MODEL = 64
FFN = 128
N_MELS = 80
SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)


def vocabulary() -> list[str]:
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    return ["<unk>", *WORDS, *SPECIALS, *timestamps]


def _fill(spec: object, path: str, vocab_size: int, plan: dict[int, int]) -> None:
    from ctranslate2.specs import model_spec

    for name, value in list(vars(spec).items()):
        full = f"{path}/{name}" if path else name
        if isinstance(value, model_spec.LayerSpec):
            _fill(value, full, vocab_size, plan)
        elif isinstance(value, list) and value and isinstance(value[0], model_spec.LayerSpec):
            for i, item in enumerate(value):
                _fill(item, f"{full}_{i}", vocab_size, plan)
        elif value is None:
            setattr(spec, name, _tensor(full, vocab_size, plan))


def _tensor(path: str, vocab_size: int, plan: dict[int, int]) -> np.ndarray:
    d = D_MODEL
    rng = np.random.default_rng(abs(hash(path)) % 2**32)

    def zeros(*shape: int) -> np.ndarray:
        # near-zero noise rather than zeros: CTranslate2 would merge identical tensors into aliases
        return (rng.standard_normal(shape) * 1e-4).astype(np.float32)

    if path.endswith("layer_norm/gamma"):
        return np.ones(d, dtype=np.float32)
    if path.endswith("layer_norm/beta"):
        return zeros(d)
    if path == "encoder/conv1/weight":
        return zeros(d, N_MELS, 3)
    if path == "encoder/conv2/weight":
        return zeros(d, d, 3)
    if path.endswith("conv1/bias") or path.endswith("conv2/bias"):
        return zeros(d)
    if path == "encoder/position_encodings/encodings":
        return zeros(1500, d)
    if path == "decoder/position_encodings/encodings":
        pos = zeros(448, d)
        for p in range(min(448, d)):
            pos[p, p] = 10.0
        return pos
    if path == "decoder/embeddings/weight":
        return zeros(vocab_size, d)
    if path == "decoder/projection/weight":
        proj = zeros(vocab_size, d)
        for position, token in plan.items():
            proj[token, position] = 10.0
        return proj
    if "self_attention/linear_0" in path:
        return zeros(3 * d, d)
    if "attention/linear_1" in path and "self_attention" not in path:
        return zeros(2 * d, d)
    if "ffn/linear_0" in path:
        return zeros(FFN, d)
    if "ffn/linear_1" in path:
        return zeros(d, FFN)
    if "linear_" in path:
        return zeros(d, d)
    raise ValueError(f"no rule for {path}")


def build_tiny_whisper(target: Path) -> Path:
    """Write the model (``model.bin``, ``config.json``, vocabulary, ``tokenizer.json``) into ``target``."""
    from ctranslate2.specs import whisper_spec
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = vocabulary()
    ids = {tok: i for i, tok in enumerate(vocab)}
    # English-only prompt: <|startoftranscript|> <|notimestamps|>; the last prompt position predicts word 1.
    prompt_len = 2
    plan = {prompt_len - 1 + i: ids[w] for i, w in enumerate(WORDS)}
    plan[prompt_len - 1 + len(WORDS)] = ids["<|endoftext|>"]

    spec = whisper_spec.WhisperSpec(1, 2, 1, 2)
    _fill(spec, "", len(vocab), plan)
    # optional in the spec, but the Whisper runtime needs them
    for name in ("encoder/position_encodings/encodings", "decoder/position_encodings/encodings",
                 "encoder/conv1/bias", "encoder/conv2/bias"):  # fmt: skip
        layer_path, attr = name.rsplit("/", 1)
        layer: object = spec
        for part in layer_path.split("/"):
            layer = getattr(layer, part)
        setattr(layer, attr, _tensor(name, len(vocab), plan))
    spec.register_vocabulary(vocab)
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = []
    spec.config.lang_ids = []
    spec.config.alignment_heads = [(0, 0)]
    spec.validate()
    spec.optimize(quantization=None)
    target.mkdir(parents=True, exist_ok=True)
    spec.save(str(target))

    tok = Tokenizer(models.WordLevel(vocab=ids, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIALS))
    tok.save(str(target / "tokenizer.json"))
    (target / "preprocessor_config.json").write_text(json.dumps({"feature_size": N_MELS}))
    return target
