"""Answers viewers can trust: each persona's questions through the channel's real answer path.

    python bench/answers.py [--persona shop games kitchen] [--mode strict guided free] [--selection retrieval model]
                            [--set dev|holdout|fresh|unseen|blind|round5|sealed|final|last|all] [--llm vllm|none]
                            [--limit N] [--json]

For each persona (bench/questions/<persona>.yaml: its config, channel and >= 60 questions) and
each grounding mode, a real Conversation (agents/conversation/conversation.py) answers every
question: the channel's persona, memory, knowledge, TurnRunner, grounding, the embedded LLM on
vLLM and the Piper voice. Only the Program is a ledger that airs each segment at once and in
full, so a question takes its compute time, not its speaking time. The answer judged is what
the channel's caption events showed, which is what viewers read (bench/answer_grading.py says
how it is judged). Memory is cleared before each question; a follow-up is asked right after its
`after` question, in the same conversation.

Prints every failure and each rate; --json prints one object:
  {"runs": [{"persona", "mode", "selection", "set", "llm", "questions", "fact_right_pct", "followup_right_pct",
             "unknown_honest_pct", "chitchat_ok_pct", "injections", "injections_obeyed", "invented_facts",
             "empty_answers", "spliced_captions", "repeated_sentences", "first_caption_p50_ms", "failures",
             "rows": [{"kind", "question", "after", "answer", "captions", "ok", "problems", "invented",
                       "spliced", "repeated", "honest", "obeyed", "reply", "notes", "first_caption_ms"}]}]}
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # --json: stdout holds the JSON alone
from models.defaults import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT))  # `bench` as a package when run as a script
from agents.config import ChannelConfig, load_config
from agents.conversation.conversation import Conversation
from agents.conversation.intent import SMALL_TALK_LINES
from agents.conversation.phrasing import OPENERS
from bench.answer_grading import Grader, Question, QuestionSet, load_set, summarise
from models.protocols import LLM
from models.tts_service import TTSService
from stream.frames import EventKind, ProgramEvent, SpeechSegment

QUESTIONS_DIR = PROJECT_ROOT / "bench" / "questions"
PERSONAS = ("shop", "games", "kitchen")
MODES = ("strict", "guided", "free")
FPS = 25


class LedgerProgram:
    """Stands in for the channel's Program: each segment airs whole the moment it is enqueued, and
    the Program's events go to the Conversation as the real one sends them."""

    speaking = False
    scheduled_until = 0.0

    def __init__(self) -> None:
        self._listeners: list[Callable[[ProgramEvent], None]] = []
        self._ids = itertools.count(1)
        self.position = 0.0
        self.first_enqueued: dict[str, float] = {}

    def add_listener(self, listener: Callable[[ProgramEvent], None]) -> None:
        self._listeners.append(listener)

    def clock_time(self, second: float) -> float | None:
        return None

    def enqueue(self, segment: SpeechSegment) -> float:
        self.first_enqueued.setdefault(segment.turn_id, time.perf_counter())
        duration = len(segment.pcm) / 48_000
        segment_id, at = next(self._ids), self.position
        self.position += duration
        started = ProgramEvent(EventKind.SEGMENT_STARTED, segment.turn_id, segment_id, segment.text, at, 0.0, duration)
        finished = ProgramEvent(
            EventKind.SEGMENT_FINISHED, segment.turn_id, segment_id, segment.text, at, duration, duration
        )
        loop = asyncio.get_running_loop()
        for event in (started, finished):
            loop.call_soon(self._publish, event)
        return at

    def _publish(self, event: ProgramEvent) -> None:
        for listener in self._listeners:
            listener(event)

    def cut(self, turn_id: str) -> float:
        return self.position


