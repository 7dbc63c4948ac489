"""The Program timeline: audio is the master clock, video is stamped from it, gaps are filled."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from stream.clock import AUDIO_FRAME_SAMPLES, AUDIO_RATE, OfflineClock, RealClock, VideoFormat
from stream.frames import EventKind, ProgramEvent, SpeechSegment
from stream.program import Program
from tests.conftest import eventually

FMT = VideoFormat(64, 64, 25)


class Source:
    """Frames that carry their index and cue in pixel values; optionally slow or failing."""

    def __init__(self, delay: float = 0.0, fail_from: int | None = None) -> None:
        self.delay = delay
        self.fail_from = fail_from
        self.cues: dict[int, np.ndarray] = {}

    async def render(self, first: int, cues: np.ndarray) -> np.ndarray:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_from is not None and first >= self.fail_from:
            raise RuntimeError("model crashed")
        out = np.zeros((len(cues), 64, 64, 3), np.uint8)
        for i, cue in enumerate(cues):
            self.cues[first + i] = cue
            out[i, 0, 0, 0] = (first + i) % 256
            out[i, 0, 0, 1] = round(cue[0] * 200)
        return out

    def still(self) -> np.ndarray:
        return np.full((64, 64, 3), 7, np.uint8)


class Sink:
    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.audio: list[np.ndarray] = []
        self.images: list[np.ndarray] = []
        self.times: list[float] = []

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        self.log.append(("a", sample))
        self.audio.append(pcm)

    def on_video(self, image: np.ndarray, frame: int) -> None:
        self.log.append(("v", frame))
        self.images.append(image)
        self.times.append(time.monotonic())

    async def ready(self) -> None:
        return None


def tone_segment(seconds: float, turn: str = "t1", jaw: float = 0.8) -> SpeechSegment:
    n = round(seconds * AUDIO_RATE)
    pcm = (np.sin(np.arange(n) / 10) * 10_000).astype(np.int16)
    cues = np.zeros((round(seconds * 25), 3), np.float32)
    cues[:, 0] = jaw
    return SpeechSegment(pcm, cues, 25.0, turn, text=f"{turn} text")


async def test_video_frames_are_stamped_from_the_audio_position() -> None:
    sink = Sink()
    program = Program(FMT, Source(), sink, clock=OfflineClock())
    await program.run(until=1.0)
    assert [s for k, s in sink.log if k == "a"] == list(range(0, AUDIO_RATE, AUDIO_FRAME_SAMPLES))
    assert [n for k, n in sink.log if k == "v"] == list(range(25))
    for i, (kind, value) in enumerate(sink.log):  # frame n goes out with the audio frame starting at n * 1920
        if kind == "v":
            audio_before = [s for k, s in sink.log[:i] if k == "a"]
            assert audio_before[-1] == FMT.frame_start(value)
    assert [int(im[0, 0, 0]) for im in sink.images] == list(range(25))


async def test_speech_fills_the_timeline_and_idle_fills_the_gaps() -> None:
    sink, source = Sink(), Source()
    program = Program(FMT, source, sink, clock=OfflineClock())
    events: list[ProgramEvent] = []
    program.add_listener(events.append)
    start = program.enqueue(tone_segment(0.4, "t1"))
    second = program.enqueue(tone_segment(0.2, "t2", jaw=0.3))
    assert start == FMT.frame_start(program._render_next) / AUDIO_RATE
    assert second == pytest.approx(start + 0.4)
    await program.run(until=1.2)
    audio = np.concatenate(sink.audio)
    s0 = round(start * AUDIO_RATE)
    assert not audio[:s0].any(), "silence before the speech"
    assert np.array_equal(audio[s0 : s0 + 19200], tone_segment(0.4).pcm), "speech played sample-exact"
    assert not audio[s0 + 28800 :].any(), "silence after it"
    # frames during speech got the speech cues, the others the idle (zero) cue
    f0 = FMT.frame_at(s0)
    assert all(source.cues[n][0] == pytest.approx(0.8) for n in range(f0, f0 + 10))
    assert all(source.cues[n][0] == pytest.approx(0.3) for n in range(f0 + 10, f0 + 15))
    assert all(not source.cues[n].any() for n in range(f0 + 15, 30))
    kinds = [(e.kind, e.turn_id) for e in events]
    assert kinds == [
        (EventKind.SEGMENT_STARTED, "t1"),
        (EventKind.SEGMENT_FINISHED, "t1"),
        (EventKind.SEGMENT_STARTED, "t2"),
        (EventKind.SEGMENT_FINISHED, "t2"),
    ]
    assert events[1].played == pytest.approx(0.4) and events[0].text == "t1 text"
    assert not program.speaking


async def test_speech_on_an_idle_program_starts_at_the_next_frame_and_moves_its_lips() -> None:
    """The idle frames rendered ahead are drawn again with the mouth, instead of the answer waiting
    behind them (3 frames: 120 ms at 25 fps)."""
    sink, source = Sink(), Source()
    program = Program(FMT, source, sink, clock=RealClock())
    events: list[ProgramEvent] = []
    program.add_listener(events.append)
    task = asyncio.create_task(program.run())
    try:
        await eventually(lambda: program._render_next >= program._video_next + program.lookahead, 5, "frames ahead")
        start = program.enqueue(tone_segment(0.4))
        assert start - program.position < 1 / FMT.fps, f"speech at {start:.3f} s, the clock at {program.position:.3f}"
        await eventually(lambda: any(e.kind == EventKind.SEGMENT_FINISHED for e in events), 5, "the speech to air")
    finally:
        task.cancel()
    f0 = FMT.frame_at(round(start * AUDIO_RATE))
    aired = {int(im[0, 0, 0]): int(im[0, 0, 1]) for im in sink.images}
    assert [aired[n] for n in range(f0 + 1, f0 + 9)] == [160] * 8, "the frames of the speech show its mouth"


async def test_a_slow_renderer_never_stops_the_picture() -> None:
    """Rendering takes 3 frame times per 2 frames: frames repeat, but 25 go out every second."""
    sink, source = Sink(), Source(delay=0.12)
    program = Program(FMT, source, sink, clock=RealClock())
    await asyncio.wait_for(program.run(until=2.0), 10)
    intervals = np.diff(sink.times)
    assert len(sink.images) == 50
    assert intervals.max() < 0.1, "the picture never pauses for the renderer"
    assert program.stats["late_frames"] > 0


async def test_a_failing_renderer_repeats_the_last_frame_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    sink, source = Sink(), Source(fail_from=10)
    program = Program(FMT, source, sink, clock=RealClock(), name="broken")
    await asyncio.wait_for(program.run(until=1.0), 10)
    assert len(sink.images) == 25
    assert program.stats["render_errors"] > 0
    last_good = max(int(im[0, 0, 0]) for im in sink.images)
    assert all(int(im[0, 0, 0]) == last_good for im in sink.images[12:]), "the last good frame is repeated"
    assert "rendering frames" in caplog.text and "model crashed" in caplog.text


class GatedSource(Source):
    """Holds its first render until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.gate = asyncio.Event()

    async def render(self, first: int, cues: np.ndarray) -> np.ndarray:
        self.asked.set()
        await self.gate.wait()
        return await super().render(first, cues)


