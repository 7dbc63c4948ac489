"""Text -> speech segments for the Program: TTS per sentence, 48 kHz audio, a viseme track.

Each sentence becomes one or more segments as soon as the TTS has it, so the first words are
on air while later sentences are still being synthesised. The silence a voice puts before each
sentence (Piper: 20-250 ms) is cut to a breath first: the first answer is heard that much sooner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from agents.conversation.sentences import split_sentences
from models.lipsync.visemes import viseme_track
from models.protocols import TTS, SpeechChunk
from models.word_timing import word_starts
from stream.clock import AUDIO_RATE
from stream.frames import SpeechSegment
from stream.program import Program

ONSET_LEVEL = 64
"""|sample| (int16) taken as the voice starting: ~-54 dBFS, over a synthesiser's noise floor (< 20)
and under the softest onset (an aspirated h)."""
LEAD_KEPT_S = 0.01
"""Silence kept before the voice's onset, so its first sample does not click in."""


def to_program_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """int16 mono at `rate` -> int16 mono at 48 kHz (polyphase resampling)."""
    if rate == AUDIO_RATE:
        return audio.astype(np.int16, copy=False)
    g = gcd(AUDIO_RATE, rate)
    y = resample_poly(audio.astype(np.float32), AUDIO_RATE // g, rate // g)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


async def speech_segments(tts: TTS, text: str, turn_id: str, fps: int) -> AsyncIterator[SpeechSegment]:
    """Segments for `text`, sentence by sentence; each carries its sentence and word times for captions."""
    for sentence in split_sentences(text):
        caption = sentence
        async for spoken in tts.synthesize(sentence):
            chunk = without_leading_silence(spoken)
            pcm = to_program_rate(chunk.audio, chunk.sample_rate)
            cues = viseme_track(chunk.phonemes, fps, len(pcm) / AUDIO_RATE, chunk.audio, chunk.sample_rate)
            words = caption.split()
            timed = tuple(zip(word_starts(words, chunk.phonemes), words, strict=True))
            yield SpeechSegment(pcm, cues, float(fps), turn_id, text=caption, words=timed)
            caption = ""  # Piper may split a sentence further (rarely): caption it, and time its words, once


def without_leading_silence(chunk: SpeechChunk) -> SpeechChunk:
    """`chunk` starting `LEAD_KEPT_S` before its voice's onset; phoneme times move with the audio
    (those wholly inside the cut shrink to zero length, so the lips and words stay aligned)."""
    loud = np.flatnonzero(np.abs(chunk.audio.astype(np.int32)) >= ONSET_LEVEL)
    cut = int(loud[0]) - round(LEAD_KEPT_S * chunk.sample_rate) if len(loud) else 0
    if cut <= 0:
        return chunk
    shift = cut / chunk.sample_rate
    phonemes = []
    for p in chunk.phonemes:
        start, end = max(0.0, p.start - shift), max(0.0, p.end - shift)
        phonemes.append(replace(p, start=start, duration=end - start))
    return SpeechChunk(chunk.audio[cut:], chunk.sample_rate, phonemes)


def speech_deadline(program: Program) -> Callable[[], float | None]:
    """When `program` runs out of queued speech, on the loop clock: the deadline of the channel's next
    sentence at the shared TTS service. None while nothing is queued (wanted as soon as possible)."""
    return lambda: program.clock_time(program.scheduled_until) if program.speaking else None
