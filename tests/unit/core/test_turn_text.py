"""The transcript half of end of turn: a sentence that stops on a word it cannot end on is unfinished."""

from __future__ import annotations

import pytest

from llmrtc.turn_text import is_unfinished, unfinished_reason

# none of these is in the turn corpus: they check that the rule is about English, not about the corpus
COMPLETE = [
    "What time is it?", "Where are you from?", "What is it for?", "Who did you talk to?",
    "What are you looking at?", "Turn on the lights.", "Can you hear me?", "Yes, I can.", "I think it is.",
    "No, I don't.", "Set a timer for ten minutes.", "What's the weather in London?", "Play some jazz.",
    "How do I get to the airport?", "Call my mom.", "Thanks, that's it.", "Send a message to John.",
    "Tell me more about it.", "Book a table for two at seven.", "Remind me to buy milk.",
    "How much does it cost?", "Is it going to rain tomorrow?", "What's on my calendar today?",
    "Cancel my three o'clock meeting.", "I want to go home.", "That sounds good.", "Okay, let's do that.",
    "Can you help me with my homework?", "What is two plus two?", "Who won the game last night?",
    "I need a taxi.", "Where is the closest pharmacy?", "Could you speak a bit slower?",
    "I'm looking for a gift for my sister.", "Why is the sky blue?", "Add eggs to my shopping list.",
    "Read me the news.", "Open the garage door.", "How are you doing today?", "Let me think about it.",
    "I have no idea.", "Sure, go ahead.", "What do you recommend?", "Translate hello into Spanish.",
    "Which one is cheaper?", "Wake me up at six.", "Is the store open on Sunday?", "How far is it?",
    "log me in", "mm-hm", "",
]  # fmt: skip
UNFINISHED = [
    "Can you book me a flight to", "I need to pick up the", "My daughter and",
    "Tell me about the history of", "I want something with", "Let's meet at", "Because I",
    "Could you check if", "I'd rather have tea than", "Send it to my", "He said that we",
    "Please add milk and", "The problem is that my", "I was going to", "I'm calling about",
    "Um, I'd like a, uh", "Is it possible to", "Can you find me a restaurant near",
    "The best option would be", "I think the answer is", "Book it for", "And then she",
    "I'd like to book a flight to...", "So the thing is,", "What is the best way to get from the station to",
]  # fmt: skip
KNOWN_DELAYED = ["I'd love to.", "That's not what I asked for."]
"""Complete, but they end like a fragment: they wait the longer silence (the check's known cost)."""
KNOWN_MISSED = ["So I was thinking that", "We should probably", "Please remind me to call"]
"""Unfinished, but their last word can end a sentence: the audio model alone decides."""


@pytest.mark.parametrize("text", COMPLETE)
def test_complete_sentences_are_not_held(text: str) -> None:
    assert unfinished_reason(text) is None


@pytest.mark.parametrize("text", UNFINISHED)
def test_fragments_are_unfinished(text: str) -> None:
    assert is_unfinished(text), text


@pytest.mark.parametrize("text", KNOWN_DELAYED)
def test_documented_limit_elliptical_replies_wait(text: str) -> None:
    assert is_unfinished(text)


@pytest.mark.parametrize("text", KNOWN_MISSED)
def test_documented_limit_sentence_final_words_pass(text: str) -> None:
    assert not is_unfinished(text)


def test_reasons_name_the_word() -> None:
    assert unfinished_reason("a flight to") == "ends on a preposition ('to')"
    assert unfinished_reason("the opening hours of the") == "ends on a determiner ('the')"
    assert unfinished_reason("I'd like tea, uh") == "ends on a hesitation ('uh')"
    assert unfinished_reason("I was wondering if you could") == "ends on an auxiliary ('could')"
    assert unfinished_reason("milk, eggs,") == "trails off"
    assert unfinished_reason("I want to go with you\u2026") == "trails off"


def test_short_answers_and_short_wh_questions_are_complete() -> None:
    assert not is_unfinished("Yes I can")
    assert not is_unfinished("Where is it from")
    assert is_unfinished("Where did you say the train to Berlin leaves from")  # long: not a stranded one


def test_other_languages_claim_nothing() -> None:
    assert unfinished_reason("Je voudrais aller à", "fr") is None
    assert unfinished_reason("Ich möchte einen Flug nach", "de-DE") is None
    assert unfinished_reason("a flight to", "en-US") is not None
