"""Does a transcript stop mid-sentence? The words' half of the end-of-turn decision.

An audio end-of-turn model hears *how* something was said; it cannot know that "I'd like to book a flight
to" is missing its destination. When the transcript of what was said so far ends on a word that an English
sentence cannot end on, the turn is not over, whatever the voice did: the caller keeps listening for the
longer, mid-thought silence instead of answering. The check only ever *delays* an answer (by that longer
silence), it never ends a turn sooner, so its cost when it is wrong is latency, never an interruption.

:func:`unfinished_reason` looks at the end of the transcript only (no model, microseconds):

* trailing punctuation an STT writes for speech that trails off: ``,`` ``;`` ``:`` ``-`` ``...``;
* a last word that needs something after it: an article or possessive determiner ("the", "my"), a
  conjunction ("and", "because", "if", "than"), a preposition ("to", "of", "with"; a stranded preposition
  ends a short wh-question fine: "Where are you from?"), a subject pronoun ("and then I"), a hesitation
  ("um", "uh");
* an auxiliary, modal or copula at the end of a longer clause ("I was wondering if you could", "my
  favourite kind of music is"); short answers ("Yes, I can", "I think it is") are complete.

Known limits, by design: an elliptical reply longer than four words that ends on an auxiliary ("I don't
know if I can") or on "to" ("I'd really love to") waits the longer silence; a sentence whose last word
could end it ("Please remind me to call ...") is not caught. English only: other languages get ``None``.
"""

from __future__ import annotations

import re

SUPPORTED_LANGUAGES = frozenset({"en"})

_TRAILING_OFF = (",", ";", ":", "-", "\u2013", "\u2014", "...", "\u2026")

_DETERMINERS = frozenset({"a", "an", "the", "my", "your", "our", "their", "its", "every"})
_CONJUNCTIONS = frozenset(
    {"and", "or", "but", "nor", "because", "cause", "if", "unless", "whether", "than", "although", "whereas"}
)
_PREPOSITIONS = frozenset(
    {
        "to", "of", "with", "at", "from", "for", "into", "onto", "about", "between", "through", "toward",
        "towards", "via", "per", "upon", "among", "without", "within", "across", "during", "including", "near",
    }
)  # fmt: skip
_SUBJECT_PRONOUNS = frozenset({"i", "we", "they", "he", "she"})
_HESITATIONS = frozenset({"um", "uh", "er", "erm", "uhm", "umm", "uhh"})
_AUXILIARIES = frozenset(
    {
        "could", "would", "should", "can", "will", "shall", "may", "might", "must", "is", "are", "was", "were",
        "am", "be", "been", "being", "have", "has", "had", "do", "does", "did",
    }
)  # fmt: skip
_WH_WORDS = frozenset({"what", "where", "who", "whom", "which", "whose", "how"})

STRANDED_MAX_WORDS = 6
"""A wh-question this short may end on its preposition ("Who did you talk to?")."""
AUXILIARY_MIN_WORDS = 5
"""A clause ending on an auxiliary is unfinished from this many words ("Yes, I can" is an answer)."""

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def unfinished_reason(text: str, language: str = "en") -> str | None:
    """Why ``text`` (a transcript so far) stops mid-sentence, or ``None`` when it may be complete (or the
    language is not supported: nothing is claimed then)."""
    if language.lower().split("-")[0] not in SUPPORTED_LANGUAGES:
        return None
    stripped = text.strip()
    words = _words(stripped)
    if not words:
        return None
    if stripped.endswith(_TRAILING_OFF):
        return "trails off"
    last = words[-1]
    if last in _HESITATIONS:
        return f"ends on a hesitation ({last!r})"
    if last in _DETERMINERS:
        return f"ends on a determiner ({last!r})"
    if last in _CONJUNCTIONS:
        return f"ends on a conjunction ({last!r})"
    if last in _PREPOSITIONS:
        if words[0] in _WH_WORDS and len(words) <= STRANDED_MAX_WORDS:
            return None  # "Where are you from?"
        return f"ends on a preposition ({last!r})"
    if last in _SUBJECT_PRONOUNS and len(words) > 1:
        return f"ends on a subject ({last!r})"
    if last in _AUXILIARIES and len(words) >= AUXILIARY_MIN_WORDS:
        return f"ends on an auxiliary ({last!r})"
    return None


def is_unfinished(text: str, language: str = "en") -> bool:
    """``True`` when ``text`` stops mid-sentence (see :func:`unfinished_reason`)."""
    return unfinished_reason(text, language) is not None


__all__ = ["SUPPORTED_LANGUAGES", "is_unfinished", "unfinished_reason"]
