"""The backchannel rule: listening noises do not cancel the agent, real interruptions do."""

from __future__ import annotations

import pytest

from llmrtc.audio.backchannel import BackchannelRule, is_backchannel, normalize
from tests.fixtures.turn_corpus import BACKCHANNELS as CORPUS_BACKCHANNELS


@pytest.mark.parametrize(
    "text",
    ["Mm-hm.", "mhm", "Yeah.", "yeah yeah", "Okay!", "OK", "Uh-huh", "uh huh", "Right.", "Sure", "I see.",
     "oh, okay", "Mmm hmm", "got it", "Hmm.", "yep right"],
)  # fmt: skip
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "Stop.", "wait", "No.", "yeah but wait", "okay so what about Paris",
     "What is the capital of France?", "hold on", "right, cancel that", "Sorry?"],
)  # fmt: skip
def test_real_interruptions(text: str) -> None:
    assert not is_backchannel(text)


def test_every_corpus_backchannel_is_one() -> None:
    assert all(is_backchannel(word) for word in CORPUS_BACKCHANNELS)


def test_length_and_duration_bounds() -> None:
    assert not is_backchannel("yeah yeah yeah yeah")  # four words: more than max_words
    assert is_backchannel("yeah", duration_s=0.4)
    assert not is_backchannel("yeah", duration_s=2.5)  # long speech: not a mere "yeah"
    strict = BackchannelRule(max_words=1, lexicon=frozenset({"mm hm"}))
    assert is_backchannel("mm-hm", rule=strict)  # a two-word phrase counts as one unit of the lexicon
    assert not is_backchannel("okay", rule=strict)


def test_normalize() -> None:
    assert normalize("Mm-hm. Uh-HUH!") == ["mm", "hm", "uh", "huh"]
    assert normalize("That's right") == ["that's", "right"]
