"""Sentence/clause chunking for streaming TTS."""

from __future__ import annotations

import pytest

from llmrtc.chunking import CallableChunker, Chunker, SentenceChunker, as_chunker, split_sentences


def stream(chunker: Chunker, text: str, step: int = 3) -> list[str]:
    out: list[str] = []
    for i in range(0, len(text), step):
        out += chunker.push(text[i : i + step])
    return out + chunker.flush()


def test_split_basic_terminals() -> None:
    assert split_sentences("Hello there. How are you? Great! Fine… Really.") == [
        "Hello there.",
        "How are you?",
        "Great!",
        "Fine…",
        "Really.",
    ]


def test_abbreviations_initials_and_decimals_do_not_split() -> None:
    text = "Dr. Smith paid $3.50 for it, e.g. at the U.S. store. J. K. Rowling agreed. See No. 5 now."
    assert split_sentences(text) == [
        "Dr. Smith paid $3.50 for it, e.g. at the U.S. store.",
        "J. K. Rowling agreed.",
        "See No. 5 now.",
    ]


def test_cjk_stops_split_without_spaces() -> None:
    assert split_sentences("你好。今天天气很好！你呢？") == ["你好。", "今天天气很好！", "你呢？"]


def test_ellipsis_and_closing_quotes_stay_with_sentence() -> None:
    assert split_sentences('He said "stop." Then... he left.') == ['He said "stop."', "Then...", "he left."]


def test_streaming_equals_whole_text_for_any_step() -> None:
    text = "The price is 3.5 dollars today. Dr. Who arrived at 5 p.m. yesterday. That is all, folks!"
    expected = split_sentences(text)
    for step in (1, 2, 5, 17):
        chunker = SentenceChunker(first_chunk_min_chars=0, min_chars=0)
        assert stream(chunker, text, step) == expected


def test_decimal_split_across_pushes_is_not_a_boundary() -> None:
    chunker = SentenceChunker(first_chunk_min_chars=0, min_chars=0)
    assert chunker.push("It costs 3.") == []
    assert chunker.push("5 euros. Next") == ["It costs 3.5 euros."]
    assert chunker.flush() == ["Next"]


def test_first_chunk_is_a_short_clause_for_low_latency() -> None:
    chunker = SentenceChunker(first_chunk_min_chars=20, min_chars=10)
    text = (
        "Sure, I can help you with that booking today, no problem at all. Then the second sentence follows."
    )
    pieces = stream(chunker, text, 4)
    assert pieces[0] == "Sure, I can help you with that booking today,"
    assert pieces[1:] == ["no problem at all.", "Then the second sentence follows."]


def test_short_sentences_merge_after_the_first() -> None:
    chunker = SentenceChunker(first_chunk_min_chars=0, min_chars=15)
    assert stream(chunker, "Hi. Ok. Yes. This one is long enough.") == [
        "Hi.",
        "Ok. Yes. This one is long enough.",
    ]


def test_max_chars_forces_a_cut_at_clause_or_word() -> None:
    chunker = SentenceChunker(first_chunk_min_chars=0, max_chars=40)
    text = "one two three four five six seven, eight nine ten eleven twelve thirteen fourteen"
    pieces = stream(chunker, text, 5)
    assert all(len(p) <= 40 for p in pieces)
    assert pieces[0] == "one two three four five six seven,"
    assert " ".join(pieces) == text


def test_flush_resets_state() -> None:
    chunker = SentenceChunker()
    chunker.push("unfinished")
    assert chunker.flush() == ["unfinished"]
    assert chunker.flush() == []
    assert chunker.push("Short.") == []  # undecided until the next character
    assert chunker.push(" x") == ["Short."]  # a fresh answer: the first piece may be shorter than min_chars


def test_user_callable_as_reference_sentence_chunker() -> None:
    import re

    chunker = as_chunker(lambda t: re.split(r"(?<=[.!?])\s*", t))
    assert isinstance(chunker, CallableChunker)
    assert chunker.push("One. Tw") == ["One."]
    assert chunker.push("o! Three") == ["Two!"]
    assert chunker.flush() == ["Three"]


def test_as_chunker_defaults_and_rejects() -> None:
    assert isinstance(as_chunker(None), SentenceChunker)
    custom = SentenceChunker(max_chars=50)
    assert as_chunker(custom) is custom
    with pytest.raises(TypeError):
        as_chunker(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SentenceChunker(max_chars=2)
