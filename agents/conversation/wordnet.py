"""Synonyms and broader words from WordNet 3.0's database files, so retrieval can tell that
"what's the damage?" asks for a price and that "the Saturday event" is the Saturday tournament.

Reads the plain database files that Debian's `wordnet-base` installs (/usr/share/wordnet:
index.noun, data.noun ..., format in wndb(5)) directly: index lookups are binary searches in the
memory-mapped, sorted index files, so opening costs nothing and one process shares the pages
among all its channels. Without the files retrieval still works, on its own lexicon only.
"""

from __future__ import annotations

import logging
import mmap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/usr/share/wordnet")
POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
HYPERNYM = ("@", "@i")
"""Pointer symbols of a synset's broader synsets (class and instance)."""


@dataclass(frozen=True)
class Synset:
    """One meaning: the words that name it and its broader meanings."""

    words: tuple[str, ...]
    """Lower case, spaces between the words of a phrase ("social event")."""
    hypernyms: tuple[tuple[str, int], ...]
    """(pos, offset) of each broader synset."""


class WordNet:
    """Read-only access to one WordNet database directory."""

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self._index: dict[str, mmap.mmap] = {}
        self._data: dict[str, mmap.mmap] = {}
        self._exceptions: dict[str, dict[str, str]] = {}
        for pos, name in POS.items():
            self._index[pos] = _map(root / f"index.{name}")
            self._data[pos] = _map(root / f"data.{name}")
            exc = root / f"{name}.exc"
            pairs = (line.split()[:2] for line in exc.read_text().splitlines() if line.strip()) if exc.exists() else ()
            self._exceptions[pos] = {inflected: base for inflected, base in pairs}

    def senses(self, word: str, pos: str) -> list[int]:
        """Offsets of `word`'s synsets of part of speech `pos`, most frequent sense first; an
        inflected form is looked up by its base ("geese" -> "goose", "cooking" -> "cook")."""
        key = word.lower().replace(" ", "_")
        for form in dict.fromkeys((key, self._exceptions[pos].get(key, key), *_detach(key, pos))):
            line = _lookup(self._index[pos], form)
            if line:
                fields = line.split()
                pointers = int(fields[3])
                count = int(fields[2])
                return [int(f) for f in fields[4 + pointers + 2 : 4 + pointers + 2 + count]]
        return []

    @lru_cache(maxsize=65536)  # noqa: B019 - one WordNet per process, shared by every channel
    def synset(self, pos: str, offset: int) -> Synset:
        data = self._data[pos]
        end = data.find(b"\n", offset)
        fields = data[offset:end].split(b" | ", 1)[0].decode().split()
        count = int(fields[3], 16)
        words = tuple(_clean(fields[4 + 2 * i]) for i in range(count))
        at = 4 + 2 * count
        pointers = int(fields[at])
        hypernyms = []
        for i in range(pointers):
            symbol, target, target_pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
            if symbol in HYPERNYM:
                hypernyms.append(("a" if target_pos == "s" else target_pos, int(target)))
        return Synset(words, tuple(hypernyms))

    def synonyms(self, word: str, senses: int = 3, parts: str = "nva") -> set[str]:
        """The other words of `word`'s most frequent meanings of the parts of speech `parts` (noun,
        verb, adjective)."""
        out: set[str] = set()
        for pos in parts:
            for offset in self.senses(word, pos)[:senses]:
                out.update(self.synset(pos, offset).words)
        out.discard(word)
        return out

    def kinds(self, word: str, pos: str, senses: int = 2) -> set[str]:
        """The first name of what each of `word`'s most frequent meanings is a kind of ("save": "keep")."""
        return {
            self.synset(p, o).words[0]
            for offset in self.senses(word, pos)[:senses]
            for p, o in self.synset(pos, offset).hypernyms
        }

    def heads(self, word: str) -> set[str]:
        """For each meaning of `word`: the word that names that meaning first, and the first name of
        what it is a kind of ("damage": "price"; "dough": "money"). Fewer than all synonyms: a park
        is also "a green", a pot "a good deal", which mislead."""
        out: set[str] = set()
        for pos in ("n", "v", "a"):
            for offset in self.senses(word, pos):
                synset = self.synset(pos, offset)
                out.add(synset.words[0])
                out.update(self.synset(p, o).words[0] for p, o in synset.hypernyms)
        out.discard(word)
        return out

    def broader(self, word: str, depth: int = 3, senses: int = 2) -> set[str]:
        """Words for what `word` is a kind of, up to `depth` steps up from its most frequent noun
        meanings ("tournament" -> "contest", "social event", "event"), never the very general
        ones near the top ("entity", "abstraction"); none for a word that can be an adjective."""
        out: set[str] = set()
        if self.senses(word, "a"):
            return out  # "high", "low": their noun meanings ("a high-pressure area") mislead
        frontier = [("n", offset) for offset in self.senses(word, "n")[:senses]]
        for _ in range(depth):
            above = [h for pos, offset in frontier for h in self.synset(pos, offset).hypernyms]
            out.update(
                w
                for pos, offset in above
                if self.height(pos, offset) > TOO_GENERAL
                for w in self.synset(pos, offset).words
            )
            frontier = above
        return out

    def knows(self, word: str) -> bool:
        """WordNet lists `word` (or its base form: "cooking") as a word or phrase."""
        return any(self.senses(word, pos) for pos in POS)

    @lru_cache(maxsize=4096)  # noqa: B019
    def is_english(self, word: str) -> bool:
        """`word` is an English word, two run together ("timezone"), or, from six letters, one
        with a letter wrong ("recieve"): not a name typed in lower case ("youtube", "paypal")."""
        if self.knows(word) or any(self.knows(f"{word[:i]} {word[i:]}") for i in range(2, len(word) - 1)):
            return True
        return len(word) >= 6 and any(_lookup(self._index[pos], e) for e in _one_letter_off(word) for pos in POS)

    @lru_cache(maxsize=65536)  # noqa: B019
    def height(self, pos: str, offset: int) -> int:
        """Steps from the top of the hierarchy (the shortest way up)."""
        up = self.synset(pos, offset).hypernyms
        return 0 if not up else 1 + min(self.height(p, o) for p, o in up)


