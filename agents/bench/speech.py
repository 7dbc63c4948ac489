"""The talking half's speed on this machine: speech recognition, the LLM and the voice.

Each runs the product's own code path, loaded from the config as the studio loads it: WhisperASR
(models/asr_whisper.py) transcribing a question spoken by the channel's own voice, the LLM from
agents/worker/studio.py load_llm (vLLM in-process, or the OpenAI-compatible client) streaming
real chat requests, and the voice (models/tts_service.py load_voice) synthesising the sentences
an answer is made of. Every number is the median over a few repeats after one warm-up.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from agents.config import StudioConfig
from models.protocols import LLM, GenerationParams

QUESTION = "Hello Nova, which of your shoes would you recommend for running in the rain this weekend?"
"""What the ASR bench hears (spoken by the channel's voice: no other audio is needed)."""
ANSWER_SENTENCES = (
    "Oh, great question!",
    "For rainy runs I would pick the Stride Runner, it grips well on wet roads.",
    "It also dries quickly, so your feet stay comfortable for the whole run.",
)
"""What the TTS bench says: a short first clause, then sentences of a typical answer."""
LLM_MESSAGES = [
    {"role": "system", "content": "You are Nova, the cheerful host of a shoe shop's live stream."},
    {"role": "user", "content": "Which shoes would you recommend for running in the rain?"},
]
FIRST_CLAUSE_TOKENS = 8
"""Tokens before the first clause can go to the voice (the sentence splitter's first cut, typically)."""

Say = Callable[[str], None]


@dataclass(frozen=True)
class Speech:
    """A spoken question: int16 audio at the voice's rate, and what it says."""

    pcm: np.ndarray
    rate: int
    text: str

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate

    def at_16k(self) -> np.ndarray:
        """float32 mono at 16 kHz, as the listener hands audio to Whisper."""
        audio = self.pcm.astype(np.float32) / 32768.0
        return resample_poly(audio, 16_000, self.rate).astype(np.float32)


def load_voice_of(cfg: StudioConfig) -> Any:
    """The first channel's voice, loaded as the studio loads it (blocking)."""
    from models.tts_service import load_voice

    voice = cfg.channels[0].voice if cfg.channels else None
    if voice is None:
        return load_voice("piper", None, speaker=None, length_scale=None, language=None)
    model = None if voice.model == "builtin:joe" else Path(voice.model)
    return load_voice(
        voice.backend, model, speaker=voice.speaker, length_scale=voice.length_scale, language=voice.language
    )


async def _synthesise(voice: Any, text: str) -> tuple[np.ndarray, int, float, float]:
    """-> (audio, rate, seconds to the first chunk, seconds in all) through the voice's async path."""
    chunks, rate, first = [], 0, None
    t0 = time.perf_counter()
    async for chunk in voice.synthesize(text):
        first = first if first is not None else time.perf_counter() - t0
        chunks.append(chunk.audio)
        rate = chunk.sample_rate
    total = time.perf_counter() - t0
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)), rate, first or total, total


async def tts_speed(voice: Any, repeats: int, say: Say) -> dict[str, Any]:
    """Real-time factor (synthesis seconds per second of speech) and the first clause's time."""
    await _synthesise(voice, ANSWER_SENTENCES[0])  # warm-up: the first call loads the session
    factors, first_clause = [], []
    for r in range(repeats):
        synth = audio_s = 0.0
        for i, sentence in enumerate(ANSWER_SENTENCES):
            audio, rate, first, total = await _synthesise(voice, sentence)
            synth += total
            audio_s += len(audio) / max(rate, 1)
            if i == 0:
                first_clause.append(first)
        factors.append(synth / audio_s)
        say(f"      TTS repeat {r + 1}/{repeats}: real-time factor {factors[-1]:.3f}")
    return {
        "rtf": statistics.median(factors),
        "first_clause_ms": statistics.median(first_clause) * 1000,
        "speech_s": audio_s,
    }


async def question_audio(voice: Any) -> Speech:
    audio, rate, _, _ = await _synthesise(voice, QUESTION)
    return Speech(audio.astype(np.int16), rate, QUESTION)


def asr_speed(cfg: StudioConfig, device: str, speech: Speech, repeats: int, say: Say) -> dict[str, Any]:
    """Seconds of audio transcribed per second, one utterance at a time (what a viewer waits for)."""
    from models.asr_whisper import WhisperASR

    asr = WhisperASR.load(cfg.asr.model, device=device, language=cfg.asr.language)
    try:
        audio = speech.at_16k()
        text = asr.transcribe(audio).result()  # warm-up
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            text = asr.transcribe(audio).result()
            times.append(time.perf_counter() - t0)
            say(f"      ASR repeat {r + 1}/{repeats}: {times[-1] * 1000:.0f} ms for {speech.seconds:.1f} s of speech")
        per_utterance = statistics.median(times)
        return {
            "audio_s_per_s": speech.seconds / per_utterance,
            "utterance_ms": per_utterance * 1000,
            "utterance_s": speech.seconds,
            "model": cfg.asr.model,
            "device": asr.device,
            "heard": text,
        }
    finally:
        asr.close()


async def _one_request(llm: LLM, params: GenerationParams, tag: str) -> tuple[float, int, float]:
    """-> (seconds to the first delta, deltas, seconds in all) of one streamed reply."""
    t0 = time.perf_counter()
    first, deltas = None, 0
    async for _ in llm.generate(LLM_MESSAGES, params, f"bench-{tag}-{uuid.uuid4().hex[:8]}"):
        first = first if first is not None else time.perf_counter() - t0
        deltas += 1
    total = time.perf_counter() - t0
    return first if first is not None else total, deltas, total


async def llm_speed(llm: LLM, concurrency: int, max_tokens: int, repeats: int, say: Say) -> dict[str, Any]:
    """Time to first token and tokens/s for one request at a time, and for `concurrency` at once.

    Tokens are counted as the streamed deltas (vLLM sends one per decoded token, more when a token
    ends mid-character); tokens/s at 1 is one reply's decode rate (after its first token), at N the
    engine's total over the wall time of N replies started together."""
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    await _one_request(llm, params, "warm")
    single = []
    for r in range(repeats):
        single.append(await _one_request(llm, params, f"one-{r}"))
        say(f"      LLM request {r + 1}/{repeats}: first token {single[-1][0] * 1000:.0f} ms, {single[-1][1]} tokens")
    decode = [(n - 1) / (total - first) for first, n, total in single if n > 1 and total > first]
    t0 = time.perf_counter()
    together = await asyncio.gather(*(_one_request(llm, params, f"n-{i}") for i in range(concurrency)))
    wall = time.perf_counter() - t0
    say(f"      LLM {concurrency} at once: {sum(n for _, n, _ in together)} tokens in {wall:.1f} s")
    return {
        "ttft_ms": statistics.median(f for f, _, _ in single) * 1000,
        "tokens_per_s_1": statistics.median(decode) if decode else 0.0,
        "ttft_ms_n": statistics.median(f for f, _, _ in together) * 1000,
        "tokens_per_s_n": sum(n for _, n, _ in together) / wall,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "tokens_per_reply": statistics.median(n for _, n, _ in itertools.chain(single, together)),
    }
