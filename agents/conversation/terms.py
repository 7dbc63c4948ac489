"""A text's words with what they name (stems, concepts, entities), a fact's terms, and the shapes
of questions retrieval reads: what-questions, follow-ups, words that only say where or for what."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from agents.conversation.lexicon import GENERIC, NUMBER_WORDS, STOP, concepts_of, is_number, stem

CURRENT = 1.0
"""Extra score of the fact that says what today's thing is, per question word naming that thing
when the question asks what ("what's cooking?", "what's the dish of the day?": today's recipe) and
not about another time ("what's next week's game?")."""
WHAT = frozenset("what whats which".split())
"""Openers of a question asking what a thing is."""
NOW = frozenset("today tonight current now currently".split())
NOT_NOW = frozenset("next tomorrow yesterday last later upcoming previous before after".split())
PAST = frozenset("yesterday ago previous previously earlier".split())
TIME_NOUNS = frozenset(
    "week weekend month year time night stream show episode session monday tuesday wednesday thursday friday "
    "saturday sunday".split()
)
TIME_STEMS = frozenset(stem(w) for w in TIME_NOUNS)
CLOCK_QUESTIONS = ("what time", "what hour", "how late", "how early")
"""Questions whose answer is a time of day: a fact that names only the day does not answer them."""
_CLOCK = re.compile(
    r"\b(noon|midnight|morning|afternoon|evening|night|o'?clock)\b|\d\s*(am|pm)\b|\bat \d|\d:\d\d", re.I
)
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
    light: bool = False
    """Says no more than a common word: a light verb ("grab"), the viewer's own people ("my sister")."""
    widened: bool = False
    """Explained only by WordNet: known only if it points at the chosen fact."""
    aside: bool = False
    """In a clause beside the question ("..., it's for my sister's birthday"): it need not be answered."""
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
    plain: frozenset[str] = frozenset()
    """Concepts the fact names plainly: by a strong word, or a loose one after a number ("2 days";
    not "next week's")."""


PREPOSITIONS = frozenset("in into inside for with".split())
"""Before a word that need not be answered ("in the sauce"); not "on", "at": "do you deliver on Sundays?"
is about Sundays."""
DETERMINERS = frozenset("the a an my your our their his her its this that these those some".split())


def adjunct(words: list[Word], i: int) -> bool:
    """Word i only says where or for what ("how many tomatoes go in the sauce?", "... for the pasta in
    the pot"): the answer need not speak to it, unlike the thing asked about ("is the risotto vegan?")
    or what it comes in ("do they come in coral?")."""
    j = i - 1
    while j >= 0 and words[j].text in DETERMINERS:
        j -= 1
    return j > 0 and words[j].text in PREPOSITIONS and not (words[j].text == "in" and plainly_strong(words[i]))


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


WH_WORDS = frozenset("how hows when whens".split())
"""Openers of a question asking for an amount or a time (not "what flavour ...": a thing)."""


def asked(words: list[Word]) -> dict[int, set[str]]:
    """The words of the question's wh-phrase and the concepts they ask for ("how long": duration,
    "when": schedule or year): position -> concepts. A line that names none of them plainly does
    not answer, however common the concept ("how long does next week's risotto take?")."""
    out: dict[int, set[str]] = {}
    for i, w in enumerate(words):
        if w.text in WH_WORDS:
            for k in (i, i + 1):
                if k < len(words) and plainly_strong(words[k]):
                    out[k] = set(words[k].concepts)
    return out


def past_words(words: list[Word]) -> list[str]:
    """The words that put a question in the past ("last week's", "yesterday"): the facts speak of
    now and what is coming, so they do not answer it with today's line."""
    said = [w.stem for w in words]
    return [
        w.text if w.stem in PAST else f"last {words[i + 1].text}"
        for i, w in enumerate(words)
        if w.stem in PAST or (w.text == "last" and i + 1 < len(words) and said[i + 1] in TIME_STEMS)
    ]


MODALS = frozenset("can could should may might do does will would shall".split())
SUBJECTS = frozenset("i we you u she he they it".split())
OPENERS = frozenset("and so ok okay also but well oh hmm um".split())
ADVERBS = frozenset("just still also really actually even maybe ever".split())


def asked_verb(words: list[Word]) -> Word | None:
    """The verb a yes/no question asks about ("can I freeze the leftovers?": freeze), or None."""
    i = 0
    while i < len(words) and words[i].text in OPENERS:
        i += 1
    if i + 2 >= len(words) or words[i].text not in MODALS or words[i + 1].text not in SUBJECTS:
        return None
    i += 2
    while i < len(words) - 1 and words[i].text in ADVERBS:
        i += 1
    return words[i]


def tells_time(fact: str) -> bool:
    """It names a time of day ("6 to 8 in the evening", "at noon")."""
    return bool(_CLOCK.search(fact))


def is_follow_up(question: str, words: list[Word]) -> bool:
    said = [w.text for w in words]
    text = " ".join(said)
    short = len([w for w in words if w.content and w.text not in GENERIC]) <= 2
    return bool(FOLLOW_UP_WORDS & set(said)) or text.startswith(FOLLOW_UP_OPENERS) or short


def plainly_strong(w: Word) -> bool:
    """It names a concept plainly by itself ("when", "price"), not as the frame of a phrase
    ("in" of "put in", "do you" of "do you sell")."""
    return w.strong and (w.content or any(concepts_of((w.stem,)).values()))


def unexplained(w: Word, known_stems: frozenset[str]) -> bool:
    """A content word that neither the facts, the lexicon nor WordNet account for (yet)."""
    return (
        w.content
        and w.text not in GENERIC
        and w.stem not in GENERIC
        and not w.concepts
        and not w.entities
        and not w.hints
        and w.text not in NUMBER_WORDS
        and not w.in_phrase
        and w.stem not in known_stems
        and not w.widened
        and not w.light
    )


ASKS_PARTICULAR = frozenset("how hows when whens where wheres who whos why whose".split())


def only_names(words: list[Word]) -> bool:
    """It names things and asks nothing in particular about them ("tell me about the Trail Pro",
    "what's Star Raiders?"; not "who made Star Raiders?")."""
    frame = [w for w in words if not w.entities and not is_number(w.text)]
    return (
        bool(frame)
        and frame[0].text not in ASKS_PARTICULAR
        and all(w.text in STOP or w.text in GENERIC or w.text == "more" for w in frame)
        and not any(w.strong for w in frame)
    )
