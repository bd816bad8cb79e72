"""Backchannels: "mm-hm", "yeah", "okay" said while the agent talks are listening, not interrupting.

After a barge-in's transcript arrives, :func:`is_backchannel` tells whether it was only a backchannel (the
agent should go on) or a real interruption: short (at most ``max_words`` words and, when known, at most
``max_duration_s`` of speech) and made only of lexicon phrases. "yeah but wait" is not a backchannel ("but"
is no backchannel word); "no", "stop" and "wait" are never in the lexicon.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

BACKCHANNELS: frozenset[str] = frozenset(
    {
        "mm hm", "mhm", "mm", "mmm", "hm", "hmm", "uh huh", "uh hu", "aha", "ah", "oh", "ooh",
        "yeah", "yea", "yep", "yes", "yup", "ok", "okay", "k", "right", "alright", "all right", "sure",
        "i see", "got it", "gotcha", "cool", "nice", "great", "good", "fine", "wow", "really", "true",
        "exactly", "totally", "indeed", "of course", "makes sense", "that makes sense", "sounds good",
        "go on", "go ahead", "i know", "uh", "um", "oh okay", "oh right", "oh yeah", "oh i see",
    }
)  # fmt: skip
"""Phrases (lower case, words separated by one space) that only signal listening."""

_SPLIT = re.compile(r"[^\w']+", re.UNICODE)
_SPOKEN_WORD = re.compile(r"\w[\w'-]*", re.UNICODE)  # "mm-hm" is one spoken word
_HUM = re.compile(r"^(?:m+h*m*|h+m+|u+h+|a+h+|o+h+|u+m+)$")


class BackchannelRule(BaseModel):
    """What counts as a backchannel: short, and every word part of a lexicon phrase."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_words: int = Field(3, ge=1, description="longer transcripts are never backchannels (mm-hm: one word)")
    max_duration_s: float = Field(1.5, gt=0.0, description="longer speech is never a backchannel")
    lexicon: frozenset[str] = Field(BACKCHANNELS, description="backchannel phrases, lower case")


def normalize(text: str) -> list[str]:
    """Lower-case words, hyphens and punctuation removed ("Mm-hm." -> ["mm", "hm"], "Uh-huh!" -> ...)."""
    return [w.strip("'") for w in _SPLIT.split(text.lower().replace("-", " ")) if w.strip("'")]


def is_backchannel(
    transcript: str, *, duration_s: float | None = None, rule: BackchannelRule | None = None
) -> bool:
    """Whether ``transcript`` (the words of a barge-in, ``duration_s`` of speech) is only a backchannel.

    An empty transcript is not a backchannel (it is no speech at all; see
    :class:`~llmrtc.audio.interruption.FalseInterruptionPolicy`).
    """
    rule = rule or BackchannelRule()
    words = normalize(transcript)
    if not words or len(_SPOKEN_WORD.findall(transcript)) > rule.max_words:
        return False
    if duration_s is not None and duration_s > rule.max_duration_s:
        return False
    longest = max((len(p.split()) for p in rule.lexicon), default=1)
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            if " ".join(words[i : i + n]) in rule.lexicon:
                i += n
                break
        else:
            if _HUM.match(words[i]) is None:
                return False
            i += 1
    return True


__all__ = ["BACKCHANNELS", "BackchannelRule", "is_backchannel", "normalize"]
