"""Which of the channel's facts answer a question, or that none does: ranking and answerability.

Every fact and every question word is reduced to terms (agents/conversation/lexicon.py): its stem,
the concepts it names (@price, @return ...) and the entities of the facts it names ("Stride Runner",
"Star Raiders", or an alias such as "hiking shoes"). A fact is eligible when it shares something
the question asks about (a concept or a content word, not only a name) and names no other thing
than the one asked about ("is the Stride Runner waterproof?" is not answered by "The Trail Pro
hiking shoes are waterproof").

Whether the chosen lines answer the question, or what the facts do not know, is
agents/conversation/honesty.py's to say. A word the lexicon lacks is widened, as weak evidence
(agents/conversation/wordnet.py): the concepts of what names its meanings ("the damage": a
price), the fact word it abbreviates ("sub"), or a fact's thing it is a kind of ("the Saturday
event": the tournament). A question asking what something is ("what's cooking?") prefers the fact
saying what today's is ("Today's recipe is ..."); one that only names a thing ("tell me about
the Trail Pro") gets what the facts say of it.
A follow-up ("how heavy are they?") borrows the names, and weakly the topics, of the exchange
before it: that is all the memory retrieval needs.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from agents.conversation.entities import capitalised_tokens, entities_of
from agents.conversation.honesty import why_unanswered
from agents.conversation.intent import clauses
from agents.conversation.lexicon import (
    GENERIC,
    IDIOMS,
    LONGEST_PHRASE,
    NUMBER_WORDS,
    QUANTITY_QUESTIONS,
    broader_stems,
    concepts_of,
    is_light_verb,
    is_number,
    is_own,
    meaning_terms,
    number_value,
    stem,
    tokens,
)
from agents.conversation.terms import (
    CURRENT,
    NOT_NOW,
    WHAT,
    FactTerms,
    Word,
    adjunct,
    asked,
    current_subject,
    is_follow_up,
    names_current,
    only_names,
    plainly_strong,
    unexplained,
)
from agents.conversation.wordnet import open_wordnet

IDIOM_STEMS = {tuple(stem(t) for t in tokens(phrase)): named for phrase, named in IDIOMS.items()}
MAX_LINES = 2
"""Facts one answer may combine ("can I send them back if they don't fit?": returns and sizes)."""
WEAK = 0.4
"""Weight of a word that names a concept only loosely ("how much")."""
CONTEXT = 0.5
"""Weight of the exchange before a follow-up."""
NO_NUMBER = 0.5
"""Score factor of a fact that states no number, for a question that asks how many, much, long ..."""
TWO_PARTS = frozenset({"and", "or", "if", "also", "plus"})
"""Words that make a question two questions ("can I send them back if they don't fit?"): only then
may one answer combine two facts (else "is the risotto vegan?" gets the pasta's vegan line too)."""
GENERIC_WEIGHT = 0.3
"""Weight of a common word ("chat", "pair") that the fact uses too."""
DENSITY = 0.15
"""Extra weight of a concept per further word of the fact that names it."""
PHRASE_GAP = 2
"""Words allowed inside a two-word phrase: "send the shoes back" is "send back"."""


@dataclass(frozen=True)
class Candidate:
    index: int
    fact: str
    score: float
    covers: frozenset[int]
    """Positions of the question's topic words this fact covers."""


@dataclass(frozen=True)
class Ranking:
    """Retrieval's verdict on one question."""

    candidates: list[Candidate]
    """Eligible facts, best first."""
    chosen: list[Candidate]
    """The lines that answer it (at most MAX_LINES), or [] when the facts do not say."""
    why_none: str = ""


class FactIndex:
    """Facts (one sentence each) indexed for ranking against viewers' questions."""

    def __init__(
        self,
        facts: list[str],
        *,
        names: list[str] | tuple[str, ...] = (),
        aliases: dict[str, list[str]] | None = None,
        wordnet: bool = True,
    ) -> None:
        """`names`: the persona's own names (always entities); `aliases`: entity -> other names
        viewers use for it ({"Trail Pro": ["hiking shoes", "hikers"]}); `wordnet`: widen words
        with WordNet's synonyms and kinds where its files are installed."""
        self.facts = list(facts)
        self.wordnet = open_wordnet() if wordnet else None
        self.entities, self._hints = entities_of(self.facts, list(names), aliases or {})
        self._entity_phrases: dict[tuple[str, ...], set[str]] = {}
        for name, forms in self.entities.items():
            for form in forms:
                self._entity_phrases.setdefault(form, set()).add(name)
        self._longest_name = max((len(form) for form in self._entity_phrases), default=1)
        self._entity_stems = frozenset(s for forms in self.entities.values() for form in forms for s in form)
        self.terms = [self._fact_terms(f) for f in self.facts]
        n = len(self.facts)
        df: Counter[str] = Counter()
        for t in self.terms:
            df.update(
                t.stems | {"@" + c for c in t.concepts} | {"#" + e for e in t.entities} | {"^" + b for b in t.broader}
            )
        self._df = df
        self._idf = {term: math.log((n + 1) / (count + 0.5)) for term, count in df.items()}
        self.known_stems = frozenset().union(*(t.stems for t in self.terms))

    # ------------------------------------------------------------------ terms
    def words(self, text: str) -> list[Word]:
        """`text`'s words with their stems, concepts (phrases spread over their words) and entities."""
        raw = tokens(text)
        stems = [stem(t) for t in raw]
        capitalised = capitalised_tokens(text)
        words = [
            Word(t, s, dict(concepts_of((s,))), set(), capitalised=t in capitalised and i > 0)
            for i, (t, s) in enumerate(zip(raw, stems, strict=True))
        ]
        for n in range(2, max(LONGEST_PHRASE, self._longest_name) + 1):
            for i in range(len(stems) - n + 1):
                key = tuple(stems[i : i + n])
                self._mark_phrase(words, list(range(i, i + n)), key)
        for i in range(len(stems)):  # "send the shoes back"
            for gap in range(1, PHRASE_GAP + 1):
                j = i + gap + 1
                if j < len(stems):
                    self._mark_phrase(words, [i, j], (stems[i], stems[j]), concepts_only=True)
        for phrase, named in IDIOM_STEMS.items():
            for i in range(len(stems) - len(phrase) + 1):
                if tuple(stems[i : i + len(phrase)]) == phrase:
                    for w in words[i : i + len(phrase)]:
                        w.concepts = {c.lstrip("~"): not c.startswith("~") for c in named}
                        w.in_phrase = True
        for w in words:
            w.entities |= self._entity_phrases.get((w.stem,), set())
            if not w.entities:
                w.hints |= self._hints.get(w.stem, set())
        return words

    def _mark_phrase(self, words: list[Word], at: list[int], key: tuple[str, ...], concepts_only: bool = False) -> None:
        named = concepts_of(key)
        entities = set() if concepts_only else self._entity_phrases.get(key, set())
        if not named and not entities:
            return
        for k in at:
            w = words[k]
            w.in_phrase = True
            for concept, strong in named.items():
                w.concepts[concept] = w.concepts.get(concept, False) or strong
            w.entities |= entities

    def _fact_terms(self, fact: str) -> FactTerms:
        words = self.words(fact)
        named: Counter[str] = Counter(c for w in words for c in w.concepts)
        named.update("year" for w in words if re.fullmatch(r"1[89]\d\d|20\d\d", w.text))  # "a shooter from 1979"
        return FactTerms(
            frozenset(w.stem for w in words if w.content),
            named,
            frozenset(e for w in words for e in w.entities),
            frozenset(
                number_value(w.text) if is_number(w.text) else NUMBER_WORDS[w.text]
                for w in words
                if is_number(w.text) or w.text in NUMBER_WORDS
            ),
            frozenset(
                b
                for w in words
                if self.wordnet and w.content and w.text not in GENERIC and not w.entities
                for b in broader_stems(w.text, self.wordnet)
            ),
            current_subject(words),
            frozenset(
                c
                for i, w in enumerate(words)
                for c, strong in w.concepts.items()
                if strong or (i > 0 and is_number(words[i - 1].text))
            )
            | ({"year"} & set(named)),
        )

    # ------------------------------------------------------------------ ranking
    def rank(self, question: str, context: str = "") -> Ranking:
        """Eligible facts for `question`, and the lines that answer it (or none, and why).
        `context`: the exchange before it (the last question and answer heard), for follow-ups."""
        words = self.words(question)
        for w in words:  # in the phrase "how much time", "how much" is a duration, not maybe a price
            if w.strong and not any(concepts_of((w.stem,)).values()):
                w.concepts = {c: True for c, strong in w.concepts.items() if strong}
        self._widen(words)
        _mark_asides(question, words)
        entities = {e for w in words for e in w.entities}
        borrowed: list[Word] = []
        if context and not entities and is_follow_up(question, words):
            borrowed = self.words(context)
            before = {c for named in asked(borrowed).values() for c in named}  # the new question asks its own
            for w in borrowed:
                w.concepts = {c: strong for c, strong in w.concepts.items() if c not in before}
            hinted = {e for w in words for e in w.hints}  # "and the hiking ones?": not the runners before
            entities = hinted or {e for w in borrowed for e in w.entities}
        topics = [i for i, w in enumerate(words) if self._is_topic(w) and not adjunct(words, i) and not w.aside]
        asks = {i: named for i, named in asked(words).items() if not words[i].aside}
        topics = sorted(set(topics) | set(asks))
        said = " ".join(w.text for w in words)
        quantity = any(q in said for q in QUANTITY_QUESTIONS)
        asks_what = bool(words) and words[0].text in WHAT and not NOT_NOW & {w.stem for w in words}
        own = {i: sum(self.gain(w, fact) for w in words) for i, fact in enumerate(self.terms)}
        elliptic = not any(own.values())  # "which shoe is it for?": only the exchange before says what
        candidates = []
        for index, fact in enumerate(self.terms):
            if entities and fact.entities and not (entities & fact.entities):
                continue  # about another product / game / person than the one asked about
            if own[index] <= 0 and not (elliptic and borrowed):
                continue  # shares at most a name: "what's the warranty on the Trail Pro?"
            covers = {i for i in topics if self.gain(words[i], fact) > 0 and (i not in asks or asks[i] & fact.plain)}
            score = own[index] + CONTEXT * sum(self.gain(w, fact) for w in borrowed)
            if score <= 0:
                continue
            if fact.current and asks_what:
                score += CURRENT * sum(1 for w in words if names_current(w, fact))
            if quantity and not fact.numbers:
                score *= NO_NUMBER  # "how many games do you own?" wants the fact with the count
            score += sum(self._idf.get("#" + e, 0.1) for e in entities & fact.entities)
            hinted = {e for w in words for e in w.hints} - entities
            score += WEAK * sum(self._idf.get("#" + e, 0.1) for e in hinted & fact.entities)
            candidates.append(Candidate(index, self.facts[index], score, frozenset(covers)))
        candidates.sort(key=lambda c: (-len(c.covers), -c.score, c.index))
        if not candidates and entities and not borrowed and only_names(words):
            about = [  # "tell me about the Trail Pro": what the facts say of it
                Candidate(i, self.facts[i], 1.0, frozenset()) for i, t in enumerate(self.terms) if entities & t.entities
            ][:MAX_LINES]
            return Ranking(about, about)
        if not candidates:
            return Ranking([], [], "no fact shares what the question asks about")
        chosen = [candidates[0]]
        missing = set(topics) - chosen[0].covers
        if missing and TWO_PARTS & {w.text for w in words} | ({","} & set(question)):
            extra = [c for c in candidates[1:] if c.covers & missing]
            if extra:
                chosen.append(max(extra, key=lambda c: (len(c.covers & missing), c.score)))
                missing -= chosen[-1].covers
        if len(entities) > 1 and TWO_PARTS & {w.text for w in words}:  # "the runners and the hikers?"
            for name in sorted(entities - {e for c in chosen for e in self.terms[c.index].entities}):
                theirs = [
                    c for c in candidates if name in self.terms[c.index].entities and c.covers >= chosen[0].covers
                ]
                if theirs and len(chosen) < MAX_LINES:
                    chosen.append(theirs[0])
        if quantity and TWO_PARTS & {w.text for w in words} and not any(self.terms[c.index].numbers for c in chosen):
            counted = [c for c in candidates if self.terms[c.index].numbers and c not in chosen]
            if counted and len(chosen) < MAX_LINES:  # "how much are they and are they waterproof?"
                chosen.append(max(counted, key=lambda c: c.score))
        if missing:
            said = ", ".join(words[i].text for i in sorted(missing))
            return Ranking(candidates, [], f"no fact says anything about {said!r}")
        why = why_unanswered(self, words, chosen, borrowed)
        if why:
            return Ranking(candidates, [], why)
        return Ranking(candidates, chosen)

    def _widen(self, words: list[Word]) -> None:
        """Give each question word that nothing else explains the concepts and the facts' words
        that name its meanings, as weak evidence ("what's the damage?": a price), or the fact word
        it abbreviates; mark light verbs and the viewer's own people ("grab", "my sister")."""
        for i, w in enumerate(words):
            if unexplained(w, self.known_stems) and self.wordnet is not None:
                own = i > 0 and words[i - 1].text in ("my", "our") and is_own(w.text, self.wordnet)
                w.light = own or is_light_verb(w.text, self.wordnet)
            if unexplained(w, self.known_stems):
                w.kin = self._abbreviated(w.stem)
                if self.wordnet is not None:
                    concepts, stems = meaning_terms(w.text, self.wordnet)
                    w.concepts.update((c, False) for c in concepts if c not in w.concepts)
                    w.kin |= stems & self.known_stems
                w.widened = True

    def _abbreviated(self, word: str) -> set[str]:
        """The one fact word that `word` shortens, as chat does ("sub": subscribers, "mins": minutes)."""
        if len(word) < 3:
            return set()
        longer = {s for s in self.known_stems if s.startswith(word.rstrip("s")) and len(s) > len(word)}
        return longer if len(longer) == 1 else set()

    def gain(self, w: Word, fact: FactTerms) -> float:
        """What word `w` of a question adds to `fact`'s score (0: nothing in common): the best of
        the concepts they share (more so when the fact names it several times: "Tuesday and Thursday
        from 8 to 10 at night" answers "when?" better than "tonight's game"), plus half the weight
        of the very word, when the fact uses it."""
        gain = 0.0
        for concept, strong in w.concepts.items():
            if concept in fact.concepts:
                density = 1 + DENSITY * (fact.concepts[concept] - 1)
                gain = max(gain, (1.0 if strong else WEAK) * self._idf.get("@" + concept, 0.1) * density)
        if w.content and w.stem in fact.stems and w.stem not in self._entity_stems:
            plain = GENERIC_WEIGHT if w.text in GENERIC else 1.0 if w.strong or not w.concepts else WEAK
            gain += plain * self._idf.get(w.stem, 0.1) * (0.5 if gain else 1.0)
        if not gain and w.kin & fact.stems:
            gain = WEAK * max(self._idf.get(s, 0.1) for s in w.kin & fact.stems)
        if not gain and w.content and w.stem in fact.broader:  # "event": the tournament
            gain = WEAK * self._idf.get("^" + w.stem, 0.1)
        return gain

    def _is_topic(self, w: Word) -> bool:
        """A word the answer must speak to: it names a concept plainly, or it is a content word
        that the facts use (and not a name: names are matched as entities)."""
        if w.entities or w.hints:
            return False
        if w.strong:  # unless every fact talks about it ("pasta" on a pasta stream)
            rare = len(self.facts) / 3
            return plainly_strong(w) and any(s and self._df.get("@" + c, 0) <= rare for c, s in w.concepts.items())
        specific = 0 < self._df.get(w.stem, 0) <= max(2, len(self.facts) // 6)  # not "shoes" in a shoe shop
        return w.content and w.text not in GENERIC and specific and not w.concepts


def _mark_asides(question: str, words: list[Word]) -> None:
    """Mark the words of the clauses that ask nothing beside those that do ("which shop is this? saw
    it on my feed"): the facts need not know them."""
    parts = clauses(question)
    if all(asking for _, asking in parts) or not any(asking for _, asking in parts):
        return
    flags = [asking for clause, asking in parts for _ in tokens(clause)]
    if len(flags) == len(words):
        for w, asking in zip(words, flags, strict=True):
            w.aside = not asking
