"""Does a sentence the model wrote claim anything its facts do not say?

A model that phrases an answer from chosen fact lines may still add a number ("10 euros"), a
product ("the Cloud Runner"), a policy ("shipping is free") or flip one ("No, you cannot send the
shoes back"). Each of those is a claim a viewer may act on, so a sentence is accepted only when
every number, name, policy word and negation in it also appears in the lines it was given; any
other wording is the model's own and harmless. Numbers are compared as whole tokens ("5" is not
in "15"), spelled-out numbers as digits.
"""

from __future__ import annotations

import re

from agents.conversation.lexicon import CONCEPTS, is_number, number_value, stem, tokens
from agents.conversation.lexicon import NUMBER_WORDS as LEXICON_NUMBERS

NUMBER_WORDS = {word: digits for word, digits in LEXICON_NUMBERS.items() if word != "one"}
"""Spelled-out numbers a claim may use ("one" is left out: "the one you like" claims no number)."""
POLICY_CONCEPTS = ("price", "discount", "return", "shipping", "water", "diet", "prize", "tournament", "size", "weight")
"""Concepts whose words make a promise (what it costs, what is free, what is allowed)."""
EXTRA_POLICY_WORDS = (
    "free", "warranty", "guarantee", "guaranteed", "allowed", "banned", "cancel", "cancelled", "canceled", "closed",
    "sold", "stock", "limited", "only", "always", "every", "all", "forever", "worldwide", "included", "includes",
    "scam", "fake", "cheat", "cheats", "poison", "dangerous", "unsafe", "raw", "sponsor", "sponsored", "giveaway",
)  # fmt: skip
NEGATIONS = frozenset(
    "no not never cannot cant can't dont don't doesnt doesn't wont won't isnt isn't arent aren't none".split()
)
_POLICY = frozenset(
    stem(w) for c in POLICY_CONCEPTS for phrase in CONCEPTS[c] for w in tokens(phrase.lstrip("~")) if " " not in phrase
) | frozenset(stem(w) for w in EXTRA_POLICY_WORDS)
_CAPITALISED = re.compile(r"\b[A-Z][a-zA-Z0-9'-]*")


def numbers_in(text: str) -> set[str]:
    """Whole numbers and decimals of `text` ("48,200" as "48200"), spelled-out ones as digits."""
    found = set()
    for t in tokens(text):
        if is_number(t):
            found.add(number_value(t))
        elif t in NUMBER_WORDS:
            found.add(NUMBER_WORDS[t])
    return found


def unsupported(
    sentence: str, lines: list[str], *, names: list[str] = (), known_names: set[str] = frozenset()
) -> list[str]:
    """What `sentence` claims that `lines` do not: numbers, names, policy words, negations.

    `names`: the persona's own names (always allowed); `known_names`: every name the channel's
    facts use (one of them in the sentence but not in `lines` is a claim about something else)."""
    allowed_text = " ".join(lines)
    allowed_tokens = set(tokens(allowed_text))
    allowed_stems = {stem(t) for t in allowed_tokens}
    problems = [f"number {n}" for n in sorted(numbers_in(sentence) - numbers_in(allowed_text))]
    own = {n.lower() for n in names} | {"i", "i'm", "im"}
    for word in mid_sentence_capitals(sentence):
        if word.lower() not in own and word.lower().removesuffix("'s") not in allowed_tokens:
            problems.append(f"name {word}")
    lowered = " ".join(tokens(sentence))
    for name in known_names:
        if re.search(rf"\b{re.escape(name)}\b", lowered) and name not in " ".join(tokens(allowed_text)):
            problems.append(f"name {name}")
    said = tokens(sentence)
    for t in said:
        s = stem(t)
        if s in _POLICY and s not in allowed_stems and t not in allowed_tokens:
            problems.append(f"policy word {t}")
        if t in NEGATIONS and t not in allowed_tokens:
            problems.append(f"negation {t}")
    return list(dict.fromkeys(problems))


def mid_sentence_capitals(text: str) -> list[str]:
    """Capitalised words that do not start a sentence: names ("the Cloud Runner")."""
    out = []
    for m in _CAPITALISED.finditer(text):
        before = text[: m.start()].rstrip(" \"'“‘(")
        word = m.group(0)
        if before and before[-1] not in ".!?:;…" and word != "I" and not word.startswith("I'"):
            out.append(word)
    return out


def unknown_numbers(sentence: str, facts: list[str]) -> set[str]:
    """Numbers in `sentence` that no fact holds (free mode's guard)."""
    known = set().union(*(numbers_in(f) for f in facts)) if facts else set()
    return numbers_in(sentence) - known
