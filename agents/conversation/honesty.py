"""Whether the lines retrieval chose answer the question, or what the facts do not know.

Retrieval (agents/conversation/retrieval.py) picks the lines that share most with a question;
this module says "I don't know" when they only seem to. The facts are silent when:
  * the question is about the past ("what was last week's code?"): the facts speak of now and
    what is coming;
  * it asks at what time, and the lines name only a day ("what time does the Saturday tournament
    start?");
  * it names something the facts do not know: a capitalised name ("Canada", "Zelda"), a name typed
    in lower case (no English word: "youtube"), or the very verb a yes/no question asks about
    ("can I freeze the leftovers?"); a remark beside the question ("... ? I am in New York") need
    not be known, unless the question points at it ("do you ship there? I live in Canada");
  * any other word neither the facts nor the lexicon know ("socks", "calories"), unless at least
    two of the question's words plainly point at the chosen lines ("If I spend 70 dollars, is
    postage included?"). A word known only through WordNet counts as known when it points at a
    chosen line by more than the question's other words say ("the damage for the Trail Pro": a
    price; not "express" in "express shipping").
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from agents.conversation.lexicon import GENERIC
from agents.conversation.terms import (
    CLOCK_QUESTIONS,
    FactTerms,
    Word,
    asked_verb,
    past_words,
    plainly_strong,
    tells_time,
    unexplained,
)

if TYPE_CHECKING:
    from agents.conversation.retrieval import Candidate, FactIndex


def why_unanswered(index: FactIndex, words: list[Word], chosen: list[Candidate], borrowed: list[Word]) -> str:
    """Why the `chosen` lines do not answer the question `words` ("" when they do); `borrowed`:
    the words of the exchange before a follow-up."""
    lines = [c.fact for c in chosen]
    past = past_words(words)
    if past and not any(past_words(index.words(line)) for line in lines):
        return f"the facts say nothing about {' '.join(past)!r}"
    said = " ".join(w.text for w in words)
    if any(q in said for q in CLOCK_QUESTIONS) and not any(tells_time(line) for line in lines):
        return "no fact says at what time"
    facts = [index.terms[c.index] for c in chosen]
    chosen_names = {e for f in facts for e in f.entities}
    borrowed_names = {e for w in borrowed for e in w.entities} & chosen_names  # "how much is it?"
    pointing = _pointing(words, facts) + bool(borrowed_names)
    there = any(w.text in ("there", "here") and not w.aside for w in words)  # "ship there? I live in Canada"
    unknown = [
        w
        for w in words
        if (unexplained(w, index.known_stems) or (w.widened and not (pointing and _explains(index, w, facts, words))))
        and not (w.aside and not (there and (w.capitalised or _name_like(index, w))))  # "... I'm in New York"
    ]
    asked = asked_verb(words)
    if asked is not None and asked in unknown:  # "can I freeze the leftovers?"
        return f"the facts do not know {asked.text!r}"
    names = [w.text for w in unknown if w.capitalised or _name_like(index, w)]
    if names:
        return f"the facts do not know {', '.join(names)!r}"
    if unknown and pointing < 2:
        return f"the facts do not know {', '.join(w.text for w in unknown)!r}"
    return ""


def _explains(index: FactIndex, w: Word, facts: list[FactTerms], words: list[Word]) -> bool:
    """A word explained only by WordNet is known when it points at a chosen fact (which another
    of the question's words must name plainly: "the Saturday event", "the damage for the Trail Pro"),
    by more than the others say ("express" is a kind of mail, but "express shipping" is not
    answered by what the facts say of shipping)."""
    named = {c for x in words if x is not w for c, strong in x.concepts.items() if strong}
    own = replace(w, concepts={c: s for c, s in w.concepts.items() if c not in named})
    return any(index.gain(own, f) > 0 for f in facts)


def _name_like(index: FactIndex, w: Word) -> bool:
    """A word that is no English word, nor a fact word shortened: a name typed in lower case
    ("youtube"), which the facts do not know."""
    return w.widened and not w.kin and index.wordnet is not None and not index.wordnet.is_english(w.text)


def _pointing(words: list[Word], facts: list[FactTerms]) -> int:
    """How many of the question's words plainly point at the chosen facts (a phrase's frame
    words, "do you" in "do you sell", do not count; "when" does; a name of two words counts once)."""
    plain = [w for w in words if w.entities or w.hints or plainly_strong(w) or (w.content and w.text not in GENERIC)]
    pointing = [w for w in plain if any(_points_at(w, f) for f in facts)]
    names = {frozenset(w.entities | w.hints) for w in pointing if w.entities or w.hints}
    return len([w for w in pointing if not (w.entities or w.hints)]) + len(names)  # "Star Raiders" is one


def _points_at(w: Word, fact: FactTerms) -> bool:
    """Plain evidence: a concept named strongly, the very word, or a name of the fact."""
    if (w.entities | w.hints) & fact.entities:
        return True
    if w.content and w.text not in GENERIC and w.stem in fact.stems:
        return True
    return any(strong and c in fact.concepts for c, strong in w.concepts.items())
