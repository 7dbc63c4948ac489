"""What airs of a model's answer: whole, checked sentences, each once.

Captions spliced mid-sentence ("The smallest size you Today's deal: 10 percent off ...") came from
checking clauses: the first clause aired early, the rest of its sentence was then replaced by a
fact. The model here is scripted to say exactly that kind of answer (the 135M model does, but at
random); the TTS is the real embedded Piper voice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents.conversation.answer import PrerenderedLines, TurnRunner
from agents.conversation.persona import Knowledge, Memory, Persona
from agents.conversation.turns import TurnHandle
from models.defaults import PROJECT_ROOT
from models.protocols import GenerationParams
from models.tts_piper import PiperTTS
from stream.frames import SpeechSegment

SHOP = PROJECT_ROOT / "configs" / "knowledge" / "shop.txt"


class ScriptedLLM:
    """An LLM that streams a fixed reply in small deltas, whatever it is asked (a test double for
    answers the real small model gives only now and then). `asked` records the requests."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.asked: list[GenerationParams] = []

    def generate(
        self, messages: list[dict[str, str]], params: GenerationParams, request_id: str, priority: int = 0
    ) -> AsyncIterator[str]:
        self.asked.append(params)
        return self._stream(params)

    async def _stream(self, params: GenerationParams) -> AsyncIterator[str]:
        if params.choice is not None:  # the strict selection: retrieval's first line
            yield params.choice[0]
            return
        for i in range(0, len(self.reply), 7):
            yield self.reply[i : i + 7]


@pytest.fixture(scope="module")
def voice() -> PiperTTS:
    return PiperTTS.load(None, speaker=None, length_scale=None)


async def answer(voice: PiperTTS, grounding: str, question: str, reply: str) -> tuple[TurnHandle, list[str]]:
    persona = Persona("Nova", "You are {name}.", "", 35, Knowledge.load(SHOP, None, names=("Nova",)))
    aired: list[SpeechSegment] = []
    runner = TurnRunner(
        name="test",
        tts=voice,
        llm=ScriptedLLM(reply),  # type: ignore[arg-type]  # the LLM protocol, scripted
        persona=persona,
        memory=Memory(160),
        lines=PrerenderedLines(),
        enqueue=aired.append,
        fps=25,
        first_token_timeout_s=5,
        unknown_text="I don't know that one.",
        grounding=grounding,  # type: ignore[arg-type]
    )
    turn = TurnHandle("t-1", "answer", question)
    await runner.run(turn)
    return turn, [s.text for s in aired if s.text]


def ends_a_sentence(text: str) -> bool:
    return text.rstrip().endswith((".", "!", "?"))


async def test_free_mode_replaces_a_sentence_whole_and_says_nothing_twice(voice: PiperTTS) -> None:
    reply = (
        "The smallest size you can get is 30 and the largest is 50. The Stride Runner costs 49 dollars. "
        "The Stride Runner costs 49 dollars. Also the largest size"  # repeated, then cut off by max_tokens
    )
    turn, captions = await answer(voice, "free", "What is the smallest shoe size?", reply)
    assert captions == ["Sizes go from 36 to 47.", "The Stride Runner costs 49 dollars."], captions
    assert all(ends_a_sentence(c) for c in captions)
    why = " ".join(turn.degraded)
    assert "whole" in why and "already said" in why and "unfinished" in why


async def test_guided_mode_never_airs_a_sentence_the_check_rejects(voice: PiperTTS) -> None:
    reply = "Yes, returns are free within 30 days. No, you cannot send them back after 40 days."
    turn, captions = await answer(voice, "guided", "Can I send the shoes back if they don't fit?", reply)
    assert captions == ["Yes, returns are free within 30 days."], captions
    assert any("rejected" in d and "40" in d for d in turn.degraded), turn.degraded
    assert "40" not in " ".join(turn.spoken)


async def test_guided_mode_says_the_strict_answer_when_its_first_sentence_is_rejected(voice: PiperTTS) -> None:
    turn, captions = await answer(voice, "guided", "What is the return policy?", "Returns cost 10 euros.")
    assert captions[1:] == ["Returns are free within 30 days."], captions  # the opener, then the line, once
    assert not any("euros" in c for c in captions + turn.spoken)


async def test_strict_mode_says_the_lines_and_nothing_the_model_wrote(voice: PiperTTS) -> None:
    _, captions = await answer(voice, "strict", "Can I get my money back?", "Shoes are free today!")
    assert captions[-1] == "Returns are free within 30 days." and len(captions) == 2, captions
    assert "free today" not in " ".join(captions)
