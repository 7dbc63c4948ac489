"""Text -> speech segments for the Program: TTS per sentence, 48 kHz audio, a viseme track.

Each sentence becomes one or more segments as soon as the TTS has it, so the first words are
on air while later sentences are still being synthesised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from agents.sentences import split_sentences
from models.lipsync.visemes import viseme_track
from models.protocols import TTS
from stream.clock import AUDIO_RATE
from stream.frames import SpeechSegment


def to_program_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """int16 mono at `rate` -> int16 mono at 48 kHz (polyphase resampling)."""
    if rate == AUDIO_RATE:
        return audio.astype(np.int16, copy=False)
    g = gcd(AUDIO_RATE, rate)
    y = resample_poly(audio.astype(np.float32), AUDIO_RATE // g, rate // g)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


async def speech_segments(tts: TTS, text: str, turn_id: str, fps: int) -> AsyncIterator[SpeechSegment]:
    """Segments for `text`, sentence by sentence; each carries its sentence for captions."""
    for sentence in split_sentences(text):
        caption = sentence
        async for chunk in tts.synthesize(sentence):
            pcm = to_program_rate(chunk.audio, chunk.sample_rate)
            cues = viseme_track(chunk.phonemes, fps, len(pcm) / AUDIO_RATE, chunk.audio, chunk.sample_rate)
            yield SpeechSegment(pcm, cues, float(fps), turn_id, text=caption)
            caption = ""  # Piper may split a sentence further: caption it once