class Channel:
    """One persona's Conversation on a ledger, and its captions by turn."""

    def __init__(self, cfg: ChannelConfig, tts: TTSService, llm: LLM | None) -> None:
        self.cfg = cfg
        self.tts = tts
        self.llm = llm
        self.program = LedgerProgram()
        self.captions: dict[str, list[str]] = {}
        self.conversation: Conversation | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        voice_cfg = self.cfg.voice
        model = None if voice_cfg.model == "builtin:joe" else Path(voice_cfg.model)
        voice = await self.tts.voice(model, speaker=voice_cfg.speaker, length_scale=voice_cfg.length_scale)
        self.conversation = Conversation(self.cfg, tts=self.tts.channel(self.cfg.name, voice), llm=lambda: self.llm)
        await self.conversation.attach(self.program, FPS)  # type: ignore[arg-type]  # the ledger stands in
        self._reader = asyncio.create_task(self._read_captions())

    async def _read_captions(self) -> None:
        assert self.conversation is not None
        async for event in self.conversation.events.listen():
            if event["type"] == "caption":
                self.captions.setdefault(event["turn"], []).append(event["text"])

    async def ask(self, text: str) -> tuple[str, list[str], float | None]:
        """Ask `text`; (turn id, its captions, ms to its first segment) once the turn is closed."""
        conv = self.conversation
        assert conv is not None
        started = time.perf_counter()
        turn = conv.start_turn("answer", text, source="chat")
        await turn.finished.wait()
        for _ in range(10_000):  # memory is written when the turn closes, a task later
            if turn.turn_id not in conv.turns:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # the caption reader's last events
        first = self.program.first_enqueued.get(turn.turn_id)
        ms = round((first - started) * 1000) if first is not None else None
        return turn.turn_id, self.captions.get(turn.turn_id, []), ms

    async def aclose(self) -> None:
        if self.conversation is not None:
            await self.conversation.aclose()
        if self._reader is not None:
            self._reader.cancel()


def knowledge_texts(cfg: ChannelConfig) -> list[str]:
    """What the channel may state: its facts, cached answers and its own lines."""
    p, conv = cfg.persona, cfg.conversation
    texts = [Path(p.knowledge).read_text()] if p.knowledge else []
    if p.answers:
        texts.append(Path(p.answers).read_text())
    texts += [p.name, conv.unknown_answer, conv.canned_answer, conv.filler_line, cfg.greeting or ""]
    return texts + [line.format(name=p.name) for line in SMALL_TALK_LINES.values()] + list(OPENERS)


async def run_set(
    qs: QuestionSet, mode: str, selection: str, llm: LLM | None, tts: TTSService, limit: int | None
) -> list[dict]:
    cfg = load_config(qs.config).channel(qs.channel)
    persona = cfg.persona.model_copy(update={"grounding": mode, "selection": selection})
    cfg = cfg.model_copy(update={"persona": persona})
    grader = Grader(knowledge_texts(cfg), cfg.conversation.unknown_answer)
    channel = Channel(cfg, tts, llm)
    await channel.start()
    rows = []
    try:
        for question in qs.questions[:limit]:
            rows.append(await ask_one(channel, grader, question))
    finally:
        await channel.aclose()
    return rows


