"""Cut streamed LLM text into sentences and clauses for streaming TTS.

:class:`SentenceChunker` is incremental: :meth:`~SentenceChunker.push` takes text as it streams and returns
the pieces that are complete; :meth:`~SentenceChunker.flush` returns the rest at the end of the answer.
Sentences end at ``. ! ? …`` followed by whitespace and at the CJK stops ``。！？；``; abbreviations
(``Dr.``, ``e.g.``), initials (``J. R. R.``) and decimals (``3.5``) do not end a sentence. The first piece
of an answer may be a clause (cut at ``, ; : —`` once it is ``first_chunk_min_chars`` long) so the first
audio starts early; an over-long sentence is cut at its last clause or word boundary before ``max_chars``.

Any object with ``push``/``flush`` (the :class:`Chunker` protocol) or any callable ``(str) -> list[str]``
(as the reference's ``sentenceChunker``) can replace it; see :func:`as_chunker`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

LATIN_TERMINALS = frozenset(".!?…")
CJK_TERMINALS = frozenset("。！？；｡")
TERMINALS = LATIN_TERMINALS | CJK_TERMINALS
CLOSERS = frozenset("\"'”’)]}」』）》〉")
CLAUSE_MARKS = frozenset(",;:—–")
CJK_CLAUSE_MARKS = frozenset("，、：")

ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "eg", "ie", "inc",
        "ltd", "co", "corp", "fig", "figs", "approx", "dept", "est", "gen", "gov", "lt", "col", "sgt",
        "capt", "rev", "hon", "jan", "feb", "apr", "aug", "sep", "sept", "oct", "nov", "dec", "a.m",
        "p.m", "u.s", "u.k", "ph.d", "cf", "al", "ave", "blvd", "rd", "mins", "min", "hrs", "sec",
    }
)  # fmt: skip
_ABBREVIATIONS_BEFORE_NUMBER = frozenset({"no", "nos", "vol", "pp", "p", "ch", "art", "op"})

_UNKNOWN = -1
_NOT_BOUNDARY = 0


@runtime_checkable
class Chunker(Protocol):
    """Incremental text splitter: ``push`` streamed text, ``flush`` at the end of the answer."""

    def push(self, text: str) -> list[str]: ...

    def flush(self) -> list[str]: ...


def _word_before(text: str, i: int) -> str:
    k = i
    while k > 0 and (text[k - 1].isalpha() or text[k - 1] == "."):
        k -= 1
    return text[k:i].lstrip(".")


def _boundary_at(text: str, i: int, final: bool) -> int:
    """End index (exclusive) of a sentence ending with the terminal at ``i``; 0 if none; -1 if undecidable yet."""
    n = len(text)
    j = i + 1
    while j < n and (text[j] in TERMINALS or text[j] in CLOSERS):
        j += 1
    if any(c in CJK_TERMINALS for c in text[i:j]):
        return j if (j < n or final) else _UNKNOWN
    if j == n:
        return j if final else _UNKNOWN
    if not text[j].isspace():
        return _NOT_BOUNDARY  # 3.5, node.js, "Hello."x
    if text[i] == "." and j == i + 1:
        word = _word_before(text, i)
        lower = word.lower()
        if lower in ABBREVIATIONS:
            return _NOT_BOUNDARY
        if len(word) == 1 and word.isupper():
            return _NOT_BOUNDARY  # an initial: "J. Smith"
        if lower in _ABBREVIATIONS_BEFORE_NUMBER:
            k = j
            while k < n and text[k].isspace():
                k += 1
            if k == n and not final:
                return _UNKNOWN
            if k < n and text[k].isdigit():
                return _NOT_BOUNDARY
    return j


class SentenceChunker:
    """Incremental sentence/clause splitter for streaming TTS.

    ``first_chunk_min_chars``: the first piece may be cut at a clause mark once it has this many characters
    (0 disables clause cuts for the first piece). ``min_chars``: later sentences shorter than this are merged
    with the next one. ``max_chars``: a piece never gets longer; it is cut at a clause mark or word boundary.
    """

    def __init__(self, *, first_chunk_min_chars: int = 24, min_chars: int = 12, max_chars: int = 240) -> None:
        if max_chars < 8:
            raise ValueError("max_chars must be at least 8")
        if min_chars < 0 or first_chunk_min_chars < 0:
            raise ValueError("min_chars and first_chunk_min_chars must not be negative")
        self.first_chunk_min_chars = first_chunk_min_chars
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._buf = ""
        self._scan = 0
        self._emitted = 0

    def push(self, text: str) -> list[str]:
        """Add streamed text; returns the pieces now complete (possibly none)."""
        if not text:
            return []
        self._buf += text
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the answer: returns every remaining piece and resets for the next answer."""
        out = self._drain(final=True)
        rest = self._buf.strip()
        if rest:
            out.append(rest)
        self.reset()
        return out

    def reset(self) -> None:
        """Forget buffered text (e.g. after a cancelled answer)."""
        self._buf = ""
        self._scan = 0
        self._emitted = 0

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            cut = self._next_cut(final)
            if cut is None:
                return out
            piece = self._buf[:cut].strip()
            self._buf = self._buf[cut:]
            self._scan = 0
            if piece:
                out.append(piece)
                self._emitted += 1

    def _next_cut(self, final: bool) -> int | None:
        buf = self._buf
        n = len(buf)
        min_len = 1 if self._emitted == 0 else self.min_chars
        i = self._scan
        undecided = False
        while i < n:
            if buf[i] in TERMINALS:
                end = _boundary_at(buf, i, final)
                if end == _UNKNOWN:
                    undecided = True
                    break
                if end > 0:
                    if end > self.max_chars:
                        break  # too long: fall through to the clause cut
                    if len(buf[:end].strip()) >= min_len or end == n:
                        return end
                    i = end
                    continue
            i += 1
        if not undecided and i >= n:
            self._scan = n
        elif undecided:
            self._scan = i
        if self._emitted == 0 and self.first_chunk_min_chars and not final:
            cut = self._clause_cut(buf, self.first_chunk_min_chars, min(n, self.max_chars))
            if cut is not None:
                return cut
        if len(buf.strip()) > self.max_chars:
            return self._forced_cut(buf)
        return None

    @staticmethod
    def _clause_cut(buf: str, min_len: int, limit: int) -> int | None:
        """The first clause end at or after ``min_len`` characters, confirmed by what follows."""
        for i in range(max(0, min_len - 1), limit):
            ch = buf[i]
            if ch in CJK_CLAUSE_MARKS and i + 1 < len(buf):
                return i + 1
            if ch in CLAUSE_MARKS and i + 1 < len(buf) and buf[i + 1].isspace():
                return i + 1
        return None

    def _forced_cut(self, buf: str) -> int:
        limit = self.max_chars
        for i in range(limit - 1, self.max_chars // 3, -1):
            if (buf[i] in CLAUSE_MARKS and i + 1 < len(buf) and buf[i + 1].isspace()) or buf[
                i
            ] in CJK_CLAUSE_MARKS:
                return i + 1
        for i in range(limit, self.max_chars // 3, -1):
            if buf[i].isspace():
                return i
        return limit


class CallableChunker:
    """Adapts a function ``(text) -> list[str]`` (split a whole text) to the incremental protocol.

    The function is applied to the buffered text; all pieces but the last are complete (the last may still
    grow), and :meth:`flush` returns every piece.
    """

    def __init__(self, split: Callable[[str], list[str]]) -> None:
        self._split = split
        self._buf = ""

    def push(self, text: str) -> list[str]:
        self._buf += text
        pieces = [p for p in self._split(self._buf) if p is not None]
        if len(pieces) <= 1:
            return []
        done = [p.strip() for p in pieces[:-1] if p.strip()]
        self._buf = pieces[-1]
        return done

    def flush(self) -> list[str]:
        pieces = [p.strip() for p in self._split(self._buf) if p and p.strip()] if self._buf.strip() else []
        self._buf = ""
        return pieces

    def reset(self) -> None:
        self._buf = ""


def as_chunker(obj: Chunker | Callable[[str], list[str]] | None) -> Chunker:
    """A :class:`Chunker` from a chunker, a splitting function, or ``None`` (a default :class:`SentenceChunker`)."""
    if obj is None:
        return SentenceChunker()
    if isinstance(obj, Chunker):
        return obj
    if callable(obj):
        return CallableChunker(obj)
    raise TypeError(f"expected a Chunker or a callable (str) -> list[str], got {type(obj).__name__}")


def split_sentences(text: str) -> list[str]:
    """Split a whole text into sentences (no clause cuts, no merging)."""
    chunker = SentenceChunker(first_chunk_min_chars=0, min_chars=0, max_chars=max(8, len(text) + 1))
    return chunker.push(text) + chunker.flush()


__all__ = [
    "ABBREVIATIONS",
    "CallableChunker",
    "Chunker",
    "SentenceChunker",
    "as_chunker",
    "split_sentences",
]
