"""Split streamed LLM text into speakable pieces as soon as each is complete.

TTS wants whole sentences (intonation), the viewer wants the first words fast: so the first
piece of an answer may be a clause ("Sure, ...") and the rest are sentences. A period ends a
sentence only when what follows shows it is not an abbreviation ("Dr. Smith"), a decimal
("3.50") or an initial ("J. R. R."), so a boundary is decided one character late. CJK full
stops end a sentence at once.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e no approx mt ft inc ltd co dept est fig jan feb mar apr jun jul aug "
    "sep sept oct nov dec".split()
)
_END = ".!?…"
_CJK_END = "。！？"
_CLAUSE = ",;:，、；：—"
_CLOSERS = "\"')]”’»"
_DROP = str.maketrans("", "", "*#`_~")


class ClauseSplitter:
    def __init__(self, *, first_clause_chars: int = 8, first_clause_words: int = 4, max_chars: int = 180) -> None:
        """first_clause_chars: the first piece may end at a comma once it is this long (0: never).
        first_clause_words: with no comma by then, the first piece ends after this many words (0: never)."""
        self.first_clause_chars = first_clause_chars
        self.first_clause_words = first_clause_words if first_clause_chars else 0
        self.max_chars = max_chars
        self._buf = ""
        self._pieces = 0

    def feed(self, delta: str) -> list[str]:
        self._buf += delta.translate(_DROP)
        out: list[str] = []
        while True:
            cut = self._boundary()
            if cut is None:
                break
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                out.append(piece)
                self._pieces += 1
        return out

    def flush(self) -> list[str]:
        """The rest, at the end of the stream."""
        piece, self._buf = self._buf.strip(), ""
        if piece:
            self._pieces += 1
            return [piece]
        return []

    def _boundary(self) -> int | None:
        buf = self._buf
        for i, ch in enumerate(buf):
            if ch in _CJK_END:
                return _after_closers(buf, i + 1)
            if ch in _END and i + 1 < len(buf):
                end = _after_closers(buf, i + 1)
                if end < len(buf) and buf[end].isspace() and not self._abbreviation(buf, i):
                    return end
            if (
                ch in _CLAUSE
                and self._pieces == 0
                and self.first_clause_chars
                and i + 1 >= self.first_clause_chars
                and i + 1 < len(buf)
                and (buf[i + 1].isspace() or ch in "，、；：")
                and not (ch == "," and i > 0 and buf[i - 1].isdigit() and i + 1 < len(buf) and buf[i + 1].isdigit())
            ):
                return i + 1
        if self._pieces == 0 and self.first_clause_words:
            spaces = [m.start() for m in re.finditer(r"\s+", buf)]
            if len(spaces) > self.first_clause_words:  # the word after the limit has begun: a word boundary
                return spaces[self.first_clause_words - 1]
        if len(buf) > self.max_chars:  # a run-on answer: break at the last space so TTS can start
            space = buf.rfind(" ", 0, self.max_chars)
            return space if space > 0 else self.max_chars
        return None

    @staticmethod
    def _abbreviation(buf: str, i: int) -> bool:
        if buf[i] != ".":
            return False
        word = re.split(r"\s", buf[:i])[-1].lower().lstrip("(\"'")
        return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _after_closers(buf: str, j: int) -> int:
    while j < len(buf) and buf[j] in _CLOSERS:
        j += 1
    return j


def split_sentences(text: str) -> list[str]:
    """Sentences of a whole text (no early first clause)."""
    splitter = ClauseSplitter(first_clause_chars=0)
    return splitter.feed(text) + splitter.flush()