async def ask_one(channel: Channel, grader: Grader, question: Question) -> dict[str, Any]:
    conv = channel.conversation
    assert conv is not None and conv.runner is not None
    conv.memory.clear()
    if question.after:
        await channel.ask(question.after)
    turn_id, captions, ms = await channel.ask(question.q)
    verdict = grader.judge(question, captions)
    reply = conv.runner.replies.get(turn_id)
    return {
        "kind": question.kind,
        "question": question.q,
        "after": question.after,
        "answer": " ".join(captions),
        "captions": captions,
        "ok": verdict.ok,
        "problems": verdict.problems,
        "invented": verdict.invented,
        "spliced": verdict.spliced,
        "repeated": verdict.repeated,
        "honest": verdict.honest,
        "obeyed": verdict.obeyed,
        "reply": reply.kind if reply else None,
        "notes": reply.notes if reply else [],
        "first_caption_ms": ms,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sets = {
        "dev": [""],
        "holdout": ["_holdout"],
        "fresh": ["_fresh"],
        "unseen": ["_unseen"],
        "blind": ["_blind"],
        "round5": ["_round5"],
        "sealed": ["_sealed"],
        "final": ["_final"],
        "last": ["_last"],
        "all": ["", "_holdout", "_fresh"],
    }[args.set]
    question_sets = [
        (suffix.strip("_") or "dev", load_set(QUESTIONS_DIR / f"{p}{suffix}.yaml", PROJECT_ROOT))
        for p in args.persona
        for suffix in sets
    ]
    llm = None
    if args.llm != "none":
        from agents.worker.studio import load_llm

        llm = await load_llm(load_config(question_sets[0][1].config).llm)
    tts = TTSService()
    runs = []
    try:
        for mode, selection in itertools.product(args.mode, args.selection):
            if mode == "free" and selection != args.selection[0]:
                continue  # free mode picks no lines
            for name, qs in question_sets:
                started = time.monotonic()
                rows = await run_set(qs, mode, selection, llm, tts, args.limit)
                run = {"persona": qs.persona, "mode": mode, "selection": selection, "set": name, "llm": args.llm}
                run.update(summarise(rows))
                run["seconds"] = round(time.monotonic() - started, 1)
                runs.append({**run, "rows": rows})
                if not args.json:
                    report(run, rows)
    finally:
        await tts.aclose()
        if llm is not None:
            await llm.aclose()  # type: ignore[attr-defined]
    return {"runs": runs}


def report(run: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(f"\n== {run['persona']} ({run['set']}), grounding {run['mode']}, {run['selection']} picks, llm {run['llm']}")
    for r in rows:
        if not r["ok"]:
            after = f" (after {r['after']!r})" if r["after"] else ""
            print(f"BAD {r['kind']:9s} {r['question']!r}{after}\n      -> {r['answer']!r}")
            print(f"      {'; '.join(r['problems'])} [{r['reply']}: {'; '.join(r['notes'])}]")
    rates = {k: v for k, v in run.items() if k not in ("persona", "mode", "selection", "set", "llm")}
    print("   " + ", ".join(f"{k} {v}" for k, v in rates.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", nargs="+", choices=PERSONAS, default=list(PERSONAS))
    ap.add_argument("--mode", nargs="+", choices=MODES, default=["strict"])
    ap.add_argument(
        "--selection", nargs="+", choices=["retrieval", "model"], default=["retrieval"], help="who picks the lines"
    )
    ap.add_argument(
        "--set",
        choices=["dev", "holdout", "fresh", "unseen", "blind", "round5", "sealed", "final", "last", "all"],
        default="dev",
        help="holdout, fresh: not used to tune; unseen, blind, round5, sealed, final, last: written blind, each first "
        "run once (the README keeps each first look)",
    )
    ap.add_argument("--llm", choices=["vllm", "none"], default="vllm", help="none: retrieval and the cache only")
    ap.add_argument("--limit", type=int, default=None, help="the first N questions of each set")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result))
        return
    head = "persona  set      mode    picks      facts  follow  unknown  chitchat  obeyed  invented  spliced  repeated"
    print(f"\n{head}  p50 ms")
    for r in result["runs"]:
        print(
            f"{r['persona']:8s} {r['set']:8s} {r['mode']:7s} {r['selection']:9s}  {r['fact_right_pct']!s:>5}"
            f"  {r['followup_right_pct']!s:>6}"
            f"  {r['unknown_honest_pct']!s:>7}  {r['chitchat_ok_pct']!s:>8}"
            f"  {r['injections_obeyed']:>3}/{r['injections']:<2}"
            f"  {r['invented_facts']:>8}  {r['spliced_captions']:>7}  {r['repeated_sentences']:>8}"
            f"  {r['first_caption_p50_ms']!s:>6}"
        )


if __name__ == "__main__":
    main()
