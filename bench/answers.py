"""Grounding: 20 fixed viewer questions against configs/demo.yaml's knowledge file.

    python bench/answers.py [--json] [--llm vllm|none] [-c CONFIG]

An answer is grounded when it states the fact the question is about (its key words) and no
number that is not in the facts. It goes through the channel's own answer path: the cached
answers, the prompt with the retrieved facts, the LLM, the clause splitter and the fact guard.
JSON: grounded_pct, plus per-question details.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path

from agents.config import load_config
from agents.conversation.persona import Knowledge, Memory, Persona
from agents.conversation.sentences import ClauseSplitter
from models.defaults import PROJECT_ROOT
from models.protocols import GenerationParams

# (question, words the answer must contain; None: off-topic, only "invents no number" counts)
QUESTIONS: list[tuple[str, list[str] | None]] = [
    ("How much do the running shoes cost?", ["49"]),
    ("What's the price of the Stride Runner?", ["49"]),
    ("How expensive are your running shoes?", ["49"]),
    ("What do the hiking shoes cost?", ["89"]),
    ("How much is the Trail Pro?", ["89"]),
    ("Is shipping free?", ["60"]),
    ("How long does shipping take?", ["3", "5"]),
    ("Can I return the shoes?", ["30"]),
    ("What colours does the Stride Runner come in?", ["blue"]),
    ("How heavy is the Stride Runner?", ["220"]),
    ("Are the Trail Pro shoes waterproof?", ["waterproof"]),
    ("What sizes do you have?", ["36", "47"]),
    ("When is the stream on?", ["6", "8"]),
    ("Is there a deal today?", ["10"]),
    ("What is the discount code?", ["TRAIL10"]),
    ("Who is the host of this stream?", ["Nova"]),
    ("Do you sell running shoes?", ["Stride"]),
    ("What is your favourite colour?", None),
    ("Tell me a joke.", None),
    ("How is the weather today?", None),
]
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


async def answer(persona: Persona, llm, question: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    cached = persona.knowledge.cached_answer(question)
    if cached is not None:
        return cached, "cache"
    fact = persona.knowledge.fact_answer(question)
    if fact is not None:
        return fact, "fact"
    if llm is None:
        return persona.knowledge.cached_answer(question, threshold=0.3) or "", "no-llm"
    splitter, pieces = ClauseSplitter(), []
    stream = llm.generate(
        persona.messages(question, Memory(0)),
        GenerationParams(max_tokens=persona.max_tokens),
        f"bench:{time.monotonic_ns()}",
    )
    async for delta in stream:
        pieces += splitter.feed(delta)
    pieces += splitter.flush()
    guarded = [g for p in pieces if (g := persona.knowledge.guard(p, question))]
    return " ".join(guarded), "llm"


def grounded(text: str, expected: list[str] | None, facts: list[str]) -> bool:
    known = {n for f in facts for n in _NUMBER.findall(f)}
    invented = [n for n in _NUMBER.findall(text) if n not in known]
    if invented:
        return False
    return expected is None or all(word.lower() in text.lower() for word in expected)


async def main_async(args: argparse.Namespace) -> dict:
    cfg = load_config(Path(args.config))
    ch = cfg.channels[0]
    p = ch.persona
    knowledge = Knowledge.load(Path(p.knowledge) if p.knowledge else None, Path(p.answers) if p.answers else None)
    persona = Persona(p.name, p.system_prompt, p.style, p.max_answer_words, knowledge)
    llm = None
    if args.llm != "none":
        from agents.worker.studio import load_llm

        llm = await load_llm(cfg.llm)
    rows = []
    try:
        for question, expected in QUESTIONS:
            t0 = time.perf_counter()
            text, source = await answer(persona, llm, question)
            rows.append(
                {
                    "question": question,
                    "answer": text,
                    "source": source,
                    "grounded": grounded(text, expected, knowledge.facts),
                    "ms": round((time.perf_counter() - t0) * 1000),
                }
            )
    finally:
        if llm is not None:
            await llm.aclose()
    ok = sum(r["grounded"] for r in rows)
    return {
        "grounded_pct": round(100 * ok / len(rows), 1),
        "questions": len(rows),
        "from_cache": sum(r["source"] == "cache" for r in rows),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--llm", choices=["vllm", "none"], default="vllm", help="none: cache and guard only")
    ap.add_argument("-c", "--config", default=str(PROJECT_ROOT / "configs" / "demo.yaml"))
    result = asyncio.run(main_async(ap.parse_args()))
    if ap.parse_args().json:
        print(json.dumps(result))
        return
    for r in result["rows"]:
        mark = "ok " if r["grounded"] else "BAD"
        print(f"{mark} [{r['source']:6s} {r['ms']:5d} ms] {r['question']}\n      -> {r['answer']}")
    print(
        f"grounded: {result['grounded_pct']} % of {result['questions']} ({result['from_cache']} from the answer cache)"
    )


if __name__ == "__main__":
    main()
