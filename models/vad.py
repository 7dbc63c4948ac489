"""Silero VAD v6 (ONNX, from inside the faster-whisper wheel): is this 32 ms of audio speech?

The model is a small recurrent net: each 512-sample window at 16 kHz is fed together with the
64 samples before it (its "context") and the LSTM state the previous window left behind. The
ONNX session is stateless, so one session per process serves every viewer, and each stream keeps
its own context and state in its `SileroVAD` object. A window costs well under a millisecond on
one core, which is why the session is single-threaded: the calls come from the event loop and
many small calls gain nothing from a thread pool but contention.

`Endpointer` turns those probabilities into "speech started here" and "speech ended there", the
decisions barge-in and end-of-turn need, separately from any speech recognizer.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 512
"""The v6 model takes exactly 512 new samples (32 ms) per call at 16 kHz."""
CONTEXT_SAMPLES = 64
"""Samples of the previous window prepended to each call, as the model was trained."""
STATE_SHAPE = (1, 1, 128)
"""The LSTM's h and c, each passed in and returned by every call."""


def default_model_path() -> Path:
    from faster_whisper.utils import get_assets_path

    return Path(get_assets_path()) / "silero_vad_v6.onnx"


@functools.cache
def _session(path: Path) -> Any:
    """The one ONNX Runtime session for `path` in this process (sessions are safe to share across threads)."""
    import onnxruntime

    if not path.is_file():
        raise FileNotFoundError(f"Silero VAD model {path} not found (it ships inside the faster-whisper wheel)")
    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.enable_cpu_mem_arena = False  # tiny tensors: the arena only holds memory per thread
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=opts)


class SileroVAD:
    """Speech probability for one audio stream, 32 ms at a time; cheap to create (one per viewer)."""

    def __init__(self, model_path: Path | None = None) -> None:
        self._session = _session(Path(model_path) if model_path is not None else default_model_path())
        self._input = np.zeros((1, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)

    def reset(self) -> None:
        """Forget the stream so far (its context and recurrent state), e.g. when the source changes."""
        self._input.fill(0.0)
        self._h.fill(0.0)
        self._c.fill(0.0)

    def speech_prob(self, window: np.ndarray) -> float:
        """Probability (0..1) that `window` — 512 float samples in [-1, 1] at 16 kHz, mono — is speech.

        Windows must be consecutive: the result depends on the ones before it.
        """
        if window.shape != (WINDOW_SAMPLES,):
            raise ValueError(f"a VAD window is {WINDOW_SAMPLES} mono samples at 16 kHz, got shape {window.shape}")
        self._input[0, :CONTEXT_SAMPLES] = self._input[0, -CONTEXT_SAMPLES:]
        self._input[0, CONTEXT_SAMPLES:] = window
        prob, self._h, self._c = self._session.run(None, {"input": self._input, "h": self._h, "c": self._c})
        return float(prob[0])


def ms_to_samples(ms: float) -> int:
    return round(ms * SAMPLE_RATE / 1000)


class Endpointer:
    """Where a stream's speech starts and ends, from one VAD probability per 32 ms window.

    Positions are sample indices on the caller's clock, so the decisions are the same however
    fast the audio arrives. Start: `min_speech_ms` of voiced windows, with gaps of up to
    `onset_gap_ms` between them (stops between syllables), reported at the first voiced window.
    End: `end_silence_ms` of silence, reported where the silence began. Between the two thresholds
    a window keeps the current state (hysteresis, as in Silero's own segmentation), so a voice
    trailing off is not cut mid-word and faint noise does not keep a turn open.
    """

    def __init__(
        self, *, threshold: float, silence_threshold: float, min_speech_ms: int, onset_gap_ms: int, end_silence_ms: int
    ) -> None:
        if not 0.0 < silence_threshold <= threshold < 1.0:
            raise ValueError("need 0 < silence_threshold <= threshold < 1")
        self.threshold, self.silence_threshold = threshold, silence_threshold
        self._min_speech, self._onset_gap = ms_to_samples(min_speech_ms), ms_to_samples(onset_gap_ms)
        self._end_silence = ms_to_samples(end_silence_ms)
        self.speaking = False
        self.candidate: int | None = None
        """While not speaking: where the voice that may become speech began (None: no voice yet)."""
        self._voiced = self._gap = self._silence = self._voice_end = 0

    @property
    def in_silence(self) -> bool:
        """Speaking, but the latest windows were silent (the end may be near)."""
        return self._silence > 0

    @property
    def silence_began(self) -> int | None:
        """Speaking and in silence: the sample where that silence began (the voice end, if it lasts)."""
        return self._voice_end if self.speaking and self._silence else None

    def reset(self) -> None:
        """Back to waiting for speech, forgetting any voice so far."""
        self.speaking, self.candidate = False, None
        self._silence = 0

    def update(self, start: int, prob: float) -> tuple[str, int] | None:
        """Feed the window that begins at sample `start`: ("start", onset) or ("end", voice end) on a change."""
        if self.speaking:
            if prob >= self.threshold:
                self._silence = 0
            elif prob < self.silence_threshold or self._silence:
                if not self._silence:
                    self._voice_end = start
                self._silence += WINDOW_SAMPLES
                if self._silence >= self._end_silence:
                    self.reset()
                    return "end", self._voice_end
        elif prob >= self.threshold:
            if self.candidate is None:
                self.candidate, self._voiced = start, 0
            self._voiced += WINDOW_SAMPLES
            self._gap = 0
            if self._voiced >= self._min_speech:
                onset, self.speaking, self.candidate = self.candidate, True, None
                return "start", onset
        elif self.candidate is not None:
            self._gap += WINDOW_SAMPLES
            if self._gap > self._onset_gap:
                self.candidate = None
        return None
