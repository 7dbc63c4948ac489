"""A text's words with what they name (stems, concepts, entities), a fact's terms, and the shapes
of questions retrieval reads: what-questions, follow-ups, words that only say where or for what."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from agents.conversation.lexicon import GENERIC, STOP, is_number

CURRENT = 1.0
"""Extra score of the fact that says what today's thing is, per question word naming that thing
when the question asks what ("what's cooking?", "what's the dish of the day?": today's recipe) and
not about another time ("what's next week's game?")."""
WHAT = frozenset("what whats which".split())
"""Openers of a question asking what a thing is."""
NOW = frozenset("today tonight current now currently".split())
NOT_NOW = frozenset("next tomorrow yesterday last later upcoming previous before after".split())
FOLLOW_UP_WORDS = frozenset("it its they them their that those this these one ones he she him her".split())
FOLLOW_UP_OPENERS = ("and ", "what about", "how about", "or ", "also ", "so ")


@dataclass
class Word:
    """One word of a text, with what it names."""

    text: str
    stem: str
    concepts: dict[str, bool]
    """concept -> named strongly (True) or loosely."""
    entities: set[str]
    hints: set[str] = field(default_factory=set)
    """Entities a word hints at without naming them for sure ("hiking": the Trail Pro)."""
    kin: set[str] = field(default_factory=set)
    """Stems of the facts' words that are synonyms of it, in some meaning (weak evidence)."""
    widened: bool = False
    """Explained only by WordNet: known only if it points at the chosen fact."""
    in_phrase: bool = False
    capitalised: bool = False
    """Capitalised and not the text's first word: a name."""

    @property
    def content(self) -> bool:
        return self.text not in STOP and not is_number(self.text)

    @property
    def strong(self) -> bool:
        return any(self.concepts.values())


@dataclass(frozen=True)
class FactTerms:
    stems: frozenset[str]
    concepts: Counter[str]
    """concept -> how many of the fact's words name it."""
    entities: frozenset[str]
    numbers: frozenset[str]
    broader: frozenset[str] = frozenset()
    """Stems of what the fact's things are kinds of ("tournament": "contest", "event")."""
    current: frozenset[str] = frozenset()
    """Stems and @concepts of what the fact says is today's ("Today's recipe is ...": recipe)."""


PREPOSITIONS = frozenset("in into inside for with".split())
"""Before a word that need not be answered ("in the sauce"); not "on", "at": "do you deliver on Sundays?"
is about Sundays."""
DETERMINERS = frozenset("the a an my your our their his her its this that these those some".split())


def adjunct(words: list[Word], i: int) -> bool:
    """Word i only says where or for what ("how many tomatoes go in the sauce?", "... for the pasta in
    the pot"): the answer need not speak to it, unlike the thing asked about ("is the risotto vegan?")."""
    j = i - 1
    while j >= 0 and words[j].text in DETERMINERS:
        j -= 1
    return j > 0 and words[j].text in PREPOSITIONS


def names_current(w: Word, fact: FactTerms) -> bool:
    return w.content and not w.entities and (w.stem in fact.current or any("@" + c in fact.current for c in w.concepts))


def current_subject(words: list[Word]) -> frozenset[str]:
    """What a fact such as "Tonight's game is Star Raiders" or "Today's deal: ..." says is the
    current one (the subject's stems and concepts), or nothing."""
    verb = next((i for i, w in enumerate(words) if w.text in ("is", "are")), len(words))
    subject = words[: min(verb, 4)]
    if not any(w.stem in NOW for w in subject):
        return frozenset()
    return frozenset(
        term for w in subject if w.content and w.stem not in NOW for term in (w.stem, *("@" + c for c in w.concepts))
    )


def is_follow_up(question: str, words: list[Word]) -> bool:
    said = [w.text for w in words]
    text = " ".join(said)
    short = len([w for w in words if w.content and w.text not in GENERIC]) <= 2
    return bool(FOLLOW_UP_WORDS & set(said)) or text.startswith(FOLLOW_UP_OPENERS) or short