TOO_GENERAL = 2
"""Synsets this close to the top ("entity", "physical entity", "abstraction", "object") say nothing."""


def _map(path: Path) -> mmap.mmap:
    with path.open("rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _lookup(index: mmap.mmap, word: str) -> str:
    """The index line of `word`, by binary search over the sorted file (license lines start with
    spaces and sort first)."""
    target = word.encode()
    lo, hi = 0, len(index)
    while lo < hi:
        mid = (lo + hi) // 2
        start = index.rfind(b"\n", 0, mid) + 1
        end = index.find(b"\n", start)
        end = len(index) if end < 0 else end
        key = index[start : index.find(b" ", start, end)]
        if key == target:
            return index[start:end].decode()
        if key < target:
            lo = end + 1
        else:
            hi = start
    return ""


_DETACH = {
    "n": (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"),
          ("s", "")),
    "v": (("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", ""), ("s", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}  # fmt: skip
"""WordNet's own suffix rules (morphy): inflected ending -> base ending."""


def _detach(word: str, pos: str) -> list[str]:
    out = [word[: -len(end)] + base for end, base in _DETACH[pos] if word.endswith(end) and len(word) > len(end) + 1]
    out += [w[:-1] for w in out if len(w) > 3 and w[-1] == w[-2]]  # "shipping" -> "shipp" -> "ship"
    return out


def _one_letter_off(word: str) -> set[str]:
    """Spellings one letter away: one deleted, swapped with the next, replaced or added."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    cuts = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return (
        {a + b[1:] for a, b in cuts if b}
        | {a + b[1] + b[0] + b[2:] for a, b in cuts if len(b) > 1}
        | {a + c + b[1:] for a, b in cuts if b for c in letters}
        | {a + c + b for a, b in cuts for c in letters}
    ) - {word}


def _clean(word: str) -> str:
    return word.split("(")[0].replace("_", " ").lower()  # adjective markers: "galore(ip)"


@lru_cache(maxsize=4)
def open_wordnet(root: str = str(DEFAULT_ROOT)) -> WordNet | None:
    """The process's WordNet, or None (logged once) when its files are not there."""
    try:
        return WordNet(Path(root))
    except (OSError, ValueError) as exc:
        log.warning("WordNet not found at %s (%s): retrieval matches synonyms from its own lexicon only; "
                    "install Debian's wordnet-base for more", root, exc)  # fmt: skip
        return None
