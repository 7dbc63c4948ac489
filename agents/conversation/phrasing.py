"""Strict answers: the chosen fact lines in their own words, made conversational by fixed rules.

Nothing is paraphrased, so nothing can be paraphrased wrong: a short opener ("Sure!") that airs
first (a one-word sentence is synthesised at once while the fact is still being voiced), the
persona's own facts turned to the first person ("Nova is the host of ..." -> "I'm Nova, the host
of ..."), and a second line joined with "Also,".
"""

from __future__ import annotations

import re

OPENERS = ("Sure!", "Good question!", "Glad you asked!", "Great question!", "Okay!", "Here's the thing.")
"""Said before a fact, in turn (the same one every time sounds canned)."""


class Phraser:
    """Builds one channel's strict answers (it keeps its place in the opener rotation)."""

    def __init__(self, name: str, openers: tuple[str, ...] = OPENERS) -> None:
        self.name = name
        self.openers = openers
        self._turn = 0

    def answer(self, lines: list[str]) -> list[str]:
        """The sentences to say for `lines` (one or two facts), opener first."""
        sentences = [self.first_person(line) for line in lines]
        if len(sentences) > 1:
            sentences[1:] = [f"Also, {_lower_first(s)}" for s in sentences[1:]]
        opener = self.openers[self._turn % len(self.openers)] if self.openers else ""
        self._turn += 1
        return ([opener] if opener else []) + [_sentence(s) for s in sentences]

    def first_person(self, line: str) -> str:
        """A fact about the persona, as the persona says it."""
        name = re.escape(self.name)
        line = line.strip()
        if m := re.match(rf"^{name} is (the|a|an) (host|presenter|chef)\b(.*)$", line, re.IGNORECASE):
            return f"I'm {self.name}, {m.group(1).lower()} {m.group(2)}{m.group(3)}"
        if m := re.match(rf"^{name} hosts\b(.*)$", line, re.IGNORECASE):
            return f"I'm {self.name}, and I host{m.group(1)}"
        if m := re.match(rf"^{name} (is|has|was)\b(.*)$", line, re.IGNORECASE):
            verb = {"is": "I'm", "has": "I have", "was": "I was"}[m.group(1).lower()]
            return f"{verb}{m.group(2)}"
        if m := re.match(rf"^{name} (\w+?)(es|s)\b(.*)$", line, re.IGNORECASE):
            stem, suffix, rest = m.groups()
            verb = stem + ("e" if suffix == "es" and not stem.endswith(("sh", "ch", "ss", "x", "o")) else "")
            return f"I {verb.lower()}{rest}"
        return line


def _lower_first(sentence: str) -> str:
    """Lower-case the first letter unless the first word is a name or "I"."""
    first = sentence.split(" ", 1)[0]
    if first in ("I", "I'm") or (first[1:] != first[1:].lower()) or first.lower() not in _COMMON_STARTS:
        return sentence
    return sentence[0].lower() + sentence[1:]


_COMMON_STARTS = frozenset(
    "the a an sizes shipping returns standard today's tonight's next every viewers subscribers you for leftovers "
    "boil type our your this these there it its".split()
)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?…" else text + "."
