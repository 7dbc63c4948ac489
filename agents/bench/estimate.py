"""The end-to-end voice-to-answer estimate, added up from the measured module times.

The studio's answer path (agents/conversation/listening.py): the final transcript starts once a
short tail of silence is in (models/listen.py tail_ms), the answer is made from it at once (LLM
first token, the first clause's tokens, its speech), held until the end of speech is confirmed
(conversation.end_of_speech_ms of silence), and then airs: its first frames are drawn and encoded
at the next frame. So the estimate is max(end_of_speech, tail + ASR + LLM + first clause + TTS)
+ half a frame + the first frames' render + one encode. Network and the viewer's jitter buffer are
not in it (bench/latency.py measures the whole at a real WebRTC viewer).
"""

from __future__ import annotations

import inspect
from typing import Any

from agents.bench.results import Stage
from agents.bench.speech import FIRST_CLAUSE_TOKENS
from models.listen import ListenOptions
from stream.program import Program

HOW = (
    "max(end of speech wait, tail + ASR + LLM first token + first clause + TTS) + half a frame + first frames' "
    "render + one encode; on the fastest measured device per module; network and the viewer's jitter buffer "
    "excluded (bench/latency.py measures them end to end)"
)


def first_frames(fps_by_batch: dict[int, float]) -> tuple[int, float]:
    """(frames, ms) of the first speaking frames: the Program renders `lookahead` frames ahead, as one call."""
    lookahead = int(inspect.signature(Program).parameters["lookahead"].default)
    batch = min(fps_by_batch, key=lambda b: abs(b - lookahead))
    return lookahead, lookahead / fps_by_batch[batch] * 1000


def voice_to_answer(
    *,
    end_of_speech_ms: float,
    fps: int,
    asr_ms: float | None,
    ttft_ms: float | None,
    tokens_per_s: float | None,
    tts_first_ms: float | None,
    fps_by_batch: dict[int, float],
    encode_ms: float | None,
) -> tuple[float | None, list[Stage]]:
    """-> (the estimate in ms, or None when a stage that must be there is missing; the stages)."""
    tail = float(ListenOptions().tail_ms)
    clause = FIRST_CLAUSE_TOKENS / tokens_per_s * 1000 if tokens_per_s else None
    llm_note = "" if ttft_ms is not None else "no LLM measured: answers from the cache and canned lines skip it"
    making = [
        Stage("silence tail before the final transcript starts", tail),
        Stage("ASR: final transcript of the question", asr_ms),
        Stage("LLM: time to first token", ttft_ms, llm_note),
        Stage(f"LLM: first clause (~{FIRST_CLAUSE_TOKENS} tokens)", clause, llm_note),
        Stage("TTS: first clause synthesised", tts_first_ms),
    ]
    frames, render_ms = first_frames(fps_by_batch) if fps_by_batch else (0, None)
    airing = [
        Stage("waiting for the frame boundary (half a frame)", 500 / fps),
        Stage(f"lip-sync: first {frames} frames drawn", render_ms),
        Stage("H.264: first frame encoded", encode_ms),
    ]
    made = sum(s.ms for s in making if s.ms is not None)
    wait = Stage("end of speech confirmed (conversation.end_of_speech_ms)", end_of_speech_ms,
                 "overlaps the steps above: the answer is made while the silence is waited out")  # fmt: skip
    stages = [*making, wait, *airing]
    needed = [asr_ms, tts_first_ms, render_ms, encode_ms]
    if any(v is None for v in needed):
        return None, stages
    total = max(end_of_speech_ms, made) + sum(s.ms for s in airing if s.ms is not None)
    return total, stages


def describe(stages: list[Stage], total: float | None) -> list[dict[str, Any]]:
    """The stages as table rows for the reports."""
    rows = [{"stage": s.name, "ms": s.ms, "note": s.note} for s in stages]
    rows.append({"stage": "total (estimate)", "ms": total, "note": HOW})
    return rows
