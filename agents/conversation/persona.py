"""Who the avatar is and what it knows: persona prompt, rolling memory, facts, answer cache.

A 135M-parameter model invents prices when left alone, so grounding is layered:
  1. the answer cache: a frequent question gets its stored answer, no LLM at all; a question
     that one fact plainly answers gets that fact;
  2. retrieval: only the few facts that share words with the question go into the prompt
     (a tiny model follows a short prompt better than a long one);
  3. the fact guard: a spoken clause that states a number the facts do not contain is
     replaced by the best-matching fact before it reaches TTS.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import yaml

_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_STOP = frozenset(
    "a an the is are was were be do does did what how much many which who whom whose when where why can could "
    "would should will shall i you we they he she it me my your our their of to in on for with and or at by from "
    "this that these those there here please tell about any some have has had get got".split()
)


def words(text: str) -> set[str]:
    """Content words of a text, lower-case (numbers kept whole: "3.50")."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def tokens_estimate(text: str) -> int:
    return len(text) // 4 + 1


@dataclass(frozen=True)
class CachedAnswer:
    question: str
    answer: str


class Knowledge:
    """Facts (one per line, '#' comments) and frequent questions with their answers."""

    def __init__(self, facts: list[str], answers: list[CachedAnswer]) -> None:
        self.facts = facts
        self.answers = answers
        self._fact_words = [words(f) for f in facts]
        self._answer_words = [words(a.question) for a in answers]

    @classmethod
    def load(cls, facts_file: Path | None, answers_file: Path | None) -> Knowledge:
        facts: list[str] = []
        if facts_file is not None:
            lines = facts_file.read_text().splitlines()
            facts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        answers: list[CachedAnswer] = []
        if answers_file is not None:
            data = yaml.safe_load(answers_file.read_text()) or []
            if not isinstance(data, list) or not all(isinstance(d, dict) and {"q", "a"} <= d.keys() for d in data):
                raise ValueError(f"{answers_file}: expected a list of {{q: question, a: answer}} entries")
            answers = [CachedAnswer(str(d["q"]), str(d["a"])) for d in data]
        return cls(facts, answers)

    def cached_answer(self, question: str, threshold: float = 0.6) -> str | None:
        """The stored answer of the closest frequent question, if it is close enough (Jaccard)."""
        q = words(question)
        best, best_score = None, 0.0
        for entry, ws in zip(self.answers, self._answer_words, strict=True):
            union = q | ws
            score = len(q & ws) / len(union) if union else 0.0
            if score > best_score:
                best, best_score = entry, score
        return best.answer if best is not None and best_score >= threshold else None

    def fact_answer(self, question: str, min_shared: int = 2) -> str | None:
        """The one fact that plainly answers a factual question (it shares `min_shared` content
        words with it, and more than any other fact does): said as it is, no LLM needed."""
        q = words(question)
        scores = sorted(((len(q & fw), i) for i, fw in enumerate(self._fact_words)), reverse=True)
        if not scores or scores[0][0] < min_shared or (len(scores) > 1 and scores[1][0] == scores[0][0]):
            return None
        return self.facts[scores[0][1]]

    def relevant_facts(self, question: str, k: int = 3) -> list[str]:
        q = words(question)
        scored = sorted(((len(q & fw), i) for i, fw in enumerate(self._fact_words)), key=lambda s: (-s[0], s[1]))
        return [self.facts[i] for score, i in scored[:k] if score > 0]

    def guard(self, clause: str, question: str) -> str | None:
        """`clause` if every number in it is in the facts, else the best fact (None: drop it)."""
        numbers = _NUMBER.findall(clause)
        known = {n for f in self.facts for n in _NUMBER.findall(f)}
        if not numbers or not self.facts or all(n in known for n in numbers):
            return clause
        facts = self.relevant_facts(question, k=1)
        return facts[0] if facts else None


class Memory:
    """The conversation so far, oldest first, within a token budget.

    Past the budget it is trimmed to half of it, not to just under it: dropping the oldest message
    changes the prompt right after the persona, so trimming at every exchange would make every prompt
    miss vLLM's prefix cache; in steps, the next few prompts each start as the last one did.
    """

    def __init__(self, budget_tokens: int) -> None:
        self.budget = budget_tokens
        self._turns: deque[dict[str, str]] = deque()

    def add(self, role: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self._turns.append({"role": role, "content": text})
        if self.tokens() > self.budget:
            while self._turns and self.tokens() > self.budget // 2:
                self._turns.popleft()

    def tokens(self) -> int:
        return sum(tokens_estimate(t["content"]) for t in self._turns)

    def messages(self) -> list[dict[str, str]]:
        return list(self._turns)

    def clear(self) -> None:
        self._turns.clear()


FACTS_INTRO = "Facts (use only these for names, prices and numbers; if they do not answer it, say you do not know):\n"


class Persona:
    def __init__(self, name: str, system_prompt: str, style: str, max_answer_words: int, knowledge: Knowledge):
        self.name = name
        self.system_prompt = system_prompt
        self.style = style
        self.max_answer_words = max_answer_words
        self.knowledge = knowledge

    def messages(self, question: str, memory: Memory) -> list[dict[str, str]]:
        """Chat messages for one answer. The viewer's words are user content, never instructions.

        The persona comes first and never changes, then the conversation, then the facts picked for
        this question: so one prompt starts as the last one did and vLLM's prefix cache skips
        recomputing it (half or more of the prompt on a CPU, where that is most of the first token).
        """
        system = [
            self.system_prompt.format(name=self.name),
            self.style,
            f"Answer in at most {self.max_answer_words} words, in plain spoken sentences.",
        ]
        facts = self.knowledge.relevant_facts(question)
        grounding = [{"role": "system", "content": FACTS_INTRO + "\n".join(f"- {f}" for f in facts)}] if facts else []
        return [
            {"role": "system", "content": "\n".join(s for s in system if s)},
            *memory.messages(),
            *grounding,
            {"role": "user", "content": question},
        ]

    @property
    def max_tokens(self) -> int:
        return int(self.max_answer_words * 1.6) + 8