async def test_a_program_cancelled_as_its_first_frame_lands_stops() -> None:
    """Closing a channel cancels its program once; that must stop it however the cancel meets the
    first frame (Python 3.11's asyncio.wait_for drops a cancel that races its inner await, which once
    left `avatarcast serve` encoding forever after Ctrl+C). Each trial cancels one loop step later."""
    for steps in range(12):
        source = GatedSource()
        task = asyncio.create_task(Program(FMT, source, Sink(), clock=RealClock()).run())
        await source.asked.wait()
        source.gate.set()
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert task in done and task.cancelled(), f"cancelled {steps} loop steps after the first frame: still running"


async def test_cues_of_the_wrong_width_are_refused() -> None:
    program = Program(FMT, Source(), Sink(), clock=OfflineClock())
    bad = SpeechSegment(np.zeros(960, np.int16), np.zeros((1, 5), np.float32), 25.0, "t")
    with pytest.raises(ValueError, match="5 columns"):
        program.enqueue(bad)


async def test_cut_stops_a_turn_at_a_frame_boundary_and_the_face_goes_idle() -> None:
    sink, source = Sink(), Source()
    program = Program(FMT, source, sink, clock=OfflineClock())
    events: list[ProgramEvent] = []
    program.add_listener(events.append)
    start = program.enqueue(tone_segment(1.0, "long"))
    program.enqueue(tone_segment(1.0, "long"))  # a second sentence of the same turn, not started yet
    later = tone_segment(0.2, "next", jaw=0.3)
    program.enqueue(later)
    await program.run(until=start + 0.5)
    cut_at = program.position
    played = program.cut("long")
    assert played == pytest.approx(cut_at - start)
    await program.run(until=cut_at + 0.6)
    audio = np.concatenate(sink.audio)
    s0, s_cut = round(start * AUDIO_RATE), round(cut_at * AUDIO_RATE)
    assert s_cut % AUDIO_FRAME_SAMPLES == 0, "cut on a 20 ms frame boundary"
    assert np.array_equal(audio[s0:s_cut], tone_segment(1.0).pcm[: s_cut - s0])
    # the next turn moves up into the gap: it starts right after the cut, not after 2 s
    finished = [e for e in events if e.kind is EventKind.SEGMENT_FINISHED]
    # the sentence that never aired is reported too (0 s played): every segment is accounted for
    assert [(e.turn_id, e.interrupted, e.played > 0) for e in finished] == [
        ("long", True, False),
        ("long", True, True),
        ("next", False, True),
    ]
    assert finished[1].played == pytest.approx(played) and finished[1].duration == pytest.approx(1.0)
    started_next = next(e for e in events if e.kind is EventKind.SEGMENT_STARTED and e.turn_id == "next")
    assert started_next.at - cut_at < 0.2
    # frames after the cut were rendered again: the speaking cue (0.8) is gone from the next frame on
    first_after = FMT.frame_at(s_cut) + 1
    assert int(sink.images[first_after][0, 0, 1]) != round(0.8 * 200)
