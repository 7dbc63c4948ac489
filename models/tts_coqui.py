"""Coqui TTS (the `coqui-tts` package): VITS, XTTS and the other Coqui voices, from a local folder.

For GPU hosts: Coqui's models are larger and slower than Piper's on a CPU, and on this project's
CPU machine the package cannot even import (its torchaudio is a CUDA build). Weights load from the
path in the config (a folder with config.json and the model .pth, as Coqui saves them): nothing is
downloaded at run time.

Coqui reports no phoneme alignment, so the lips are timed from the text: each sentence is
phonemised with espeak-ng (Piper's bundled phonemiser) and its phonemes are spread over the voiced
stretch of the audio, vowels longer than consonants, punctuation as a pause. The viseme track also
follows the audio's loudness (visemes.viseme_track), which carries the real timing of syllables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from models.lipsync.visemes import PhonemeTiming, Viseme, classify
from models.protocols import SpeechChunk, TTSError
from models.tts_piper import Emit, relay_chunks

log = logging.getLogger(__name__)

VOWEL_WEIGHT = 1.8
"""A vowel lasts this many consonants (English averages ~1.5-2x)."""
PAUSE_WEIGHT = 2.5
"""Punctuation inside a sentence (a comma's breath) lasts this many consonants."""
VOICED_LEVEL = 0.02
"""Audio below this share of its peak, at either end, is leading or trailing silence."""
_PAUSES = ",;:—"
_VOWELS = {Viseme.EE, Viseme.AA, Viseme.EH, Viseme.OH, Viseme.OO}


def coqui_missing() -> str | None:
    """Why Coqui cannot run here (None: it can): the tests skip with this reason."""
    try:
        import TTS.api  # noqa: F401
    except Exception as exc:  # an ImportError, or an OSError from a CUDA-only torchaudio
        return f"coqui-tts does not import here ({type(exc).__name__}: {exc})"
    return None


def spread_phonemes(phonemes: list[str], audio: np.ndarray, sample_rate: int) -> list[PhonemeTiming]:
    """Time `phonemes` over the voiced part of `audio`: each gets a share by its kind, in order.

    Spaces (word gaps) and sentence ends take no time; a comma is a short pause, left as a gap."""
    level = np.abs(audio.astype(np.float32))
    voiced = np.flatnonzero(level >= VOICED_LEVEL * level.max()) if len(level) and level.max() > 0 else []
    if not len(voiced) or not phonemes:
        return []
    start, end = voiced[0] / sample_rate, (voiced[-1] + 1) / sample_rate
    classes = classify(phonemes)
    weights = np.array([_weight(p, c) for p, c in zip(phonemes, classes, strict=True)])
    if weights.sum() == 0:
        return []
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    return [  # a pause stays a gap, where the mouth relaxes
        PhonemeTiming(p, float(edges[i]), float(edges[i + 1] - edges[i]))
        for i, p in enumerate(phonemes)
        if weights[i] > 0 and p not in _PAUSES
    ]


def _weight(phoneme: str, viseme: Viseme) -> float:
    if phoneme in _PAUSES:
        return PAUSE_WEIGHT
    if phoneme.isspace() or phoneme in ".!?ˈˌ" or unicodedata.combining(phoneme):
        return 0.0  # word gaps, sentence ends, stress marks and diacritics take no time of their own
    return VOWEL_WEIGHT if viseme in _VOWELS else 1.0


class CoquiTTS:
    """One loaded Coqui voice, shared by every channel that speaks with it (a TTSService voice)."""

    def __init__(self, tts: Any, model_path: Path, *, speaker: str | None, language: str | None) -> None:
        self._tts = tts
        self.model_path = model_path
        self.speaker = speaker
        self.language = language
        self._espeak_voice = _espeak_voice(language)
        from piper.phonemize_espeak import EspeakPhonemizer

        self._phonemizer = EspeakPhonemizer()  # espeak-ng set up once, not per sentence
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="coqui")

    @classmethod
    def load(
        cls, model: Path, *, speaker: int | None = None, language: str | None = None, device: str = "auto"
    ) -> CoquiTTS:
        """Load the model in folder `model` (config.json + a .pth), blocking: run it in an executor."""
        if why := coqui_missing():
            raise TTSError(f"voice backend coqui: {why}; fix: pip install coqui-tts on a GPU host", recoverable=False)
        from TTS.api import TTS

        folder = Path(model)
        config = folder / "config.json"
        weights = sorted(folder.glob("*.pth"))
        if not config.is_file() or not weights:
            raise TTSError(f"Coqui voice {folder}: needs config.json and a model .pth in it", recoverable=False)
        weight = next((w for w in weights if w.name in ("model.pth", "best_model.pth")), weights[0])
        try:
            import torch

            target = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
            tts = TTS(model_path=str(weight if len(weights) == 1 else folder), config_path=str(config)).to(target)
        except Exception as exc:
            raise TTSError(f"cannot load Coqui voice {folder}: {exc}", recoverable=False) from exc
        names = list(getattr(tts, "speakers", None) or [])
        if speaker is not None and not 0 <= speaker < len(names):
            raise TTSError(
                f"Coqui voice {folder.name} has {len(names)} speaker(s); {speaker} is out of range", recoverable=False
            )
        chosen = names[speaker] if speaker is not None else (names[0] if names else None)
        if getattr(tts, "is_multi_lingual", False) and language is None:
            raise TTSError(
                f"Coqui voice {folder.name} is multilingual; fix: set voice.language, e.g. en", recoverable=False
            )
        log.info("loaded Coqui voice %s on %s (%d Hz)", folder.name, target, tts.synthesizer.output_sample_rate)
        return cls(tts, folder, speaker=chosen, language=language)

    @property
    def sample_rate(self) -> int:
        return int(self._tts.synthesizer.output_sample_rate)

    def synthesize_blocking(self, text: str, emit: Emit, stop: threading.Event) -> None:
        """Sentence by sentence (Coqui's own splitter), each emitted as soon as it is synthesised."""
        for sentence in self._tts.synthesizer.split_into_sentences(text):
            if stop.is_set():
                return
            if not sentence.strip():
                continue
            wav = self._tts.tts(text=sentence, speaker=self.speaker, language=self.language, split_sentences=False)
            audio = (np.clip(np.asarray(wav, np.float32), -1, 1) * 32767).astype(np.int16)
            phonemes = [p for group in self._phonemizer.phonemize(self._espeak_voice, sentence) for p in group]
            emit(SpeechChunk(audio, self.sample_rate, spread_phonemes(phonemes, audio, self.sample_rate)))

    async def synthesize(self, text: str) -> AsyncIterator[SpeechChunk]:
        loop = asyncio.get_running_loop()
        async for chunk in relay_chunks(
            text, lambda emit, stop: loop.run_in_executor(self._pool, self.synthesize_blocking, text, emit, stop)
        ):
            yield chunk


def _espeak_voice(language: str | None) -> str:
    """espeak-ng's voice for a Coqui language code (en -> en-us; others as given)."""
    return {None: "en-us", "en": "en-us", "pt": "pt-br"}.get(language, language or "en-us")
