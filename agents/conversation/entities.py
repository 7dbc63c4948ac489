"""The things a channel's facts are about: products, games, people and dishes by name, and the
other names viewers use for them (the persona's `aliases`). Retrieval keeps a question about one
thing from being answered by a fact about another."""

from __future__ import annotations

import re
from collections import Counter

from agents.conversation.lexicon import GENERIC, STOP, concepts_of, is_number, stem, tokens

CAPITALISED_RUN = re.compile(r"[A-Z][A-Za-z0-9'!-]*(?:\s+(?:[A-Z][A-Za-z0-9'!-]*|\d+))*")


def capitalised_tokens(text: str) -> set[str]:
    return {t for m in CAPITALISED_RUN.finditer(text) if m.start() > 0 for t in tokens(m.group(0))}


def entities_of(
    facts: list[str], names: list[str], aliases: dict[str, list[str]]
) -> tuple[dict[str, set[tuple[str, ...]]], dict[str, set[str]]]:
    """(entity -> the stem sequences that name it, stem -> entities it hints at).

    Names: the facts' proper names (runs of capitalised words; a capitalised first word only if it
    is one of `names` or capitalised elsewhere too), their distinctive single words ("trail" for
    "Trail Pro") and the configured aliases whole. Hints: the distinctive single words of aliases
    ("hiking" of "hiking boots"): common words ("running") name nothing for sure, so a hint ranks
    the entity's facts first but never rules the others out."""
    runs: list[str] = list(names)
    mid_sentence: set[str] = set()
    firsts: list[str] = []
    for fact in facts:
        for m in CAPITALISED_RUN.finditer(fact):
            run = m.group(0).strip()
            if m.start() > 0:
                mid_sentence.update(run.split())
                runs.append(run)
            elif len(run.split()) > 1:
                runs.append(run)
            else:
                firsts.append(run)
    runs += [w for w in firsts if w in mid_sentence]
    entities: dict[str, set[tuple[str, ...]]] = {}
    for run in runs:
        words = [w for w in tokens(run) if w not in STOP and not is_number(w) and not w.startswith("!")]
        if words and not all(w in GENERIC or concepts_of((stem(w),)) for w in words):
            entities.setdefault(" ".join(words), set()).add(tuple(stem(w) for w in words))
    _add_distinctive_words(entities, entities)
    alias_forms: dict[str, set[tuple[str, ...]]] = {}
    for name, others in aliases.items():
        key = " ".join(w for w in tokens(name) if w not in STOP)
        entities.setdefault(key, {tuple(stem(w) for w in key.split())})
        forms = {tuple(stem(w) for w in tokens(alias) if w not in STOP) for alias in others} - {()}
        entities[key] |= forms
        alias_forms[key] = forms
    hinted: dict[str, set[tuple[str, ...]]] = {name: set() for name in alias_forms}
    _add_distinctive_words({**entities, **{k: v for k, v in alias_forms.items()}}, hinted, only=alias_forms)
    hints: dict[str, set[str]] = {}
    for name, forms in hinted.items():
        for (word,) in forms:
            if (word,) not in {f for fs in entities.values() for f in fs}:
                hints.setdefault(word, set()).add(name)
    return entities, hints


def _add_distinctive_words(
    source: dict[str, set[tuple[str, ...]]],
    into: dict[str, set[tuple[str, ...]]],
    only: dict[str, set[tuple[str, ...]]] | None = None,
) -> None:
    """Add to `into` each word of `source`'s forms that only one entity uses (and that is no common
    or topic word), as a one-word form of that entity."""
    owners: Counter[str] = Counter(s for forms in source.values() for s in {s for f in forms for s in f})
    for name, forms in (only or source).items():
        for form in list(forms):
            for s in form:
                if owners[s] == 1 and s not in GENERIC and s not in STOP and not concepts_of((s,)) and len(s) > 2:
                    into.setdefault(name, set()).add((s,))
