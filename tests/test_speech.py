"""Text to the Program's speech segments: the voice's leading silence is cut, lips and words move with it."""

from __future__ import annotations

import numpy as np

from agents.conversation.speech import LEAD_KEPT_S, ONSET_LEVEL, speech_segments, without_leading_silence
from models.lipsync.visemes import PhonemeTiming
from models.protocols import SpeechChunk
from models.tts_piper import PiperTTS
from stream.clock import AUDIO_RATE

RATE = 22_050


def onset_s(audio: np.ndarray, rate: int) -> float:
    return int(np.flatnonzero(np.abs(audio.astype(np.int32)) >= ONSET_LEVEL)[0]) / rate


def test_the_silence_before_the_voice_is_cut_and_the_phonemes_move_with_it() -> None:
    t = np.arange(round(0.2 * RATE)) / RATE
    tone = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    tone[0] = 8000  # the voice starts on its first sample
    audio = np.concatenate([np.full(round(0.1 * RATE), 3, np.int16), tone])  # 100 ms of noise floor
    phonemes = [PhonemeTiming("^", 0.0, 0.1), PhonemeTiming("a", 0.1, 0.15), PhonemeTiming("$", 0.25, 0.05)]
    trimmed = without_leading_silence(SpeechChunk(audio, RATE, phonemes))
    assert abs(trimmed.duration - 0.21) < 1e-3
    assert abs(onset_s(trimmed.audio, RATE) - LEAD_KEPT_S) < 1e-3
    got = [(p.phoneme, round(p.start, 4), round(p.duration, 4)) for p in trimmed.phonemes]
    assert got == [("^", 0.0, 0.01), ("a", 0.01, 0.15), ("$", 0.16, 0.05)]


def test_speech_that_starts_at_once_or_never_is_left_as_it_is() -> None:
    silent = SpeechChunk(np.zeros(RATE // 10, np.int16), RATE, [PhonemeTiming("^", 0.0, 0.1)])
    assert without_leading_silence(silent) is silent
    loud = SpeechChunk(np.full(RATE // 10, 5000, np.int16), RATE, [PhonemeTiming("a", 0.0, 0.1)])
    assert without_leading_silence(loud) is loud


async def test_the_first_words_are_heard_a_breath_after_each_segment_starts() -> None:
    """Piper starts each sentence 20-250 ms (it varies run to run) before the voice; cut, 10 ms."""
    tts = PiperTTS.load()  # the embedded voice
    for text, first_word in [("Hi there, great question.", "Hi"), ("I am Ava.", "I"), ("What a lovely day!", "What")]:
        first, *_ = [segment async for segment in speech_segments(tts, text, "turn-1", 25)]
        assert onset_s(first.pcm, AUDIO_RATE) < LEAD_KEPT_S + 0.005, text
        assert first.words[0][1] == first_word and first.words[0][0] < 0.06, first.words
        assert abs(len(first.cues) - len(first.pcm) / AUDIO_RATE * 25) <= 1, "the lips last as long as the audio"
